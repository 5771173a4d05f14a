"""The sharer's own continuation of every shared-context training instruction, as training targets.

    python -m lcf_jax.train.sharer_targets --config=configs/X.py [--config.key=value ...] --out FILE \
        [--max-new-tokens 24] [--batch-size 32]

Trained on the data's completions, a fused receiver can lower its loss without the sharer: the instruction it reads
itself says most of what comes next, and what is left is format. Trained to continue as the *sharer* would, it can
predict what the receiver alone would not only through what the adapter carries: the sharer's reading of the same
instruction (sequence-level distillation, in text, so across tokenizers). The file holds one JSON line
{"id", "completion"} per training example of the config (`feed.shared_context_examples`); a run reads it with
`--config.data.targets_file=FILE`. The sharer reads the context exactly as training does (`{prompt}\\n`, its last
data.max_sharer_len tokens) and decodes greedily; a continuation keeps its first line of text (a base model runs on
into the next example). The contexts are unchanged, so a run's context store is the same.
"""
from __future__ import annotations

import json
import sys
import time
from typing import Optional, Sequence

import numpy as np

from lcf_jax.cli_errors import ArgumentParser, positive, run_main


def context_rows(examples: Sequence[dict], tokenizer, max_len: int) -> list[list[int]]:
    """Each example's context in sharer tokens, cut as training cuts it (`tokenize_pair(keep="end")`: BOS and the
    last tokens, at a token boundary)."""
    from lcf_jax.adapters.align import tokenize_pair
    from lcf_jax.data.shared_context import DEFAULT_CONTEXT_TEMPLATE

    return [list(tokenize_pair(DEFAULT_CONTEXT_TEMPLATE.format(prompt=e["prompt"]), tokenizer, tokenizer, max_len,
                               keep="end")[0]) for e in examples]


def continuations(params, config, tokenizer, rows: Sequence[Sequence[int]], *, max_new_tokens: int,
                  batch_size: int, log=print) -> list[str]:
    """Greedy continuations of token rows, batched by length (shortest first, so padding stays small)."""
    import jax
    import jax.numpy as jnp

    from lcf_jax.models.generate import first_line, generate, in_length_order, pad_batch

    t0 = time.time()

    def answer(batch):
        tokens, mask = pad_batch(batch, config.pad_token_id, multiple=16)
        if len(batch) < batch_size:   # one batch shape per padded length: pad the last batch with copies
            tokens = np.concatenate([tokens, np.repeat(tokens[-1:], batch_size - len(batch), 0)])
            mask = np.concatenate([mask, np.repeat(mask[-1:], batch_size - len(batch), 0)])
        gen = generate(params, jnp.asarray(tokens), jnp.asarray(mask), jax.random.PRNGKey(0), config=config,
                       max_new_tokens=max_new_tokens)
        toks, lens = np.asarray(gen.tokens), np.asarray(gen.lengths)
        return [first_line(tokenizer.decode(toks[j, :lens[j]], skip_special_tokens=True)) for j in range(len(batch))]

    return in_length_order(rows, batch_size, answer,
                           lambda done, total: log(f"sharer targets: {done}/{total} in {time.time() - t0:.0f} s"))


def _main(argv: list[str]) -> None:
    ap = ArgumentParser(prog="python -m lcf_jax.train.sharer_targets", description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="the JSON-lines file to write")
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--batch-size", type=int, default=32)
    args, rest = ap.parse_known_args(argv)
    positive("--max-new-tokens", args.max_new_tokens)
    positive("--batch-size", args.batch_size)
    import jax
    import jax.numpy as jnp

    from lcf_jax.fileio import atomic_write_text
    from lcf_jax.models import registry
    from lcf_jax.train import feed as feed_lib
    from lcf_jax.train.__main__ import parse_config

    cfg = parse_config(rest)
    examples = feed_lib.shared_context_examples(cfg)
    config, params = registry.load_model(cfg.model.sharer)
    params = jax.tree.map(jnp.asarray, params)
    tokenizer = registry.load_tokenizer(cfg.model.sharer)
    rows = context_rows(examples, tokenizer, cfg.data.max_sharer_len)
    texts = continuations(params, config, tokenizer, rows, max_new_tokens=args.max_new_tokens,
                          batch_size=args.batch_size, log=lambda m: print(m, flush=True))
    atomic_write_text(args.out, "".join(json.dumps({"id": e["id"], "completion": t}) + "\n"
                                        for e, t in zip(examples, texts)))
    empty = sum(not t for t in texts)
    print(f"wrote {len(texts)} sharer continuations of {cfg.model.sharer} to {args.out} ({empty} empty: their target "
          "is the end-of-sequence token alone)")


def main(argv: Optional[Sequence[str]] = None) -> None:
    run_main(_main, list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()
