"""Two ladder runs' R5 rows on the same questions, paired (e.g. the conditioned against the unconditioned window).

    .venv/bin/python scripts/compare_ladders.py results/dev_window_uncond_s2_snap.json results/dev_window_s2_snap.json \
        --names "unconditioned,conditioned"

Prints, per set, each run's F1/EM and the paired difference A - B with its 95% bootstrap interval. Refuses runs whose
receiver-alone rows (R0, when both have one) or lengths differ: then they are not the same questions.
"""
import argparse
import json

from lcf_jax.eval.bootstrap import format_interval, mean_interval, paired_difference


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", help="ladder .json (A)")
    ap.add_argument("b", help="ladder .json (B)")
    ap.add_argument("--names", default="A,B", help="two comma-separated names")
    ap.add_argument("--rung", default="R5")
    args = ap.parse_args()
    na, nb = args.names.split(",")
    a, b = json.load(open(args.a)), json.load(open(args.b))
    print(f"| set | {na} F1 | {nb} F1 | ΔF1 {na} − {nb} | {na} EM | {nb} EM | ΔEM |")
    print("|---|---|---|---|---|---|---|")
    for s in [s for s in a if s in b]:
        ra, rb = a[s][args.rung], b[s][args.rung]
        if len(ra["f1"]) != len(rb["f1"]) or ("R0" in a[s] and "R0" in b[s] and a[s]["R0"]["f1"] != b[s]["R0"]["f1"]):
            raise SystemExit(f"error: {args.a} and {args.b} answer different questions on {s}; use runs of the same --n "
                             "and split")
        print(f"| {s} (n={len(ra['f1'])}) | {format_interval(mean_interval(ra['f1']))} | "
              f"{format_interval(mean_interval(rb['f1']))} | {format_interval(paired_difference(ra['f1'], rb['f1']))} | "
              f"{format_interval(mean_interval(ra['em']))} | {format_interval(mean_interval(rb['em']))} | "
              f"{format_interval(paired_difference(ra['em'], rb['em']))} |")


if __name__ == "__main__":
    main()
