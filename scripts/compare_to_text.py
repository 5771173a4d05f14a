"""LCF-X rows of ladder runs, or of the T2 run itself, against a text row of a T2 run on the same questions
(paired bootstrap).

    .venv/bin/python scripts/compare_to_text.py --t2 results/t2_n300/t2_squad_alone_text64.json --set squad \
        --text "text (B=64, summary)" --ladder "seed 0=results/test_window_snap.json,seed 1=..."
    .venv/bin/python scripts/compare_to_text.py --t2 results/t2_n300/hotpotqa_b64/t2_....json \
        --set hotpotqa_supporting --text "text (B=64, summary)" --rows "seed 0=LCF-X (...);seed 1=LCF-X seed 1 (...)"

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
    ap.add_argument("--ladder", default="", help="NAME=LADDER.json,...: their R5 rows on --set")
    ap.add_argument("--rows", default="", help="NAME=T2 METHOD;...: LCF-X rows of the --t2 run itself (';'-separated: labels hold commas)")
    args = ap.parse_args()
    if not args.ladder and not args.rows:
        raise SystemExit("error: give --ladder or --rows (the LCF-X rows to compare)")
    t2 = {r["method"]: r for r in json.load(open(args.t2)) if r["set"] == args.set}
    if args.text not in t2:
        raise SystemExit(f"error: {args.t2} has no row {args.text!r} on {args.set}; rows: {sorted(t2)}")
    text = t2[args.text]
    print(f"| {args.set} | F1 | EM | ΔF1 vs {args.text} | ΔEM vs it | F1 ratio | EM ratio |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {args.text} | {_ci(mean_interval(text['f1_per_question']))} | {_ci(mean_interval(text['em_per_question']))} "
          "| | | | |")
    compared = []
    for item in filter(None, args.ladder.split(",")):
        name, path = item.split("=", 1)
        rungs = json.load(open(path))[args.set]
        if rungs["R0"]["f1"] != t2["receiver alone"]["f1_per_question"]:
            raise SystemExit(f"error: {path} and {args.t2} answer different questions (their receiver-alone rows "
                             "differ); compare runs of the same --n and split")
        compared.append((name, rungs["R5"]["f1"], rungs["R5"]["em"]))
    for item in filter(None, args.rows.split(";")):
        name, method = item.split("=", 1)
        if method not in t2:
            raise SystemExit(f"error: {args.t2} has no row {method!r} on {args.set}; rows: {sorted(t2)}")
        compared.append((name, t2[method]["f1_per_question"], t2[method]["em_per_question"]))
    for name, f1, em in compared:
        print(f"| LCF-X {name} | {_ci(mean_interval(f1))} | {_ci(mean_interval(em))} "
              f"| {_ci(paired_difference(f1, text['f1_per_question']))} "
              f"| {_ci(paired_difference(em, text['em_per_question']))} "
              f"| {sum(f1) / sum(text['f1_per_question']):.2f} | {sum(em) / max(sum(text['em_per_question']), 1e-9):.2f} |")


if __name__ == "__main__":
    main()
