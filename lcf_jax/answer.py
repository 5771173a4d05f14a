"""Answer your own questions: python -m lcf_jax.answer --protocol {alone,text,lcfx,oracle} --input rows.jsonl --output preds.jsonl

Each input row: {"id", "sharer_context", "question", "answers"?} (id a string or integer, the others strings,
answers a list of strings). Each output row: {"id", "prediction", "latency_s", "bytes_sent"}; F1/EM are printed
when answers are given. Passages longer than --max-context-tokens are cut, and the run says how many.

LCF-X in two processes (the message file carries the adapter's identity; the receiver refuses another's):
  sharer:   python -m lcf_jax.answer --protocol lcfx --input rows.jsonl --save-message msg.lcfx [--message-dtype int8]
  receiver: python -m lcf_jax.answer --protocol lcfx --input rows.jsonl --message msg.lcfx --output preds.jsonl
(the receiver's rows need only id and question, in the sharer's order; the sharer's only id and sharer_context).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from lcf_jax.cli_errors import ArgumentParser, UserError, positive, run_main
from lcf_jax.fileio import atomic_write_text

PROTOCOLS = ("alone", "text", "lcfx", "oracle")
MESSAGE_DTYPES = ("float32", "bfloat16", "float16", "int8")
DEFAULT_CONTEXT_TOKENS = 256  # protocols.Session.max_context_tokens
PROMPT_ROOM = 256  # tokens kept free for the prompt template and the question next to a passage


class RowError(UserError, ValueError):
    """An input row the command cannot use; the message names the file, line and row id."""


# ------------------------------------------------------------------------------------------------
# Input rows
# ------------------------------------------------------------------------------------------------
def _check_row(r, where: str, required: Sequence[str]) -> None:
    if not isinstance(r, dict):
        raise RowError(f"{where} is a JSON {type(r).__name__}, not an object with id, sharer_context, question")
    missing = [k for k in required if k not in r]
    if missing:
        raise RowError(f"{where} lacks {missing}; each row needs {', '.join(required)} (and optionally answers)")
    if "id" in r and (isinstance(r["id"], bool) or not isinstance(r["id"], (str, int)) or str(r["id"]).strip() == ""):
        raise RowError(f"{where}: id must be a non-empty string or an integer, got {r['id']!r}")
    for key in ("sharer_context", "question"):
        if key not in r:
            continue
        if not isinstance(r[key], str):
            raise RowError(f"{where}: {key} must be a string, got {type(r[key]).__name__} {r[key]!r:.60}")
        if not r[key].strip():
            raise RowError(f"{where}: {key} is empty")
    if "answers" in r and not (isinstance(r["answers"], list) and all(isinstance(a, str) for a in r["answers"])):
        raise RowError(f"{where}: answers must be a list of strings, got {r['answers']!r:.60}")


def read_rows(path: Path, required: Sequence[str] = ("id", "sharer_context", "question")) -> list[dict]:
    """The rows of a JSONL file, every one checked (types, empty fields, repeated ids) before any model loads."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"input file {path} does not exist")
    if not path.is_file():
        raise RowError(f"input {path} is not a file")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise RowError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start}); save it as UTF-8 JSON lines") from e
    rows, seen = [], {}
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
        except json.JSONDecodeError as e:
            raise RowError(f"{path}:{i + 1} is not valid JSON: {e}") from e
        where = f"{path}:{i + 1}" + (f" (id {r['id']!r})" if isinstance(r, dict) and "id" in r else "")
        _check_row(r, where, required)
        key = str(r.get("id", len(rows)))
        if key in seen:
            raise RowError(f"{where} repeats the id of line {seen[key]}; ids must be unique")
        seen[key] = i + 1
        rows.append(r)
    if not rows:
        raise RowError(f"{path} holds no rows")
    return rows


def tasks_from_rows(rows: Sequence[dict]):
    from lcf_jax.comm.protocols import QATask
    return [QATask(str(r.get("id", i)), r.get("sharer_context", ""), r.get("question", ""), tuple(r.get("answers") or ()))
            for i, r in enumerate(rows)]


# ------------------------------------------------------------------------------------------------
# Limits: checked against the models' configs before their weights load
# ------------------------------------------------------------------------------------------------
def passage_reader(protocol: str) -> Optional[str]:
    """Which model reads the passage: the sharer (text, lcfx), the receiver (oracle) or none (alone)."""
    return {"alone": None, "oracle": "receiver"}.get(protocol, "sharer")


