"""LCF-X rows of ladder runs against a text row of a T2 run on the same questions (paired bootstrap).

    .venv/bin/python scripts/compare_to_text.py --t2 results/t2_n300/t2_squad_alone_text64.json --set squad \
        --text "text (B=64, summary)" --ladder "seed 0=results/test_window_snap.json,seed 1=..."

Refuses to compare when the two runs' receiver-alone rows differ (then they are not the same questions).
"""
import argparse
import json

from lcf_jax.eval.bootstrap import format_interval as _ci
from lcf_jax.eval.bootstrap import mean_interval, paired_difference


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--t2", required=True, help="a T2 .json (or .partial.json) with the text and receiver-alone rows")
    ap.add_argument("--set", required=True)
    ap.add_argument("--text", default="text (B=64, summary)", help="the T2 method to compare against")
    ap.add_argument("--ladder", required=True, help="NAME=LADDER.json,...: their R5 rows on --set")
    args = ap.parse_args()
    t2 = {r["method"]: r for r in json.load(open(args.t2)) if r["set"] == args.set}
    if args.text not in t2:
        raise SystemExit(f"error: {args.t2} has no row {args.text!r} on {args.set}; rows: {sorted(t2)}")
    text = t2[args.text]
    print(f"| {args.set} | F1 | EM | ΔF1 vs {args.text} | ΔEM vs it | F1 ratio | EM ratio |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {args.text} | {_ci(mean_interval(text['f1_per_question']))} | {_ci(mean_interval(text['em_per_question']))} "
          "| | | | |")
    for item in args.ladder.split(","):
        name, path = item.split("=", 1)
        rungs = json.load(open(path))[args.set]
        if rungs["R0"]["f1"] != t2["receiver alone"]["f1_per_question"]:
            raise SystemExit(f"error: {path} and {args.t2} answer different questions (their receiver-alone rows "
                             "differ); compare runs of the same --n and split")
        r = rungs["R5"]
        print(f"| LCF-X {name} | {_ci(mean_interval(r['f1']))} | {_ci(mean_interval(r['em']))} "
              f"| {_ci(paired_difference(r['f1'], text['f1_per_question']))} "
              f"| {_ci(paired_difference(r['em'], text['em_per_question']))} "
              f"| {sum(r['f1']) / sum(text['f1_per_question']):.2f} | {sum(r['em']) / sum(text['em_per_question']):.2f} |")


if __name__ == "__main__":
    main()
