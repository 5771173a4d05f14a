"""The paper's ablations on the bundled pair: joint against separate K/V bottlenecks at equal parameter
count, rank r, slots m (and receiver-conditioned pooling). Each row is a finished training run,
re-scored here on a development split (ablations are design choices: they are read on dev, never test).

Shared-context runs (lcf, c2c): multiple choice on dev rows (index % 2 == 0) of `ABLATION_MC_SETS`,
taken evenly spaced through each file so MMLU-Redux is not one subject: accuracy (length-normalised
log-likelihood, as T1) and the gold choice's negative log-likelihood per token, which moves before
accuracy does at this n. The receiver alone is the reference row.
Different-context runs (lcfx): SQuAD dev F1/EM through the LCF-X protocol, with the unrelated-passage
control of T2 beside it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from lcf_jax.eval import metrics
from lcf_jax.eval.tables import Table, score_choices

ABLATION_MC_SETS = {"mc/arc_easy": "dev", "mc/mmlu_redux": "dev"}


def evenly_spaced(rows: list, n: int) -> list:
    if n >= len(rows):
        return list(rows)
    return [rows[int(i)] for i in np.linspace(0, len(rows) - 1, n).round()]


def describe(kind: str, cfg) -> str:
    """The variant of a run's adapter in the words of the ablations."""
    if kind == "lcf":
        kv = "joint K/V" if cfg.joint_kv else "separate K/V"
        if cfg.ranks is None:
            return f"{kv}, r={cfg.rank}"
        return f"{kv}, r={'/'.join(str(r) for r in sorted(set(cfg.ranks), reverse=True))} (pruned)"
    if kind == "lcfx":
        return f"m={cfg.slots}, r={cfg.rank}, {'conditioned' if cfg.conditioned else 'unconditioned'}"
    return f"hidden {cfg.hidden_dim}"


def load_run(path: str, agents: dict) -> dict:
    """A run's latest checkpoint, or an exported adapter directory (e.g. a pruned one), ready to
    score: kind, config, float32 params, the frozen models, the training step."""
    import jax
    import jax.numpy as jnp

    from lcf_jax.adapters import size
    from lcf_jax.adapters.export_jax import import_adapter
    from lcf_jax.train.export_run import load_checkpoint
    from lcf_jax.train.objective import Setup

    if (Path(path) / "adapter.json").exists():
        imp = import_adapter(path, full=True)
        kind, cfg, params, meta = imp.kind, imp.config, imp.params, imp.meta
        s_name, r_name, step = meta["sharer"]["name"], meta["receiver"]["name"], meta.get("source", {}).get("step", 0)
    else:
        ck = load_checkpoint(path)
        kind, cfg, params, step = ck.kind, ck.config, ck.params, ck.step
        s_name, r_name = ck.run_config["model"]["sharer"], ck.run_config["model"]["receiver"]
    if s_name not in agents or r_name not in agents:
        raise ValueError(f"{path} holds an adapter for {s_name} -> {r_name}; the ablations run {sorted(agents)}")
    s, r = agents[s_name], agents[r_name]
    return dict(kind=kind, config=cfg, step=int(step), path=str(path), sharer=s, receiver=r,
                params=jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params),
                setup=Setup(kind, cfg, s.config, r.config),
                params_count=size.adapter_param_count(cfg, s.config, r.config),
                mb=size.adapter_size_mb(cfg, s.config, r.config, "bfloat16"))


def _gold_scores(logliks: list[list[float]], lengths: list[list[int]], golds: list[int]) -> tuple[float, float]:
    acc = metrics.mc_accuracy(logliks, golds, normalize_by_length=True, choice_lengths=lengths)
    nll = float(np.mean([-ll[g] / max(n[g], 1) for ll, n, g in zip(logliks, lengths, golds)]))
    return acc, nll


def score_shared_context(run: Optional[dict], receiver, examples: dict[str, list[dict]]) -> dict[str, tuple]:
    """set -> (accuracy %, gold NLL per token) for a run (fused caches), or the receiver alone (run None)."""
    adapter = None if run is None else scoring_adapter(run)
    out = {}
    for name, exs in examples.items():
        lls, lens = score_choices(exs, agent=receiver, adapter=adapter)
        out[name] = _gold_scores(lls, lens, [e["gold"] for e in exs])
    return out


