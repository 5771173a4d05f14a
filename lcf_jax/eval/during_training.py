"""Evaluation during training: SQuAD-style F1/EM of the receiver answering through the adapter."""
from __future__ import annotations

import time

from lcf_jax.comm import lcfx_channel
from lcf_jax.comm.agents import Agent
from lcf_jax.eval import metrics


def make_train_evaluator(cfg, setup, frozen, qa, tokenizers, batch_size: int = 8):
    """evaluate(adapter_params, step) -> {"f1", "em", "n", "seconds"} on cfg.data.eval_examples."""
    if setup.kind != "lcfx":
        raise ValueError("the QA evaluator answers through LCF-X (adapter.kind='lcfx')")
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
