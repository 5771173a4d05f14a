"""One recipe's seeds on T1 together: each seed's row and the mean over its seeds, paired against the receiver alone and
against the mean of the seeds' unrelated-question controls (from a T1 run's per-question answers, `reproduce --table t1`).

    .venv/bin/python scripts/t1_seeds.py --results results/t1_n500/t1_shared_context.json \\
        --receiver "smollm2-135m-instruct alone" --seeds "LCF pruned r=64 + fine-tune reverse,\\
    LCF pruned r=64 + fine-tune reverse seed 1,LCF pruned r=64 + fine-tune reverse seed 2"

The seed mean averages each question's correctness over the seeds (0-100 in steps of 100/seeds) and pairs it per
question, pooled over every set. Its interval resamples questions, not seeds: a few seeds show how far they disagree,
they do not bound it. A recipe whose seed mean is above the receiver by an interval excluding 0 and above its controls'
mean by one too carries something the sharer read; one above the receiver only changes how the receiver scores.
"""
import argparse
from collections import defaultdict

import numpy as np

from lcf_jax.eval import t1_results
from lcf_jax.eval.bootstrap import format_interval, mean_interval, paired_difference


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", required=True, nargs="+",
                    help="t1_shared_context.json of one T1 run, or of several (rows merged, paired over the same questions)")
    ap.add_argument("--receiver", required=True, help="the receiver-alone row's method name")
    ap.add_argument("--seeds", required=True, help="comma-separated row names, one per seed of the recipe")
    args = ap.parse_args()
    rows = t1_results.read(args.results)
    per, control_of = defaultdict(list), {}
    for r in rows:
        per[r["method"]].extend(r["correct_per_question"])
        if r.get("control_of"):
            control_of[r["control_of"]] = r["method"]
    seeds = [s.strip() for s in args.seeds.split(",") if s.strip()]
    missing = [m for m in [args.receiver] + seeds if m not in per]
    if missing:
        raise SystemExit(f"no row {missing[0]!r} in {' '.join(args.results)}; rows: {sorted(per)}")
    if len(seeds) < 2:
        raise SystemExit(f"--seeds needs at least two rows (one per seed), got {seeds}")
    receiver = per[args.receiver]
    if any(len(per[m]) != len(receiver) for m in seeds):
        raise SystemExit("the seeds' rows and the receiver's do not cover the same questions: score them with the "
                         "same --n on the same sets")
    print(f"| row | accuracy (%, {len(receiver)} questions pooled) | Δ vs {args.receiver} | Δ vs its control |")
    print("|---|---|---|---|")
    for m in seeds:
        c = format_interval(paired_difference(per[m], per[control_of[m]])) if m in control_of else "not scored"
        print(f"| {m} | {format_interval(mean_interval(per[m]))} | "
              f"{format_interval(paired_difference(per[m], receiver))} | {c} |")
    mean = np.mean([per[m] for m in seeds], axis=0).tolist()
    vs_receiver = paired_difference(mean, receiver)
    line = f"| mean of the {len(seeds)} seeds | {format_interval(mean_interval(mean))} | {format_interval(vs_receiver)} |"
    if all(m in control_of for m in seeds):
        controls = np.mean([per[control_of[m]] for m in seeds], axis=0).tolist()
        vs_controls = paired_difference(mean, controls)
        print(line + f" {format_interval(vs_controls)} |")
        print(f"| mean of their controls | {format_interval(mean_interval(controls))} | "
              f"{format_interval(paired_difference(controls, receiver))} | — |")
        verdict = "yes" if vs_receiver[1] > 0 and vs_controls[1] > 0 else "no"   # both lower bounds above 0
        print(f"\nabove the receiver and above its controls, both intervals excluding 0: {verdict}")
    else:
        print(line + " some controls not scored |")


if __name__ == "__main__":
    main()