def context_limit(protocol: str, sharer_cfg, receiver_cfg, *, max_new_tokens: int, budget: int) -> Optional[int]:
    """The most passage tokens the model that reads the passage can take (with room for the prompt and what
    it writes), or None when no model reads it."""
    reader = passage_reader(protocol)
    if reader is None:
        return None
    cfg = sharer_cfg if reader == "sharer" else receiver_cfg
    writes = {"text": budget, "oracle": max_new_tokens}.get(protocol, 0)
    room = 0 if protocol == "lcfx" else PROMPT_ROOM  # LCF-X: the sharer reads the passage alone
    return cfg.max_position_embeddings - writes - room


def cut_passages(agent, tasks, limit: int, special_prefix: int = 0) -> tuple[list[tuple[str, int]], int]:
    """([(id, tokens)] of the passages longer than what is sent, tokens sent per passage)."""
    room = limit - special_prefix
    long = [(t.id, n) for t in tasks if (n := len(agent.encode(t.sharer_context, special=False))) > room]
    return long, room


def cut_report(long: list[tuple[str, int]], n: int, room: int, who: str, limit: Optional[int]) -> str:
    ids = ", ".join(repr(i) for i, _ in long[:5]) + (", ..." if len(long) > 5 else "")
    more = f" (at most {limit})" if limit is not None else ""
    return (f"warning: {len(long)} of {n} passages are longer than {room} {who} tokens and were cut to {room} "
            f"(longest {max(k for _, k in long)} tokens; rows {ids}); the rest was never sent: raise "
            f"--max-context-tokens{more} to send more")


# ------------------------------------------------------------------------------------------------
# LCF-X in two halves
# ------------------------------------------------------------------------------------------------
def _chunks(items, size: int):
    return [items[i:i + size] for i in range(0, len(items), size)]


def sharer_half(session, tasks, identity, dtype: str = "float32"):
    """The sharer's side: each row's passage -> one message row (a `wire.Message`), in the batches
    `Session.lcfx` uses, so the message equals the one-process run's."""
    import numpy as np

    from lcf_jax.comm import lcfx_channel, wire
    cfg, params = session.adapter
    latents = []
    for ch in _chunks(list(tasks), session.batch_size):
        prompts = session.question_rows(ch) if cfg.conditioned else None
        latents.append(np.asarray(lcfx_channel.send(session.sharer, session.receiver, params, cfg,
                                                    session.sharer_rows([t.sharer_context for t in ch]), prompts)))
    return wire.from_latents(np.concatenate(latents), identity, [t.id for t in tasks], dtype)


def receiver_half(session, tasks, message):
    """The receiver's side: its questions + the sharer's message -> one Reply per row."""
    import jax.numpy as jnp

    from lcf_jax.comm import lcfx_channel
    from lcf_jax.comm.agents import generate_answers
    from lcf_jax.comm.protocols import Reply
    cfg, params = session.adapter
    latents, nbytes, out = message.float32(), message.row_nbytes(), []
    for i, ch in enumerate(_chunks(list(tasks), session.batch_size)):
        lat = jnp.asarray(latents[i * session.batch_size:i * session.batch_size + len(ch)])
        prompts = session.question_rows(ch)
        if getattr(cfg, "injection", "extra") == "positioned":
            answers = lcfx_channel.answer_positioned(session.receiver, params, cfg, lat, prompts,
                                                     max_new_tokens=session.max_new_tokens)
        else:
            extra = lcfx_channel.receive(session.receiver, params, cfg, lat)
            answers = generate_answers(session.receiver, prompts, max_new_tokens=session.max_new_tokens, extra_kv=extra)
        out += [Reply(t.id, a, nbytes) for t, a in zip(ch, answers)]
    return out


def check_message_rows(message, tasks, where: str) -> None:
    ids = [t.id for t in tasks]
    if list(message.ids) != ids:
        raise UserError(f"{where} carries rows {list(message.ids)[:5]}{'...' if len(message.ids) > 5 else ''} but "
                        f"--input has {ids[:5]}{'...' if len(ids) > 5 else ''}: give the receiver the sharer's rows, "
                        "in the same order")


