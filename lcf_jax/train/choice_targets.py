"""The sharer alone's scores of the choices of T0 multiple-choice questions: the teacher of choice distillation.

    python -m lcf_jax.train.choice_targets --config=configs/X.py [--config.key=value ...] --out FILE \
        [--per-template 40] [--max-choices 4] [--max-chars 600] [--batch-size 8] [--teacher sharer|gold]

Trained on instruction completions, a fused receiver learns what it can predict from the instruction it reads
itself (the T1 controls say so). T1 asks which choice is right, and the sharer's answer is what it could add. Each
question of `data.choice_questions` is read as T1 reads its questions (`MC_PROMPT`), and the sharer scores every
choice (each prompt read once, `mc_logliks_read_once`), length-normalised as T1 ranks them. A run with
`--config.data.choice_file=FILE` trains the fused receiver's choice distribution towards the sharer's
(`objective.choice_distill_losses`), which the receiver can match beyond its own prior only through what the
adapter carries. One JSON line per question:
{"id", "question", "choices", "gold", "source", "teacher": [mean log-probability of each choice's tokens]}.

--teacher gold writes the answer key instead (`choice_questions.gold_scores`: the gold choice's one-hot; no model
runs, seconds): a teacher that knows the answer, which the receiver can match beyond its own prior only where the
sharer's cache says which choice it is.
"""
from __future__ import annotations

import json
import sys
import time
from typing import Optional, Sequence

import numpy as np

from lcf_jax.cli_errors import ArgumentParser, positive, run_main


def mc_logliks_read_once(agent, questions: Sequence[tuple[str, Sequence[str]]]) -> list[list[float]]:
    """T1's scores (`eval.tables.mc_loglik`) of several (question, choices) at once: each question's prompt read once
    and its choices continuing its cache (the same to float rounding; `tests/train/test_choice_distill.py`), for the
    thousands of questions the teacher scores. Every question gets as many rows as the one with most choices."""
    import jax.numpy as jnp

    from lcf_jax.data.shared_context import MC_PROMPT
    from lcf_jax.models.scoring import continuation_logprobs_read_once
    prompts = [agent.encode(MC_PROMPT.format(question=q)) for q, _ in questions]
    conts = [[agent.encode(" " + c, special=False) for c in choices] for _, choices in questions]
    group = max(len(c) for c in conts)
    tc = -(-max(len(p) for p in prompts) // 32) * 32
    width = -(-max(max(len(x) for x in c) for c in conts) // 8) * 8
    pad = agent.config.pad_token_id
    ctx, ctx_mask = np.full((len(prompts), tc), pad, np.int32), np.zeros((len(prompts), tc), bool)
    toks, mask = np.full((len(prompts) * group, width), pad, np.int32), np.zeros((len(prompts) * group, width), bool)
    for i, (p, c) in enumerate(zip(prompts, conts)):
        ctx[i, tc - len(p):], ctx_mask[i, tc - len(p):] = p, True
        for j, x in enumerate(c):
            toks[i * group + j, :len(x)], mask[i * group + j, :len(x)] = x, True
    logp = np.asarray(continuation_logprobs_read_once(
        agent.params, jnp.asarray(ctx), jnp.asarray(ctx_mask), jnp.asarray(toks), jnp.asarray(mask),
        config=agent.config)).sum(axis=1)
    return [[float(logp[i * group + j]) for j in range(len(c))] for i, c in enumerate(conts)]


def build_parser() -> ArgumentParser:
    ap = ArgumentParser(prog="python -m lcf_jax.train.choice_targets", description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True, help="the training config (its sharer, data_dir and data.seed); "
                    "--config.key=value overrides follow it")
    ap.add_argument("--out", required=True, help="the JSON-lines file to write")
    ap.add_argument("--per-template", type=int, default=40)
    ap.add_argument("--max-choices", type=int, default=4)
    ap.add_argument("--max-chars", type=int, default=600)
    ap.add_argument("--batch-size", type=int, default=8, help="questions per forward")
    ap.add_argument("--teacher", choices=("sharer", "gold"), default="sharer",
                    help="sharer: the sharer alone's scores; gold: the answer key (no model runs)")
    return ap


def _main(argv: list[str]) -> None:
    args, rest = build_parser().parse_known_args(argv)
    for name in ("per_template", "max_choices", "max_chars", "batch_size"):
        positive("--" + name.replace("_", "-"), getattr(args, name))
    from lcf_jax.comm.agents import Agent
    from lcf_jax.data.choice_questions import gold_scores, t0_choice_questions
    from lcf_jax.fileio import atomic_write_text
    from lcf_jax.train.__main__ import parse_config
    from lcf_jax.train.run_setup import enable_compilation_cache

    cfg = parse_config([f"--config={args.config}"] + rest)
    stats: dict = {}
    questions = t0_choice_questions(cfg.data.data_dir or None, per_template=args.per_template,
                                    max_choices=args.max_choices, max_chars=args.max_chars, seed=cfg.data.seed,
                                    stats=stats)
    print(f"{len(questions)} questions from {stats.get('templates', 0)} T0 templates "
          f"({stats.get('excluded_templates', 0)} templates of evaluated sets left out)", flush=True)
    if args.teacher == "gold":
        atomic_write_text(args.out, "".join(json.dumps(dict(q, teacher=gold_scores(q))) + "\n" for q in questions))
        print(f"wrote the answer key of {len(questions)} questions to {args.out}")
        return
    enable_compilation_cache()
    agent = Agent.load(cfg.model.sharer)
    t0, scores = time.time(), [None] * len(questions)
    order = sorted(range(len(questions)), key=lambda i: len(questions[i]["question"]))   # similar lengths together
    for start in range(0, len(order), args.batch_size):
        chunk = order[start:start + args.batch_size]
        chunk = chunk + chunk[:1] * (args.batch_size - len(chunk))   # one batch shape per length
        rows = [(questions[i]["question"], questions[i]["choices"]) for i in chunk]
        # every question as max_choices rows (the first choice repeated): fewer batch shapes, fewer compiles
        padded = [(q, c + [c[0]] * (args.max_choices - len(c))) for q, c in rows]
        for i, ll in zip(chunk, mc_logliks_read_once(agent, padded)):
            c = questions[i]["choices"]
            counts = [max(len(agent.encode(" " + x, special=False)), 1) for x in c]
            scores[i] = [x / n for x, n in zip(ll[:len(c)], counts)]
        done = min(start + args.batch_size, len(order))
        if done // 200 != (done - args.batch_size) // 200:
            print(f"choice targets: {done}/{len(questions)} in {time.time() - t0:.0f} s", flush=True)
    lines = [json.dumps(dict(q, teacher=t)) + "\n" for q, t in zip(questions, scores)]
    atomic_write_text(args.out, "".join(lines))
    print(f"wrote {cfg.model.sharer}'s scores of {len(questions)} questions to {args.out} in {time.time() - t0:.0f} s")


def main(argv: Optional[Sequence[str]] = None) -> None:
    run_main(_main, list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()
