"""Shared-context training (LCF, C2C), same run: supervised tokens per second of the 150-step T1 recipe's step
against the step that reads both models' context caches from a store (`train/context_store.py`).

    .venv/bin/python benchmarks/bench_shared_context.py [--direction forward|reverse] [--kind lcf|c2c]
        [--batches N] [--pair bundled|tiny]

Both steps train on the same instruction examples (`instruct/t0` + `instruct/gpteacher`, a seeded draw), real
batches of 8 from each recipe's own feed. The T1 recipe (`configs/*_lcf.py`, `*_c2c.py`): contexts cut to 256
sharer tokens, both caches computed by the step. The stored recipe (`configs/*_lcf_instruct30k.py`): contexts cut
to 128 sharer tokens, both caches read from a bfloat16 store built before the clock starts; the store's build is
timed too, and the ratio is also given with it charged to a single pass over the data (a store read by two runs,
LCF and C2C, halves that charge). A supervised token is a target token the loss reads. Each batch shape is
compiled in a warm-up pass; the timed pass runs every batch once more.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

PAIRS = {"bundled": ("smollm2-135m-instruct", "gemma3-270m"), "tiny": ("tiny-llama", "tiny-gemma3")}


def _batches(cfg, tokenizers, examples, n: int):
    from lcf_jax.data import shared_context
    d = cfg.data
    f = shared_context.SharedContextFeatures(*tokenizers, max_context_len=d.max_sharer_len,
                                             max_target_len=d.max_target_len)
    toks = f.tokenize_many(examples)
    feed = shared_context.SharedContextBatches(f, toks, d.batch_size, d.seed)
    return feed, [next(feed) for _ in range(n)]


def _time_steps(run, batches) -> tuple[float, float]:
    """(seconds for one pass over `batches` after a compiling pass, supervised tokens in it)."""
    import jax
    import numpy as np

    from lcf_jax.train import sharding
    from lcf_jax.train.step import init_state, jit_train_step
    state = sharding.put_global(init_state(run.params, run.optimizer, 0), run.state_sh)
    frozen = sharding.put_global(run.frozen, run.frozen_sh)
    step_fn = jit_train_step(run.setup, run.optimizer, run.mesh, run.state_sh, run.frozen_sh,
                             sharding.batch_sharding(batches[0], run.mesh))
    tokens = 0.0
    for timed in (False, True):
        t = time.perf_counter()
        for b in batches:
            state, m = step_fn(state, frozen, jax.tree.map(np.asarray, b))
            if timed:
                tokens += float(m["target_tokens"])
        jax.block_until_ready(state)
    return time.perf_counter() - t, tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--direction", choices=["forward", "reverse"], default="forward")
    ap.add_argument("--kind", choices=["lcf", "c2c"], default="lcf")
    ap.add_argument("--batches", type=int, default=6)
    ap.add_argument("--pair", choices=sorted(PAIRS), default="bundled")
    args = ap.parse_args()

    import numpy as np

    from lcf_jax.data import tfds_builders
    from lcf_jax.models import registry
    from lcf_jax.train import config as config_lib, context_store, run_setup

    s, r = PAIRS[args.pair] if args.direction == "forward" else PAIRS[args.pair][::-1]
    base = config_lib.pair_config(s, r, args.kind, mesh={"data": 1, "model": 1, "num_devices": 1})
    fast = config_lib.pair_config(s, r, args.kind, data={"max_sharer_len": 128, "context_store_dtype": "bfloat16"},
                                  train={"sharer_cache": "stored"}, mesh={"data": 1, "model": 1, "num_devices": 1})
    tokenizers = (registry.load_tokenizer(s), registry.load_tokenizer(r))
    pool = []
    for name in base.data.train_sets:
        tfds_builders.build(name, None, None)
        pool.extend(tfds_builders.load(name, "train", None, None))
    pick = np.random.RandomState(0).permutation(len(pool))[: 64 * args.batches]
    examples = [pool[i] for i in sorted(pick)]

    run = run_setup.build(base)
    _, base_batches = _batches(base, tokenizers, examples, args.batches)
    base_s, base_tok = _time_steps(run, base_batches)

    fast_run = run_setup.build(fast)
    feed, _ = _batches(fast, tokenizers, examples, 0)
    with tempfile.TemporaryDirectory() as root:
        t = time.perf_counter()
        store = context_store.build(root, feed.features, feed.tokenized, fast_run.setup, fast_run.frozen,
                                    dtype="bfloat16", log=lambda m: None)
        build_s, stored_n = time.perf_counter() - t, len(feed.tokenized)
        stored = context_store.StoredContextBatches(feed, store)
        fast_batches = [next(stored) for _ in range(args.batches)]
        fast_s, fast_tok = _time_steps(fast_run, fast_batches)
    per_example_build = build_s / stored_n   # includes the store's compiles: an upper bound
    n_fast = args.batches * fast.data.batch_size
    base_rate, fast_rate = base_tok / base_s, fast_tok / fast_s
    with_build = fast_tok / (fast_s + per_example_build * n_fast)
    print(f"# bench_shared_context: {args.kind}, {s} -> {r}, batch {base.data.batch_size}, {args.batches} real "
          f"batches per recipe, {os.cpu_count()} CPU cores")
    print("| step | s / batch | supervised tokens / batch | supervised tokens/s | ratio |")
    print("|---|---|---|---|---|")
    print(f"| T1 recipe: contexts <= 256, both caches computed by the step | {base_s / args.batches:.2f} | "
          f"{base_tok / args.batches:.1f} | {base_rate:.1f} | 1.00x |")
    print(f"| stored caches: contexts <= 128, both caches read from the store | {fast_s / args.batches:.2f} | "
          f"{fast_tok / args.batches:.1f} | {fast_rate:.1f} | {fast_rate / base_rate:.2f}x |")
    print(f"| the same, the store's build charged to one pass | | | {with_build:.1f} | {with_build / base_rate:.2f}x |")
    print(f"store build: {stored_n} examples in {build_s:.1f} s ({stored_n / build_s:.2f} examples/s, compiles "
          "included)")


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    main()