# ------------------------------------------------------------------------------------------------
# The command line
# ------------------------------------------------------------------------------------------------
def build_parser() -> ArgumentParser:
    ap = ArgumentParser(prog="python -m lcf_jax.answer", description=__doc__,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--protocol", choices=PROTOCOLS, required=True)
    ap.add_argument("--adapter", default=None, help="exported LCF-X adapter dir (default: the shipped one)")
    ap.add_argument("--input", required=True, type=Path)
    ap.add_argument("--output", type=Path, help="predictions (JSONL); not with --save-message")
    ap.add_argument("--sharer", default="smollm2-135m-instruct")
    ap.add_argument("--receiver", default="gemma3-270m")
    ap.add_argument("--budget", type=int, default=64, help="text protocol: message tokens")
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--max-context-tokens", type=int, default=None,
                    help=f"passage tokens sent (default {DEFAULT_CONTEXT_TOKENS}); longer passages are cut and reported")
    ap.add_argument("--save-message", type=Path, default=None,
                    help="lcfx: run the sharer's half only and write the messages to this file")
    ap.add_argument("--message", type=Path, default=None,
                    help="lcfx: run the receiver's half only, reading the messages the sharer's half wrote")
    ap.add_argument("--message-dtype", choices=MESSAGE_DTYPES, default=None,
                    help="lcfx: message dtype on the wire (default float32; int8 has a per-slot scale)")
    return ap


def check_args(args) -> None:
    """Everything about the command line itself, before any file or model is read."""
    from lcf_jax.models import registry
    positive("--budget", args.budget)
    positive("--max-new-tokens", args.max_new_tokens)
    positive("--max-context-tokens", args.max_context_tokens)
    split = [f for f, v in (("--save-message", args.save_message), ("--message", args.message)) if v is not None]
    if split and args.protocol != "lcfx":
        raise UserError(f"{split[0]} splits LCF-X into two processes: it needs --protocol lcfx")
    if len(split) == 2:
        raise UserError("--save-message runs the sharer's half and --message the receiver's: give one of them")
    if args.message_dtype is not None and (args.protocol != "lcfx" or args.message is not None):
        raise UserError("--message-dtype sets the dtype of the LCF-X message the sharer sends: it needs --protocol lcfx "
                        "and not --message (a saved message keeps its own dtype)")
    if args.save_message is not None:
        if args.output is not None:
            raise UserError("--save-message runs only the sharer's half (no answers): drop --output, or drop "
                            "--save-message to answer in one process")
        if args.save_message.is_dir():
            raise UserError(f"--save-message {args.save_message} is a directory; give a file name")
    elif args.output is None:
        raise UserError("--output is required (the predictions file)")
    for flag, path in (("--output", args.output), ("--save-message", args.save_message)):
        if path is not None and path.is_dir():
            raise UserError(f"{flag} {path} is a directory; give a file name")
        if path is not None and path.resolve() == args.input.resolve():
            raise UserError(f"{flag} {path} is the input file: it would be overwritten")
    for role in ("sharer", "receiver"):
        name = getattr(args, role)
        if name not in registry.BUNDLED:
            raise UserError(f"--{role} {name!r} is not a bundled model; bundled: {sorted(registry.BUNDLED)}")
    limit = context_limit(args.protocol, registry.PRESET_CONFIGS[args.sharer], registry.PRESET_CONFIGS[args.receiver],
                          max_new_tokens=args.max_new_tokens, budget=args.budget)
    if limit is not None and args.max_context_tokens is not None and args.max_context_tokens > limit:
        reader = getattr(args, passage_reader(args.protocol))
        raise UserError(f"--max-context-tokens {args.max_context_tokens} is more than {reader} can read with protocol "
                        f"{args.protocol}: at most {limit} (its {registry.PRESET_CONFIGS[reader].max_position_embeddings} "
                        "positions, less room for the prompt and the answer)")


def _required_fields(args) -> tuple[str, ...]:
    if args.message is not None:
        return ("id", "question")  # the receiver never sees the passage
    if args.save_message is not None:
        return ("id", "sharer_context")  # the question too when the adapter is conditioned (checked below)
    return ("id", "question") if args.protocol == "alone" else ("id", "sharer_context", "question")


def _write_predictions(path: Path, replies, per_row: float) -> None:
    atomic_write_text(path, "".join(json.dumps({"id": r.id, "prediction": r.answer, "latency_s": per_row,
                                                "bytes_sent": r.bytes_sent}) + "\n" for r in replies))


