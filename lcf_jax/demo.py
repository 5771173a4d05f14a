"""The main job: LCF-X against text between the bundled models (`python -m lcf_jax.demo`).

SmolLM2-135M-Instruct (the sharer) reads a passage; Gemma-3-270M (the receiver) gets only the
question and answers (a) through LCF-X, the shipped adapter's m x r latent message, and (b) through a text
message the sharer writes. Prints both answers with their time and bytes, then F1/EM on
SQuAD dev questions (dev split: articles 0-23).
"""
from __future__ import annotations

import argparse
import os
import time

from lcf_jax.cli_errors import ArgumentParser, positive, run_main
from lcf_jax.comm.shipped import load_lcfx_adapter


def main(argv=None) -> None:
    run_main(_main, argv)


def build_parser() -> ArgumentParser:
    ap = ArgumentParser(prog="python -m lcf_jax.demo", description=__doc__,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=50, help="dev questions for the F1/EM table")
    ap.add_argument("--budget", type=int, default=64, help="text message budget (tokens)")
    ap.add_argument("--adapter", default=None, help="exported LCF-X adapter dir (default: the shipped one)")
    return ap


def _main(argv) -> None:
    args = build_parser().parse_args(argv)
    positive("--n", args.n)
    positive("--budget", args.budget)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from lcf_jax.comm import protocols
    from lcf_jax.comm.agents import Agent
    from lcf_jax.data import sources
    from lcf_jax.eval import metrics

    cfg, params, meta = load_lcfx_adapter(args.adapter)
    sharer = Agent.load(meta["sharer"]["name"])
    receiver = Agent.load(meta["receiver"]["name"])
    session = protocols.Session(receiver=receiver, sharer=sharer, adapter=(cfg, params))
    tasks = protocols.tasks_from_examples(sources.read("squad", "dev", max_examples=max(args.n, 2)))
    task = tasks[0]
    print(f"passage (sharer only): {task.sharer_context[:300]}...\nquestion (receiver): {task.question}\n"
          f"reference answers: {list(task.answers)}\n")
    for label, proto, kw in [("LCF-X", "lcfx", {}), (f"text (B={args.budget})", "text", {"budget": args.budget})]:
        [reply] = protocols.run_protocol(session, proto, [task], **kw)
        lat = session.time_one(proto, task, repeats=3, **kw)
        phases = ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in lat.items())
        print(f"[{label}] answer: {reply.answer!r}\n    {sum(lat.values()):.2f} s ({phases}); {reply.bytes_sent} bytes sent")
    print(f"\nSQuAD dev, first {args.n} questions (F1 / EM, %):")
    print("| protocol | F1 | EM | seconds |\n|---|---|---|---|")
    for label, proto, kw in [("receiver alone", "alone", {}), (f"text (B={args.budget})", "text", {"budget": args.budget}),
                             ("LCF-X", "lcfx", {})]:
        t = time.perf_counter()
        replies = protocols.run_protocol(session, proto, tasks[:args.n], **kw)
        s = metrics.squad_scores([r.answer for r in replies], [list(x.answers) for x in tasks[:args.n]])
        print(f"| {label} | {s['f1']:.1f} | {s['em']:.1f} | {time.perf_counter() - t:.0f} |")


if __name__ == "__main__":
    main()
