"""How much a shared-context adapter could gain on T1 at most, before training one: each bundled model alone on the
multiple-choice sets, their ensemble, and the questions either gets right.

    .venv/bin/python scripts/t1_headroom.py --split dev --n 200 --out results/t1_headroom_dev
    .venv/bin/python scripts/t1_headroom.py --split test --n 500 --rows results/t1_n500/t1_rows \
        --out results/t1_n500/t1_headroom_test     # T1's own rows: the alone rows T1 kept are reused

Both models read the question as T1 scores it (`eval.tables.mc_loglik`, length-normalised log-likelihood per
choice). The ensemble averages the two models' choice distributions (each a softmax over its normalised scores): a
receiver given the sharer's reading could at best do what reading both gives, and this is the simplest reader of
both. "Either right" is the ceiling of any combination. Every row is paired against each model alone over the same
questions (95% bootstrap). Writes `<out>.json` (per-question correctness) and `<out>.md`. `--rows` is a T1 run's
`t1_rows/` folder: each model alone's scores are read from it when T1 kept them for the same questions (and kept there
when not), so the headroom is measured on exactly the rows T1 reports.

`--text` adds what a teacher built from T1's text-to-text row would score: SmolLM2 reading Gemma3's answer
(`eval/text_mc.py`), its control (Gemma3's answer to an unrelated question) and mixtures of SmolLM2 alone's choice
distribution with the text row's (weight w on the text row) and, for w = 0.5, with its control's. A mixture is the
teacher a fused receiver could be distilled towards without inheriting what reading another model's answer costs;
its weight is chosen here, on dev, and a mixture counts only as far as it is above the same mixture with the control.
"""
import argparse
import functools
import json
from pathlib import Path

import numpy as np

from lcf_jax.comm.agents import Agent
from lcf_jax.data import sources
from lcf_jax.eval import text_mc
from lcf_jax.eval.bootstrap import format_interval, mean_interval, paired_difference
from lcf_jax.eval.tables import T1_SETS, score_choices, scored_rows, scorer_fingerprint, text_rows

MODELS = ("smollm2-135m-instruct", "gemma3-270m")
TEXT_WEIGHTS = (0.25, 0.5, 0.75)


def mixture(text: np.ndarray, alone: np.ndarray, w: float) -> np.ndarray:
    """log(w * p_text + (1 - w) * p_alone) of two log-distributions over the same choices."""
    return np.logaddexp(np.log(w) + text, np.log1p(-w) + alone)


def normalised(ll, lens) -> np.ndarray:
    s = np.asarray(ll, np.float64) / np.asarray(lens, np.float64)
    return s - np.logaddexp.reduce(s)   # log of a distribution over the choices


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", choices=["dev", "test"], default="dev")
    ap.add_argument("--n", type=int, default=200, help="first n rows of each set's split")
    ap.add_argument("--out", default="results/t1_headroom_dev")
    ap.add_argument("--rows", default=None, help="a T1 run's t1_rows/ folder: reuse (and keep) each model alone's scores")
    ap.add_argument("--text", action="store_true", help="add the text-to-text row, its control and their mixtures")
    args = ap.parse_args()
    agents = {m: Agent.load(m) for m in MODELS}
    texts = text_rows(text_mc.row_name(MODELS[1], MODELS[0]), agents[MODELS[1]], agents[MODELS[0]],
                      args.rows) if args.text else []
    rows: dict[str, list[float]] = {}
    per_set: dict[str, dict[str, float]] = {}
    for name in T1_SETS:
        exs = sources.read(name, args.split, max_examples=args.n)
        gold = np.array([int(e["gold"]) for e in exs])
        dists = {m: [normalised(*x) for x in zip(*scored_rows(
                     f"{m} alone", scorer_fingerprint(agent=a), name, args.split, exs,
                     functools.partial(score_choices, agent=a), args.rows))] for m, a in agents.items()}
        right = {m: [100.0 * (int(np.argmax(d)) == g) for d, g in zip(dists[m], gold)] for m in MODELS}
        ens = [np.logaddexp(a, b) for a, b in zip(dists[MODELS[0]], dists[MODELS[1]])]
        right["ensemble"] = [100.0 * (int(np.argmax(d)) == g) for d, g in zip(ens, gold)]
        right["either right"] = [max(a, b) for a, b in zip(right[MODELS[0]], right[MODELS[1]])]
        if texts:
            text, control = ([normalised(*x) for x in zip(*scored_rows(
                role, fp, name, args.split, exs, functools.partial(score, name=name, split=args.split), args.rows))]
                for role, fp, score, _, _ in texts)   # the text row, then its control
            alone = dists[MODELS[0]]
            mixes = {"text (Gemma3's answer read by SmolLM2)": text,
                     "text control (answer to an unrelated question)": control,
                     **{f"SmolLM2 alone + text, w = {w}": [mixture(t, a, w) for t, a in zip(text, alone)]
                        for w in TEXT_WEIGHTS},
                     "SmolLM2 alone + text control, w = 0.5": [mixture(c, a, 0.5) for c, a in zip(control, alone)]}
            for k, d in mixes.items():
                right[k] = [100.0 * (int(np.argmax(x)) == g) for x, g in zip(d, gold)]
        for k, v in right.items():
            rows.setdefault(k, []).extend(v)
            per_set.setdefault(k, {})[name.split("/")[-1]] = float(np.mean(v))
        print(name, {k: round(float(np.mean(v)), 1) for k, v in right.items()}, flush=True)
    sets = [n.split("/")[-1] for n in T1_SETS]
    rows_arg = (f" --rows {args.rows}" if args.rows else "") + (" --text" if args.text else "")
    lines = [f"T1 headroom, {args.split} split, first {args.n} rows per set (n = {len(rows[MODELS[0]])} questions); "
             f"`python scripts/t1_headroom.py --split {args.split} --n {args.n}{rows_arg} --out {args.out}`", "",
             "| row | " + " | ".join(sets) + " | all [95% CI] | Δ vs SmolLM2 alone | Δ vs Gemma3 alone |",
             "|---|" + "---|" * (len(sets) + 3)]
    for k, v in rows.items():
        d = [format_interval(paired_difference(v, rows[m])) if k != m else "—" for m in MODELS]
        lines.append(f"| {k} | " + " | ".join(f"{per_set[k][s]:.1f}" for s in sets)
                     + f" | {format_interval(mean_interval(v))} | {d[0]} | {d[1]} |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"split": args.split, "n": args.n, "correct": rows}))
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
