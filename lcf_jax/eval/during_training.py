"""Evaluation during training: SQuAD-style F1/EM of the receiver answering through LCF-X (different contexts),
dev multiple-choice accuracy through LCF/C2C beside the receiver alone's (shared context)."""
from __future__ import annotations

import time
from typing import Optional

from lcf_jax.adapters import ADAPTER_KINDS
from lcf_jax.comm import lcfx_channel
from lcf_jax.comm.agents import Agent
from lcf_jax.eval import metrics


def make_train_evaluator(cfg, setup, frozen, qa, tokenizers, batch_size: int = 8):
    """The run's `evaluate(adapter_params, step) -> dict`, or None when it has none: shared-context kinds get
    `make_mc_evaluator` when data.mc_eval_examples > 0; LCF-X runs on QA data get F1/EM on cfg.data.eval_examples
    ({"f1", "em", "n", "seconds"})."""
    if ADAPTER_KINDS[setup.kind].shared_context:
        return make_mc_evaluator(cfg, setup, frozen, tokenizers) if cfg.data.mc_eval_examples > 0 else None
    if qa is None:
        return None
    import jax
    import jax.numpy as jnp
    sharer = Agent(cfg.model.sharer, setup.sharer, jax.tree.map(jnp.asarray, frozen[0]), tokenizers[0])
    receiver = Agent(cfg.model.receiver, setup.receiver, jax.tree.map(jnp.asarray, frozen[1]), tokenizers[1])
    toks = qa.features.tokenize_many(qa.eval_examples)
    answers = [ex["answers"] for ex in qa.eval_examples]

    def evaluate(adapter_params, step) -> dict:
        t = time.perf_counter()
        preds: list[str] = []
        for i in range(0, len(toks), batch_size):
            chunk = toks[i:i + batch_size]
            out, _ = lcfx_channel.answer(sharer, receiver, adapter_params, setup.adapter, [c.sharer for c in chunk],
                                         [c.prompt for c in chunk], max_new_tokens=cfg.train.max_new_tokens)
            preds.extend(out)
        scores = metrics.squad_scores(preds, answers)
        return {"f1": float(scores["f1"]), "em": float(scores["em"]), "n": int(scores["n"]),
                "seconds": time.perf_counter() - t}

    return evaluate


def mc_eval_examples(sets, n: int, data_dir=None) -> dict[str, list[dict]]:
    """set -> its dev rows (index % 2 == 0) to evaluate on: `n` questions in all, split as evenly as the sets
    allow (the first sets take the remainder), each set's taken evenly spaced through its file."""
    from lcf_jax.data import sources
    from lcf_jax.eval.ablations import evenly_spaced

    sets = list(sets)
    return {name: evenly_spaced(sources.read(name, "dev", data_dir=data_dir), n // len(sets) + (i < n % len(sets)))
            for i, name in enumerate(sets)}


def make_mc_evaluator(cfg, setup, frozen, tokenizers, examples: Optional[dict[str, list[dict]]] = None):
    """evaluate(adapter_params, step) -> {"mc_acc", "mc_acc_alone", "mc_acc_delta", "mc_acc/<set>", ..., "n",
    "seconds"}: accuracy (%) by length-normalised log-likelihood, as T1 (`tables.score_choices`), on the dev
    questions of `mc_eval_examples(cfg.data.mc_eval_sets, cfg.data.mc_eval_examples)` (or `examples`), pooled over
    the sets. The receiver alone is scored once, here; each call scores the receiver on its cache fused with the
    sharer's through the adapter (the training forward, evaluation mode). The loop keeps the best step by mc_acc."""
    if tokenizers is None:
        raise ValueError("data.mc_eval_examples > 0 scores text: it needs the models' tokenizers (data.task "
                         "'instruct' with bundled models)")
    import jax
    import jax.numpy as jnp

    from lcf_jax.eval import shared_mc
    from lcf_jax.eval.tables import score_choices

    if examples is None:
        examples = mc_eval_examples(cfg.data.mc_eval_sets, cfg.data.mc_eval_examples, cfg.data.data_dir or None)
    frozen = jax.tree.map(jnp.asarray, frozen)
    receiver = Agent(cfg.model.receiver, setup.receiver, frozen[1], tokenizers[1])
    features = shared_mc.mc_features(*tokenizers)
    golds = {name: [e["gold"] for e in rows] for name, rows in examples.items()}

    def accuracy(scored: dict[str, tuple]) -> dict[str, float]:
        """set -> accuracy, and "" -> the accuracy pooled over every question."""
        out = {name: metrics.mc_accuracy(ll, golds[name], normalize_by_length=True, choice_lengths=lens)
               for name, (ll, lens) in scored.items()}
        pooled = [sum((list(scored[name][k]) for name in scored), []) for k in (0, 1)]
        out[""] = metrics.mc_accuracy(pooled[0], sum(golds.values(), []), normalize_by_length=True,
                                      choice_lengths=pooled[1])
        return out

    alone = accuracy({name: score_choices(rows, agent=receiver) for name, rows in examples.items()})

    def evaluate(adapter_params, step) -> dict:
        t = time.perf_counter()
        adapter = dict(setup=setup, params=adapter_params, frozen=frozen, features=features)
        acc = accuracy({name: score_choices(rows, adapter=adapter) for name, rows in examples.items()})
        return {"mc_acc": acc[""], "mc_acc_alone": alone[""], "mc_acc_delta": acc[""] - alone[""],
                **{f"mc_acc/{name.split('/')[-1]}": acc[name] for name in examples},
                "n": sum(len(rows) for rows in examples.values()), "seconds": time.perf_counter() - t}

    return evaluate