def scoring_adapter(run: dict) -> dict:
    """What `reproduce.score_choices` needs to score multiple choice through a shared-context run."""
    from lcf_jax.eval import shared_mc

    return dict(setup=run["setup"], params=run["params"], frozen=(run["sharer"].params, run["receiver"].params),
                features=shared_mc.mc_features(run["sharer"].tokenizer, run["receiver"].tokenizer), mb=run["mb"],
                source=run["path"])


def table_shared_context_ablations(runs: dict[str, dict], n: int = 40, data_dir=None) -> Table:
    from lcf_jax.data import sources

    examples = {name: evenly_spaced(sources.read(name, split, data_dir=data_dir), n)
                for name, split in ABLATION_MC_SETS.items()}
    receivers = {run["receiver"].name: run["receiver"] for run in runs.values()}
    rows = []
    for r_name, receiver in receivers.items():
        alone = score_shared_context(None, receiver, examples)
        rows.append([f"{r_name} alone", "—", "—", 0, None, 0] + [v for s in examples for v in alone[s]])
    for name, run in runs.items():
        sc = score_shared_context(run, run["receiver"], examples)
        rows.append([name, run["kind"], describe(run["kind"], run["config"]), run["step"], run["mb"],
                     run["params_count"]] + [v for s in examples for v in sc[s]])
    cols = ["run", "kind", "variant", "steps", "MB (bf16)", "parameters"]
    for s in examples:
        short = s.split("/")[-1]
        cols += [f"{short} acc (%)", f"{short} gold NLL/token"]
    notes = [f"{len(next(iter(examples.values())))} dev rows (index % 2 == 0) of each set, evenly spaced through the "
             "file; accuracy by length-normalised log-likelihood (as T1); gold NLL/token: the gold choice's negative "
             "log-likelihood per token, lower is better.",
             "each adapter row scores the receiver on its cache fused with the sharer's (the training forward), "
             "from the run's latest checkpoint or the exported adapter given; the receiver-alone row is the same "
             "receiver without an adapter."]
    return Table("Ablations, shared context (LCF): joint vs separate K/V at equal parameters, rank", cols, rows, notes,
                 {"sets": ABLATION_MC_SETS, "n": n, "runs": {k: v["path"] for k, v in runs.items()}})


def table_cross_context_ablations(runs: dict[str, dict], n: int = 50, data_dir=None) -> Table:
    from lcf_jax.comm import protocols
    from lcf_jax.data import sources

    tasks = protocols.tasks_from_examples(sources.read("squad", "dev", data_dir=data_dir, max_examples=n))
    golds = [list(t.answers) for t in tasks]
    rows = []
    for receiver in {run["receiver"].name: run["receiver"] for run in runs.values()}.values():
        alone = metrics.squad_scores([r.answer for r in protocols.Session(receiver=receiver).alone(tasks)], golds)
        rows.append([f"{receiver.name} alone", "—", 0, None, 0, float(alone["f1"]), float(alone["em"]), None, None])
    for name, run in runs.items():
        session = protocols.Session(receiver=run["receiver"], sharer=run["sharer"], adapter=(run["config"], run["params"]))
        own = metrics.squad_scores([r.answer for r in session.lcfx(tasks)], golds)
        ctl = metrics.squad_scores([r.answer for r in session.lcfx_control(tasks)], golds)
        rows.append([name, describe("lcfx", run["config"]), run["step"], run["mb"], run["params_count"],
                     float(own["f1"]), float(own["em"]), float(ctl["f1"]), float(ctl["em"])])
    notes = [f"SQuAD dev, first {n} questions, greedy, at most 16 answer tokens; control: the same adapter fed an "
             "unrelated passage of the same length (its gain is format, not information)."]
    return Table("Ablations, different contexts (LCF-X): slots m, receiver-conditioned pooling",
                 ["run", "variant", "steps", "MB (bf16)", "parameters", "F1", "EM", "control F1", "control EM"], rows,
                 notes, {"set": "squad", "split": "dev", "n": n, "runs": {k: v["path"] for k, v in runs.items()}})
