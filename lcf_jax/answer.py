"""Answer your own questions: python -m lcf_jax.answer --protocol {alone,text,lcfx,oracle} --input rows.jsonl --output preds.jsonl

Each input row: {"id", "sharer_context", "question", "answers"?}. Each output row: {"id", "prediction",
"latency_s", "bytes_sent"}; F1/EM are printed when answers are given.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def read_rows(path: Path) -> list[dict]:
    if not path.exists():
        raise FileNotFoundError(f"input file {path} does not exist")
    rows = []
    for i, line in enumerate(path.read_text().splitlines()):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{i + 1} is not valid JSON: {e}") from e
        missing = [k for k in ("id", "sharer_context", "question") if k not in r]
        if missing:
            raise ValueError(f"{path}:{i + 1} lacks {missing}; each row needs id, sharer_context, question "
                             "(and optionally answers)")
        rows.append(r)
    if not rows:
        raise ValueError(f"{path} holds no rows")
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--protocol", choices=["alone", "text", "lcfx", "oracle"], required=True)
    ap.add_argument("--adapter", default=None, help="exported LCF-X adapter dir (default: the shipped one)")
    ap.add_argument("--input", required=True, type=Path)
    ap.add_argument("--output", required=True, type=Path)
    ap.add_argument("--sharer", default="smollm2-135m-instruct")
    ap.add_argument("--receiver", default="gemma3-270m")
    ap.add_argument("--budget", type=int, default=64, help="text protocol: message tokens")
    ap.add_argument("--max-new-tokens", type=int, default=16)
    args = ap.parse_args(argv)
    rows = read_rows(args.input)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from lcf_jax.comm import protocols, shipped
    from lcf_jax.comm.agents import Agent
    from lcf_jax.eval import metrics

    adapter = None
    if args.protocol == "lcfx":
        cfg, params, meta = shipped.load_lcfx_adapter(args.adapter or shipped.SHIPPED_LCFX)
        want = (meta["sharer"]["name"], meta["receiver"]["name"])
        if want != (args.sharer, args.receiver):
            raise ValueError(f"the adapter translates {want[0]} → {want[1]}, not {args.sharer} → {args.receiver}; "
                             "pass matching --sharer/--receiver or another --adapter")
        adapter = (cfg, params)
    receiver = Agent.load(args.receiver)
    sharer = Agent.load(args.sharer) if args.protocol in ("text", "lcfx") else None
    session = protocols.Session(receiver=receiver, sharer=sharer, adapter=adapter, max_new_tokens=args.max_new_tokens)
    tasks = protocols.tasks_from_examples(rows)
    kw = {"budget": args.budget} if args.protocol == "text" else {}
    t = time.perf_counter()
    replies = protocols.run_protocol(session, args.protocol, tasks, **kw)
    per_row = (time.perf_counter() - t) / len(replies)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.output.with_suffix(args.output.suffix + ".tmp")
    with tmp.open("w") as f:
        for r in replies:
            f.write(json.dumps({"id": r.id, "prediction": r.answer, "latency_s": per_row, "bytes_sent": r.bytes_sent}) + "\n")
    tmp.replace(args.output)
    print(f"wrote {len(replies)} predictions to {args.output} ({per_row:.2f} s per row, batched, incl. compilation)")
    if all(t.answers for t in tasks):
        s = metrics.squad_scores([r.answer for r in replies], [list(t.answers) for t in tasks])
        print(f"F1 {s['f1']:.1f}  EM {s['em']:.1f}  (n={s['n']})")


if __name__ == "__main__":
    main()
