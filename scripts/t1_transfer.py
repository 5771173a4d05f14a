"""Where a shared-context adapter's T1 gains and losses come from: its accuracy on the questions split by which model
alone gets them right (from a T1 run's per-question answers, `reproduce --table t1`).

    .venv/bin/python scripts/t1_transfer.py --results results/t1_n500/t1_shared_context.json \
        --receiver "smollm2-135m-instruct alone" --sharer "gemma3-270m alone"

An adapter that carries the sharer's reading should gain most where only the sharer is right and lose little where
only the receiver is right; one that only perturbs the receiver moves both cells alike. Each cell: n and the
adapter row's accuracy (%) with its 95% bootstrap interval. When the results hold each question's choice (T1 runs
since 2026-12-03), a second table gives how often each row picks the sharer alone's choice, against the receiver alone;
when they hold each question's gold-choice log-probability, a third gives it paired against the receiver alone and
against each adapter row's control. With --against ROW, a last table gives every row's accuracy paired against that
row (e.g. each pruned LCF against C2C).
"""
import argparse
from collections import defaultdict

from lcf_jax.eval import t1_results
from lcf_jax.eval.bootstrap import format_interval, mean_interval, paired_difference


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", required=True, nargs="+",
                    help="t1_shared_context.json of one T1 run, or of several (rows merged, paired over the same questions)")
    ap.add_argument("--receiver", required=True, help="the receiver-alone row's method name")
    ap.add_argument("--sharer", required=True, help="the sharer-alone row's method name")
    ap.add_argument("--against", default=None, help="a row to pair every other row's accuracy against")
    args = ap.parse_args()
    rows = t1_results.read(args.results)
    per = defaultdict(list)   # method -> correctness over every question, sets in file order
    for r in rows:
        per[r["method"]].extend(r["correct_per_question"])
    for name in (args.receiver, args.sharer) + ((args.against,) if args.against else ()):
        if name not in per:
            raise SystemExit(f"no row {name!r} in {' '.join(args.results)}; rows: {sorted(per)}")
    cells = {"both right": (True, True), "only the sharer right": (False, True),
             "only the receiver right": (True, False), "neither right": (False, False)}
    adapters = [m for m in per if m not in (args.receiver, args.sharer)]
    print("| questions | n | " + " | ".join(adapters) + " |")
    print("|---|---|" + "---|" * len(adapters))
    for label, (rec, sha) in cells.items():
        idx = [i for i, (a, b) in enumerate(zip(per[args.receiver], per[args.sharer])) if (a > 0) == rec and (b > 0) == sha]
        accs = [format_interval(mean_interval([per[m][i] for i in idx])) if idx else "—" for m in adapters]
        print(f"| {label} | {len(idx)} | " + " | ".join(accs) + " |")
    if all("choice_per_question" in r for r in rows):
        # Does the adapter move the receiver's choice towards the sharer's? Agreement with the sharer alone's choice,
        # paired against the receiver alone's agreement on the same questions.
        choice = defaultdict(list)
        for r in rows:
            choice[r["method"]].extend(r["choice_per_question"])
        agree = {m: [100.0 * (a == b) for a, b in zip(choice[m], choice[args.sharer])] for m in choice}
        print("\n| row | same choice as the sharer alone (%) | Δ vs the receiver alone |")
        print("|---|---|---|")
        for m in [args.receiver] + adapters:
            d = "—" if m == args.receiver else format_interval(paired_difference(agree[m], agree[args.receiver]))
            print(f"| {m} | {format_interval(mean_interval(agree[m]))} | {d} |")
    if all("gold_logprob_per_question" in r for r in rows):
        # A continuous score: the gold choice's log-probability among the choices, paired against the receiver
        # alone and, for a control's adapter row, against its control (information, not format, if it is above it).
        gold = defaultdict(list)
        control_of = {}
        for r in rows:
            gold[r["method"]].extend(r["gold_logprob_per_question"])
            if r.get("control_of"):
                control_of[r["control_of"]] = r["method"]
        three = lambda iv: f"{iv[0]:.3f} [{iv[1]:.3f}, {iv[2]:.3f}]"  # noqa: E731
        print("\n| row | gold choice log-probability | Δ vs the receiver alone | Δ vs its control |")
        print("|---|---|---|---|")
        for m in [args.receiver, args.sharer] + adapters:
            d = "—" if m == args.receiver else three(paired_difference(gold[m], gold[args.receiver]))
            c = three(paired_difference(gold[m], gold[control_of[m]])) if m in control_of else "—"
            print(f"| {m} | {three(mean_interval(gold[m]))} | {d} | {c} |")
    if args.against:
        print(f"\n| row | accuracy (%, every question pooled) | Δ vs {args.against} |")
        print("|---|---|---|")
        for m in per:
            if m != args.against:
                print(f"| {m} | {format_interval(mean_interval(per[m]))} | "
                      f"{format_interval(paired_difference(per[m], per[args.against]))} |")


if __name__ == "__main__":
    main()
