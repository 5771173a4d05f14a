"""Supervised tokens per second, same run: the QA step of the first LCF-X recipe against the token-translation
step of the window recipe (`configs/smollm2_to_gemma3_lcfx_window.py`, stage 1).

    .venv/bin/python benchmarks/bench_supervision.py [--pair bundled|tiny] [--steps N]

A supervised token is one whose prediction the loss reads: an answer token of the QA objective (cross-entropy
through the receiver, at most `max_target_len` per row), a passage token of the translation (its receiver input
vector). Batches are synthetic with the real models' shapes and every position supervised, so both counts are
upper bounds of what real batches give; timing covers `steps` jitted steps after a compiling one.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

PAIRS = {"bundled": ("smollm2-135m-instruct", "gemma3-270m"), "tiny": ("tiny-llama", "tiny-gemma3")}


def _time(fn, steps: int) -> float:
    import jax
    jax.block_until_ready(fn())
    t = time.perf_counter()
    for _ in range(steps):
        out = fn()
    jax.block_until_ready(out)
    return (time.perf_counter() - t) / steps


def qa_step(pair: str, steps: int, batch: int, sharer_len: int, target_len: int) -> tuple[float, int]:
    """(seconds per step, supervised tokens per step) of the QA objective (the first recipe's stage 2)."""
    from lcf_jax.train import config as config_lib, run_setup
    from lcf_jax.train.feed import SyntheticBatches
    from lcf_jax.train.step import init_state, jit_train_step
    from lcf_jax.train import sharding

    s, r = PAIRS[pair]
    cfg = config_lib.pair_config(s, r, "lcfx", data={"task": "synthetic", "batch_size": batch},
                                 mesh={"data": 1, "model": 1, "num_devices": 1})
    b = run_setup.build(cfg)
    feed = SyntheticBatches(False, b.setup.sharer, b.setup.receiver, batch, 0, sharer_len=sharer_len,
                            prompt_len=32, target_len=target_len)
    bt = next(feed)
    batch_sh = sharding.batch_sharding(bt, b.mesh)
    step_fn = jit_train_step(b.setup, b.optimizer, b.mesh, b.state_sh, b.frozen_sh, batch_sh)
    state = [sharding.put_global(init_state(b.params, b.optimizer, 0), b.state_sh)]
    frozen, put = sharding.put_global(b.frozen, b.frozen_sh), sharding.put_global(bt, batch_sh)

    def one():
        state[0], m = step_fn(state[0], frozen, put)
        return m
    return _time(one, steps), batch * target_len


def translation_step(pair: str, steps: int, batch: int, sharer_len: int) -> tuple[float, int]:
    """(seconds per step, supervised tokens per step) of the token translation (the window recipe's stage 1)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from lcf_jax.adapters import lcfx
    from lcf_jax.data.batches import SharerRows, TokenTargetBatch
    from lcf_jax.models import registry
    from lcf_jax.train import phase, token_translation
    from lcf_jax.train.objective import Setup

    s, r = PAIRS[pair]
    s_cfg, s_params = registry.load_any(s)
    r_cfg, r_params = registry.load_any(r)
    n_layers = min(8, s_cfg.num_layers)
    cfg = lcfx.LCFXConfig(rank=256, slots=64, conditioned=True, pooling="window", injection="positioned",
                          decoder="embed", sharer_layers=tuple(range(n_layers)))
    setup = Setup("lcfx", cfg, s_cfg, r_cfg)
    params = lcfx.calibrate_embed_decoder(lcfx.init_lcfx(jax.random.key(0), cfg, s_cfg, r_cfg), r_params, cfg=cfg,
                                          receiver_cfg=r_cfg)
    rng = np.random.RandomState(0)
    rows = SharerRows(jnp.asarray(rng.randint(3, s_cfg.vocab_size, (batch, sharer_len)), jnp.int32),
                      jnp.ones((batch, sharer_len), bool),
                      jnp.broadcast_to(jnp.arange(sharer_len, dtype=jnp.int32), (batch, sharer_len)))
    bt = TokenTargetBatch(rows, jnp.asarray(rng.randint(3, r_cfg.vocab_size, (batch, sharer_len)), jnp.int32),
                          jnp.ones((batch, sharer_len), bool))
    stage = token_translation.make_phase((s_params, r_params), None, setup, steps=steps + 1, lr=1e-3)
    state = [phase.init_state(stage, params, 0)]
    step_fn = phase.jit_step(stage)

    def one():
        state[0], m = step_fn(state[0], stage.frozen, bt)
        return m
    return _time(one, steps), batch * sharer_len


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pair", choices=sorted(PAIRS), default="bundled")
    ap.add_argument("--steps", type=int, default=3)
    args = ap.parse_args()
    qa_s, qa_tok = qa_step(args.pair, args.steps, batch=8, sharer_len=256, target_len=16)
    tr_s, tr_tok = translation_step(args.pair, args.steps, batch=16, sharer_len=256)
    qa_rate, tr_rate = qa_tok / qa_s, tr_tok / tr_s
    print(f"# bench_supervision: {args.pair} pair ({'/'.join(PAIRS[args.pair])}), {args.steps} timed steps each, "
          f"{os.cpu_count()} CPU cores")
    print("| step | batch | supervised tokens/step | s/step | supervised tokens/s | ratio |")
    print("|---|---|---|---|---|---|")
    print(f"| QA objective (first recipe: CE on 16 answer tokens, sharer 256) | 8 | {qa_tok} | {qa_s:.2f} | "
          f"{qa_rate:.0f} | 1.00x |")
    print(f"| token translation (window recipe, stage 1: sharer 256, first 8 layers) | 16 | {tr_tok} | {tr_s:.2f} | "
          f"{tr_rate:.0f} | {tr_rate / qa_rate:.1f}x |")


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    main()