def _main(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    check_args(args)
    rows = read_rows(args.input, _required_fields(args))
    tasks = tasks_from_rows(rows)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from lcf_jax.comm.shipped import load_lcfx_adapter
    from lcf_jax.comm import wire

    adapter, identity, message = None, None, None
    if args.protocol == "lcfx":
        cfg, params, meta = load_lcfx_adapter(args.adapter)
        want = (meta["sharer"]["name"], meta["receiver"]["name"])
        if want != (args.sharer, args.receiver):
            raise UserError(f"the adapter translates {want[0]} -> {want[1]}, not {args.sharer} -> {args.receiver}; "
                            "pass matching --sharer/--receiver or another --adapter")
        adapter, identity = (cfg, params), wire.AdapterIdentity.of(cfg, params, *want)
        trained = (meta.get("data") or {}).get("max_sharer_len")
        if args.max_context_tokens and trained and args.max_context_tokens > trained:
            print(f"warning: the adapter was trained on passages of at most {trained} sharer tokens; longer ones "
                  f"(--max-context-tokens {args.max_context_tokens}) are outside what it learned", file=sys.stderr)
        if args.save_message is not None and cfg.conditioned:
            no_q = [t.id for t in tasks if not t.question]
            if no_q:
                raise UserError(f"this adapter is conditioned on the receiver's question: rows {no_q[:5]} of "
                                f"{args.input} lack a question")
        if args.message is not None:
            message = wire.load(args.message, expect=identity)
            check_message_rows(message, tasks, f"message {args.message}")
    _run(args, tasks, adapter, identity, message)


def _run(args, tasks, adapter, identity, message) -> None:
    from lcf_jax.comm import protocols, wire
    from lcf_jax.comm.agents import Agent
    from lcf_jax.eval import metrics
    from lcf_jax.models import registry

    reader = passage_reader(args.protocol) if message is None else None
    needs_receiver = args.save_message is None or (adapter is not None and adapter[0].conditioned)
    receiver = (Agent.load(args.receiver) if needs_receiver
                else Agent(args.receiver, registry.PRESET_CONFIGS[args.receiver], None, None))  # its config is enough
    sharer = Agent.load(args.sharer) if args.protocol in ("text", "lcfx") and message is None else None
    session = protocols.Session(receiver=receiver, sharer=sharer, adapter=adapter, max_new_tokens=args.max_new_tokens,
                                max_context_tokens=args.max_context_tokens or DEFAULT_CONTEXT_TOKENS)
    if reader is not None:
        agent = session.sharer if reader == "sharer" else session.receiver
        prefix = len(agent.encode("", special=True)) if args.protocol == "lcfx" else 0
        long, room = cut_passages(agent, tasks, session.max_context_tokens, prefix)
        if long:
            limit = context_limit(args.protocol, registry.PRESET_CONFIGS[args.sharer],
                                  registry.PRESET_CONFIGS[args.receiver], max_new_tokens=args.max_new_tokens,
                                  budget=args.budget)
            print(cut_report(long, len(tasks), room, getattr(args, reader), limit), file=sys.stderr, flush=True)
    t = time.perf_counter()
    if args.save_message is not None:
        msg = sharer_half(session, tasks, identity, args.message_dtype or "float32")
        wire.save(args.save_message, msg)
        print(f"wrote {len(tasks)} LCF-X messages ({msg.dtype}, {msg.row_nbytes()} bytes each) to {args.save_message} "
              f"({time.perf_counter() - t:.2f} s); answer with --message {args.save_message} on the receiver's side")
        return
    if message is not None:
        replies = receiver_half(session, tasks, message)
    else:
        kw = {"budget": args.budget} if args.protocol == "text" else {}
        if args.protocol == "lcfx" and args.message_dtype not in (None, "float32"):
            kw["quantize"] = args.message_dtype
        replies = protocols.run_protocol(session, args.protocol, tasks, **kw)
    per_row = (time.perf_counter() - t) / len(replies)
    _write_predictions(args.output, replies, per_row)
    print(f"wrote {len(replies)} predictions to {args.output} ({per_row:.2f} s per row, batched, incl. compilation)")
    if all(t.answers for t in tasks):
        s = metrics.squad_scores([r.answer for r in replies], [list(t.answers) for t in tasks])
        print(f"F1 {s['f1']:.1f}  EM {s['em']:.1f}  (n={s['n']})")


def main(argv=None) -> None:
    run_main(_main, argv)


if __name__ == "__main__":
    main()
