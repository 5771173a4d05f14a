"""python -m lcf_jax.reproduce --table {t1,t2,t3,ablations,ladder,hint,all} [--n 50] [--out results]

Writes results/<table>.md and .csv (with splits, n, seeds and a settings hash) and the plots.
Ablations re-score finished training runs on dev splits: --ablation-runs "NAME=RUN_DIR,...".
The hint probe (not part of all) asks what shared-context adapters carry: --hint-adapters "NAME=DIR,...".
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from lcf_jax.cli_errors import ArgumentParser, UserError, positive, run_main

PAPER_PAIR = ("qwen2.5-0.5b-instruct", "qwen3-0.6b")
BUNDLED_PAIRS = (("smollm2-135m-instruct", "gemma3-270m"), ("gemma3-270m", "smollm2-135m-instruct"))


def shared_context_adapter(path: str, agents: dict) -> dict:
    """What T1 needs to score with an exported LCF/C2C adapter (`eval.ablations.scoring_adapter`)."""
    from lcf_jax.eval import ablations

    run = ablations.load_run(path, agents)
    if run["kind"] not in ("lcf", "c2c"):
        raise ValueError(f"{path} holds a {run['kind']} adapter; T1 rows need a shared-context one (lcf or c2c)")
    return ablations.scoring_adapter(run)


def _named_paths(spec: str, flag: str = "adapter entry") -> list[tuple[str, str]]:
    """'NAME=DIR,NAME=DIR' -> [(NAME, DIR), ...]; a clear error for an entry without '=' or without its directory."""
    out = []
    for item in filter(None, spec.split(",")):
        if "=" not in item:
            raise UserError(f"{flag} {item!r} needs the form NAME=DIR (e.g. 'm32=runs/exports/lcfx_m32')")
        name, path = item.rsplit("=", 1)
        if not name or not Path(path).is_dir():
            raise UserError(f"{flag} {item!r}: " + ("the NAME is empty" if not name else f"{path} is not a directory"))
        out.append((name, path))
    return out


def _names(flag: str, names: list[str], known) -> None:
    """Each of `names` (as main splits them) is one of `known`."""
    bad = [x for x in names if x not in known]
    if bad:
        raise UserError(f"{flag}: unknown {bad}; known: {list(known)} (comma-separated, no spaces)")


def text_pairs(spec: str) -> list[tuple[str, str]]:
    """'SHARER:RECEIVER,...' -> [(sharer, receiver), ...] of the bundled models; a clear error for anything else."""
    out = []
    for item in filter(None, (x.strip() for x in spec.split(","))):
        pair = tuple(x.strip() for x in item.split(":"))
        if len(pair) != 2 or pair not in BUNDLED_PAIRS:
            raise UserError(f"--t1-text {item!r} must be SHARER:RECEIVER of the bundled pairs: "
                            + ", ".join(f"{a}:{b}" for a, b in BUNDLED_PAIRS))
        out.append(pair)
    return out


def check_args(args, tables: list[str]) -> None:
    """Numbers, names and paths, before any model loads (a bad one used to fail minutes later, or not at all)."""
    from lcf_jax.eval.tables import T2_SETS, TEXT_PROMPTS
    needs_two = {"t2", "ladder"} & set(tables)  # control rows swap passages between two questions
    if args.t1_controls:
        if "t1" not in tables or not args.t1_adapters:
            raise UserError("--t1-controls follows T1 adapter rows with their controls: give --table t1 (or all) "
                            "and --t1-adapters NAME=DIR,...")
        if args.t1_controls != "all":
            _names("--t1-controls", args.t1_controls.split(","), [n for n, _ in _named_paths(args.t1_adapters)])
        needs_two |= {"t1"}
    low = 2 if needs_two else 1
    if args.n < low:
        why = f" for {'/'.join(sorted(needs_two))} (their control rows pair questions)" if needs_two else ""
        raise UserError(f"--n is the number of examples per data set: at least {low}{why}, got {args.n}")
    positive("--latency-repeats", args.latency_repeats)
    positive("--ablation-n", args.ablation_n)
    if "t2" in tables:
        _names("--sets", args.sets.split(","), T2_SETS)
        _names("--text-prompts", [p.strip() for p in args.text_prompts.split(",") if p.strip()], TEXT_PROMPTS)
        try:
            budgets = [int(b) for b in args.budgets.split(",")]
        except ValueError:
            raise UserError(f"--budgets {args.budgets!r} must be comma-separated integers, e.g. 32,64,128") from None
        if not budgets or min(budgets) < 1:
            raise UserError(f"--budgets {args.budgets!r}: every text budget must be at least 1 token")
    if "ladder" in tables:
        from lcf_jax.eval import ladder as LD
        _names("--ladder-sets", args.ladder_sets.split(","), LD.LADDER_SETS)
        _names("--ladder-rungs", [r.strip() for r in args.ladder_rungs.split(",") if r.strip()], LD.RUNGS)
        for reuse in filter(None, args.ladder_reuse.split(",")):
            if not Path(reuse).is_file():
                raise UserError(f"--ladder-reuse {reuse} is not a file (a ladder .json written by --table ladder)")
        if args.ladder_run and not Path(args.ladder_run).is_dir():
            raise UserError(f"--ladder-run {args.ladder_run} is not a directory (a training run or an exported adapter)")
    if "hint" in tables and not args.hint_adapters:
        raise UserError("--table hint needs --hint-adapters NAME=DIR,... (exported shared-context adapters)")
    text_pairs(args.t1_text)
    if args.t1_text and "t1" not in tables:
        raise UserError("--t1-text adds T1 rows: give --table t1 (or all)")
    if args.t1_text and args.n < 2:
        raise UserError(f"--n must be at least 2 for --t1-text (its control rows pair questions), got {args.n}")
    for flag, spec in (("--t1-adapters", args.t1_adapters), ("--t2-adapters", args.t2_adapters),
                       ("--ablation-runs", args.ablation_runs), ("--hint-adapters", args.hint_adapters)):
        _named_paths(spec, flag)
    if args.adapter is not None and not (Path(args.adapter) / "adapter.json").exists():
        raise UserError(f"--adapter {args.adapter} holds no exported adapter (adapter.json)")
    if args.out.exists() and not args.out.is_dir():
        raise UserError(f"--out {args.out} is a file; give a directory for the tables")


def main(argv=None, agents: dict | None = None) -> None:
    """`agents` (name -> Agent) replaces the bundled models: tests pass tiny ones."""
    return run_main(lambda a: _main(a, agents), argv)


def build_parser() -> ArgumentParser:
    """The command line's parser (the README test parses every documented command with it)."""
    ap = ArgumentParser(prog="python -m lcf_jax.reproduce", description=__doc__,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--table", choices=["t1", "t2", "t3", "ablations", "ladder", "hint", "all"], default="all")
    ap.add_argument("--n", type=int, default=50, help="examples per data set")
    ap.add_argument("--out", type=Path, default=Path("results"))
    ap.add_argument("--adapter", default=None, help="exported LCF-X adapter (default: the shipped one)")
    ap.add_argument("--sets", default="squad,nq_openbook,hotpotqa", help="T2 data sets")
    ap.add_argument("--budgets", default="32,64,128", help="T2 text budgets")
    ap.add_argument("--text-prompts", default="summary,question-aware",
                    help="T2 sharer prompts for the text rows (summary, question-aware)")
    ap.add_argument("--t2-context-prompt", default="", choices=["", "context_0shot", "context_1shot"],
                    help="the text/oracle context prompt of T2 (default: chosen now by oracle F1 on the first --n SQuAD "
                         "dev questions); give the one an earlier run chose to run T2 one set at a time")
    ap.add_argument("--latency-repeats", type=int, default=3)
    ap.add_argument("--t2-results", default="",
                    help="table saved T2 results (.json or .partial.json files of earlier or interrupted runs, "
                         "comma-separated, e.g. one per set) into --out/--t2-stem without running anything")
    ap.add_argument("--t2-stem", default="", help="file name of the table made from --t2-results")
    ap.add_argument("--t1-adapters", default="",
                    help="T1 adapter rows, NAME=DIR,... (NAME without commas): exported shared-context adapters (lcf, c2c) of "
                         "either bundled pair, e.g. 'LCF=adapters/x_lcf,C2C=adapters/x_c2c'. Each row's scores per "
                         "set are kept in --out/t1_rows and reused by a later run with the same scorer and questions "
                         "(an interrupted run resumes; a new row does not rescore the models alone)")
    ap.add_argument("--t1-controls", default="",
                    help="T1 adapter rows to follow with their control, NAME,... of --t1-adapters, or 'all': the same "
                         "adapter with the sharer reading an unrelated question of the same set (a gain the control "
                         "shares is format, not information)")
    ap.add_argument("--t1-text", default="",
                    help="T1 text-to-text rows, SHARER:RECEIVER,... of the bundled models (e.g. "
                         "'gemma3-270m:smollm2-135m-instruct'): the receiver reads the sharer's text answer before it "
                         "scores the choices, each row followed by its control (the answer to an unrelated question)")
    ap.add_argument("--t2-adapters", default="",
                    help="more T2 LCF-X rows, NAME=DIR,... (NAME without commas): exported LCF-X adapters of either "
                         "direction, each with its own control row, e.g. 'm32=runs/exports/lcfx_m32'")
    ap.add_argument("--t2-directions", choices=["both", "forward", "reverse"], default="both",
                    help="T2 directions to run: forward = smollm2 -> gemma3, reverse = gemma3 -> smollm2; the "
                         "other direction's table is left as it is and the F1/latency plot reads both")
    ap.add_argument("--ablation-runs", default="",
                    help="adapters to compare, NAME=DIR,...: training runs (their latest checkpoints) or exported "
                         "adapters (e.g. pruned ones), e.g. "
                         "'joint=runs/lcf_t1,separate=runs/lcf_sep'; lcf/c2c runs are scored on MC dev rows, "
                         "lcfx runs on SQuAD dev")
    ap.add_argument("--ablation-n", type=int, default=40, help="dev examples per set for the ablations")
    ap.add_argument("--ladder-sets", default="squad,nq_openbook", help="ladder data sets (dev splits)")
    ap.add_argument("--ladder-run", default="",
                    help="the LCF-X adapter of the ladder's R4/R5 rungs: a training run directory or an exported "
                         "adapter (default: the shipped one)")
    ap.add_argument("--ladder-rungs", default="R0,R1,R2,R4,R5,R5 control", help="rungs to run (comma-separated)")
    ap.add_argument("--ladder-reuse", default="",
                    help="ladder .json files (comma-separated) from earlier runs on the same sets and --n: their rungs not "
                         "run now are kept (with --ladder-rungs '' only merged into one table)")
    ap.add_argument("--ladder-split", default="", choices=["", "dev", "test"],
                    help="split of the ladder's sets (default dev; test only for final rows, never to choose)")
    ap.add_argument("--ladder-stem", default="ladder", help="file name (without extension) of the ladder table")
    ap.add_argument("--hint-adapters", default="",
                    help="hint-probe rows, NAME=DIR,... of exported shared-context adapters (lcf, c2c): the sharer "
                         "alone reads 'Hint: the answer is X.' (the gold choice or a wrong one) before the question; "
                         "gold - wrong is what the message carries (`eval/hint_probe.py`)")
    ap.add_argument("--hint-split", default="dev", choices=["dev", "test"],
                    help="split of the hint probe's sets (default dev: a diagnostic, not a final row)")
    ap.add_argument("--hint-stem", default="hint_probe", help="file name (without extension) of the hint-probe table")
    return ap


def _main(argv, agents: dict | None = None) -> None:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from lcf_jax.eval import tables as R

    tables = ((["t1", "t2", "t3"] + (["ablations"] if args.ablation_runs else []))
              if args.table == "all" else [args.table])
    if "ablations" in tables and not args.ablation_runs:
        raise UserError("--table ablations needs --ablation-runs NAME=RUN_DIR,...")
    check_args(args, tables)
    if "t3" in tables:
        t3 = R.table_sizes([PAPER_PAIR, *BUNDLED_PAIRS])
        t3.write(args.out, "t3_sizes")
        R.plot_sizes(t3, args.out / "sizes.png")
        print(t3.markdown())
    if "t2" in tables and args.t2_results:
        sources_ = [Path(f) for f in args.t2_results.split(",") if f]   # runs of one set each, in order
        results = [r for f in sources_ for r in json.loads(f.read_text())]
        first = results[0] if results else {}
        settings = {"sets": sorted({r["set"] for r in results}), "n": first.get("n"), "max_new_tokens": 16,
                    "context_prompt": "the one chosen on SQuAD dev by the run that made these results", "from": args.t2_results,
                    "methods": list(dict.fromkeys(r["method"] for r in results))}
        table = R.t2_table(results, settings)
        stem = args.t2_stem or sources_[0].name.split(".")[0]
        table.write(args.out, stem)
        print(table.markdown())
        tables = [t for t in tables if t != "t2"]
    if {"t1", "t2", "ablations", "ladder", "hint"} & set(tables):
        from lcf_jax.comm import protocols, shipped
        from lcf_jax.comm.agents import Agent
        from lcf_jax.eval import text_mc
        agents = agents or {name: Agent.load(name) for name in dict(BUNDLED_PAIRS)}
    if "t1" in tables:
        t1_adapters = {name: shared_context_adapter(path, agents) for name, path in _named_paths(args.t1_adapters)}
        t1_texts = {text_mc.row_name(s, r): (agents[s], agents[r]) for s, r in text_pairs(args.t1_text)}
        t1, t1_results = R.table_shared_context({f"{n} alone": a for n, a in agents.items()}, n=args.n,
                                                adapters=t1_adapters, rows_dir=args.out / "t1_rows", texts=t1_texts,
                                                controls=(list(t1_adapters) if args.t1_controls == "all"
                                                          else [c for c in args.t1_controls.split(",") if c]))
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "t1_shared_context.json").write_text(json.dumps(t1_results, indent=1))  # per question
        t1.write(args.out, "t1_shared_context")
        if t1_adapters:
            R.plot_size_accuracy(t1_results, args.out / "t1_size_accuracy.png")
        print(t1.markdown())
    if "hint" in tables:
        from lcf_jax.eval import hint_probe as H
        from lcf_jax.fileio import atomic_write_text
        adapters = {name: shared_context_adapter(path, agents) for name, path in _named_paths(args.hint_adapters)}
        table, results = H.table_hint_probe({f"{n} alone": a for n, a in agents.items()}, adapters,
                                            sets={s: args.hint_split for s in H.HINT_SETS}, n=args.n,
                                            rows_dir=args.out / "hint_rows")
        args.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out / f"{args.hint_stem}.json", json.dumps(results, indent=1))
        table.write(args.out, args.hint_stem)
        print(table.markdown())
    if "ablations" in tables:
        from lcf_jax.eval import ablations as A
        runs = {name: A.load_run(path, agents) for name, path in _named_paths(args.ablation_runs)}
        shared = {k: v for k, v in runs.items() if v["kind"] != "lcfx"}
        cross = {k: v for k, v in runs.items() if v["kind"] == "lcfx"}
        for stem, subset, fn in (("ablations_shared_context", shared, A.table_shared_context_ablations),
                                 ("ablations_cross_context", cross, A.table_cross_context_ablations)):
            if subset:
                table = fn(subset, n=args.ablation_n)
                table.write(args.out, stem)
                print(table.markdown())
    if "ladder" in tables:
        from lcf_jax.eval import ablations as A
        from lcf_jax.eval import ladder as LD
        from lcf_jax.data import sources
        run = A.load_run(args.ladder_run or str(shipped.SHIPPED_LCFX), agents)
        session = protocols.Session(receiver=run["receiver"], sharer=run["sharer"], adapter=(run["config"], run["params"]))
        split_of = {name: args.ladder_split or LD.LADDER_SETS[name] for name in args.ladder_sets.split(",")}
        tasks = {name: protocols.tasks_from_examples(sources.read(name, split, max_examples=args.n))
                 for name, split in split_of.items()}
        results = LD.run_ladder(session, tasks, rungs=[r.strip() for r in args.ladder_rungs.split(",") if r.strip()])
        for reuse in filter(None, args.ladder_reuse.split(",")):  # rungs kept from earlier runs on the same questions
            LD.keep_earlier_rungs(results, json.loads(Path(reuse).read_text()), {k: len(v) for k, v in tasks.items()})
        settings = {"n": args.n, "sets": split_of, "adapter": run["path"],
                    "adapter_step": run["step"], "max_new_tokens": session.max_new_tokens,
                    "max_context_tokens": session.max_context_tokens}
        table = LD.ladder_table(results, settings, notes=[
            f"{'/'.join(sorted(set(split_of.values())))} splits, first {args.n} questions per set; F1/EM with 95% bootstrap intervals (10,000 resamples); "
            "ΔF1 paired over the same questions.",
            "R3 (compression without translation) is built for window pooling only: the receiver reads the selected "
            "excerpt as text."])
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"{args.ladder_stem}.json").write_text(json.dumps(results, indent=1))  # answers first: never lost
        table.write(args.out, args.ladder_stem)
        print(table.markdown())
    if "t2" in tables:
        args.out.mkdir(parents=True, exist_ok=True)   # every finished row is written there as it comes
        cfg, params, meta = shipped.load_lcfx_adapter(args.adapter or shipped.SHIPPED_LCFX)
        extra = {name: shipped.load_lcfx_adapter(path) for name, path in _named_paths(args.t2_adapters)}
        sets = {s: R.T2_SETS[s] for s in args.sets.split(",")}
        budgets = tuple(int(b) for b in args.budgets.split(","))
        text_prompts = tuple(p.strip() for p in args.text_prompts.split(",") if p.strip())
        pairs = {"both": BUNDLED_PAIRS, "forward": BUNDLED_PAIRS[:1], "reverse": BUNDLED_PAIRS[1:]}[args.t2_directions]
        for s_name, r_name in pairs:
            has_adapter = (meta["sharer"]["name"], meta["receiver"]["name"]) == (s_name, r_name)
            session = protocols.Session(receiver=agents[r_name], sharer=agents[s_name],
                                        adapter=(cfg, params) if has_adapter else None)
            if args.t2_context_prompt:
                session.context_prompt = args.t2_context_prompt
                chosen = (f"context prompt `{session.context_prompt}` given on the command line "
                          "(--t2-context-prompt, as chosen on SQuAD dev by an earlier run).")
            else:
                dev_scores = R.select_context_prompt(session, n=args.n)
                chosen = (f"context prompt chosen on SQuAD dev (first {args.n}) by oracle F1: {dev_scores}; "
                          f"frozen: `{session.context_prompt}`.")
            direction = {name: (c, p) for name, (c, p, m) in extra.items()
                         if (m["sharer"]["name"], m["receiver"]["name"]) == (s_name, r_name)}
            table, results = R.table_cross_context(session, sets, n=args.n, budgets=budgets,
                                                   latency_repeats=args.latency_repeats, adapters=direction,
                                                   text_prompts=text_prompts, log=print,
                                                   progress_path=args.out / f"t2_{s_name}_to_{r_name}.partial.json")
            table.notes.append(chosen)
            if not has_adapter and not direction:
                table.notes.append("no LCF-X adapter is shipped for this direction: its LCF-X rows are absent.")
            stem = f"t2_{s_name}_to_{r_name}"
            table.write(args.out, stem)
            (args.out / f"{stem}.json").write_text(json.dumps(results, indent=1))
            print(table.markdown())
        all_results = []
        for s_name, r_name in BUNDLED_PAIRS:  # this run's directions and any earlier run's other one
            saved = args.out / f"t2_{s_name}_to_{r_name}.json"
            if saved.exists():
                all_results += [{**r, "set": f"{r['set']} ({r_name} recv.)"} for r in json.loads(saved.read_text())]
        R.plot_f1_latency(all_results, args.out / "f1_latency.png")


if __name__ == "__main__":
    main()
