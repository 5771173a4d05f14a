"""LCF vs C2C adapter training speed on this CPU (XLA path): forward + backward tokens/s.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_adapter.py [--quick] [--batch 4] [--tokens 256]

For the bundled pair SmolLM2-135M (sharer) -> Gemma3-270M (receiver) and the reverse: random
adapter weights (LCF with a non-zero W_up; C2C with its defaults, train mode: Gumbel gates and
dropout) and random caches of the real shapes (batch x tokens, both models' layer/head layout),
a monotone alignment of receiver tokens onto sharer tokens. One step = fuse the caches and take the
gradient of a scalar loss on the fused K/V with respect to the adapter params (the models' own
forward is not included; it is the same for both adapters). Compilation excluded (warm-up step),
median of the timed steps. Prints tokens/s (receiver tokens), the LCF/C2C ratio and both sizes.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import jax.numpy as jnp
import numpy as np

from lcf_jax.adapters.c2c import C2CConfig, apply_c2c, init_c2c
from lcf_jax.adapters.lcf import LCFConfig, apply_lcf, init_lcf
from lcf_jax.adapters.size import adapter_param_count, adapter_size_mb
from lcf_jax.models.cache import KVCache
from lcf_jax.models.registry import PRESET_CONFIGS

PAIRS = (("smollm2-135m-instruct", "gemma3-270m"), ("gemma3-270m", "smollm2-135m-instruct"))


def random_cache(cfg, batch, tokens, rng):
    shape = (cfg.num_layers, batch, cfg.num_kv_heads, tokens, cfg.head_dim)
    pos = np.broadcast_to(np.arange(tokens, dtype=np.int32), (batch, tokens))
    return KVCache(keys=jnp.asarray(rng.standard_normal(shape, np.float32)),
                   values=jnp.asarray(rng.standard_normal(shape, np.float32)),
                   positions=jnp.asarray(pos), mask=jnp.ones((batch, tokens), bool),
                   index=jnp.asarray(tokens, jnp.int32))


def time_step(step, args, repeats):
    jax.block_until_ready(step(*args))  # compile + warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(step(*args))
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bench_pair(s_name, r_name, batch, tokens, repeats, lcf_cfg, c2c_cfg):
    s, r = PRESET_CONFIGS[s_name], PRESET_CONFIGS[r_name]
    rng = np.random.default_rng(0)
    # Sharer tokenizations are usually a bit longer or shorter; use the same length and a monotone map.
    sc, rc = random_cache(s, batch, tokens, rng), random_cache(r, batch, tokens, rng)
    al = jnp.asarray(np.broadcast_to(np.arange(tokens, dtype=np.int32), (batch, tokens)))

    lcf_p = init_lcf(jax.random.key(0), lcf_cfg, s, r)
    c2c_p = init_c2c(jax.random.key(1), c2c_cfg, s, r)

    def loss_of(fused):
        return jnp.mean(fused.keys ** 2) + jnp.mean(fused.values ** 2)

    @jax.jit
    def lcf_step(p, sc, rc, al):
        return jax.value_and_grad(lambda q: loss_of(apply_lcf(q, sc, rc, al, cfg=lcf_cfg, sharer_cfg=s,
                                                               receiver_cfg=r)))(p)

    @jax.jit
    def c2c_step(p, sc, rc, al, key):
        return jax.value_and_grad(lambda q: loss_of(apply_c2c(q, sc, rc, al, cfg=c2c_cfg, sharer_cfg=s, receiver_cfg=r,
                                                               train=True, temperature=0.5, rng=key)))(p)

    t_lcf = time_step(lcf_step, (lcf_p, sc, rc, al), repeats)
    t_c2c = time_step(c2c_step, (c2c_p, sc, rc, al, jax.random.key(2)), repeats)
    n = batch * tokens
    res = {"pair": f"{s_name} -> {r_name}", "lcf_tok_s": n / t_lcf, "c2c_tok_s": n / t_c2c,
           "ratio": t_c2c / t_lcf}
    for name, cfg in (("lcf", lcf_cfg), ("c2c", c2c_cfg)):
        res[f"{name}_params"] = adapter_param_count(cfg, s, r)
        res[f"{name}_mb_bf16"] = adapter_size_mb(cfg, s, r, "bfloat16")
        res[f"{name}_mb_f32"] = adapter_size_mb(cfg, s, r, "float32")
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny run: batch 1, 32 tokens, 2 timed steps")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--rank", type=int, default=LCFConfig().rank)
    ap.add_argument("--backend", default="reference",
                    help="compress_translate backend for LCF (reference = the XLA path; auto picks Pallas on GPU/TPU)")
    args = ap.parse_args()
    if args.quick:
        args.batch, args.tokens, args.repeats = 1, 32, 2
    lcf_cfg = LCFConfig(rank=args.rank, zero_init_up=False, backend=args.backend)
    c2c_cfg = C2CConfig()
    print(f"backend={jax.default_backend()} devices={jax.devices()} batch={args.batch} tokens={args.tokens} "
          f"repeats={args.repeats} lcf_rank={args.rank}")
    for s_name, r_name in PAIRS:
        res = bench_pair(s_name, r_name, args.batch, args.tokens, args.repeats, lcf_cfg, c2c_cfg)
        print(f"\n{res['pair']}")
        print(f"  LCF: {res['lcf_tok_s']:>10.0f} tok/s fwd+bwd   {res['lcf_params']:>12,} params  "
              f"{res['lcf_mb_bf16']:8.2f} MB bf16  {res['lcf_mb_f32']:8.2f} MB f32")
        print(f"  C2C: {res['c2c_tok_s']:>10.0f} tok/s fwd+bwd   {res['c2c_params']:>12,} params  "
              f"{res['c2c_mb_bf16']:8.2f} MB bf16  {res['c2c_mb_f32']:8.2f} MB f32")
        print(f"  LCF/C2C throughput ratio: {res['ratio']:.1f}x   size ratio: "
              f"{res['lcf_params'] / res['c2c_params']:.4f}")


if __name__ == "__main__":
    main()
