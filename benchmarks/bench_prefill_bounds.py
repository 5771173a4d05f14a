"""Where a prefill's time goes, and what float32 / bfloat16 matmuls reach on this CPU.

    .venv/bin/python benchmarks/bench_prefill_bounds.py [--model smollm2-135m-instruct] [--batch 8] [--tokens 512]

Prints, measured in this run:
- the JAX prefill of batch x tokens as `prefill` runs it, and the same forward with attention
  replaced by the identity (so what remains is projections, MLP, norms and RoPE: the matmul-bound
  part that no attention kernel can shorten);
- JAX and torch matmul rates (GFLOP/s) on the model's own prefill shapes, in float32 and bfloat16.
It bounds what the ≥ 1.5x prefill goal of `bench_models.py` can reach without faster matmuls.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_models import _median_time  # noqa: E402  (the same warm-up + median timer)


def prefill_times(name: str, batch: int, tokens: int) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from lcf_jax.models import layers, registry, transformer
    from lcf_jax.models.cache import KVCache

    config, params = registry.load_model(name)
    params = jax.tree.map(jnp.asarray, params)
    toks = jnp.asarray(np.random.RandomState(0).randint(3, 1000, (batch, tokens)))
    mask = jnp.ones((batch, tokens), bool)
    cache = KVCache.empty(config, batch, tokens)
    out = {"prefill_s": _median_time(lambda: jax.block_until_ready(
        transformer.prefill(params, toks, mask, cache, config=config)), 3)}
    real_attention = layers.attention
    layers.attention = lambda q, k, v, *args, **kwargs: q  # same shapes, no attention work
    try:
        no_attn = jax.jit(lambda p, t, m, c: transformer.forward(
            p, t, transformer.positions_from_mask(m), c, config=config, token_mask=m, last_logits_only=True)[0])
        out["no_attention_s"] = _median_time(lambda: jax.block_until_ready(no_attn(params, toks, mask, cache)), 3)
    finally:
        layers.attention = real_attention
    out["shapes"] = [(batch * tokens, config.hidden_size, config.intermediate_size),
                     (batch * tokens, config.intermediate_size, config.hidden_size),
                     (batch * tokens, config.hidden_size, config.num_heads * config.head_dim)]
    return out


def matmul_rates(shapes) -> list[dict]:
    import jax
    import jax.numpy as jnp
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    rows = []
    for m, k, n in shapes:
        row = {"shape": f"{m} x {k} x {n}"}
        for label, jdt, tdt in (("f32", jnp.float32, torch.float32), ("bf16", jnp.bfloat16, torch.bfloat16)):
            a, w = jnp.ones((m, k), jdt), jnp.ones((k, n), jdt)
            mm = jax.jit(lambda a, w: a @ w)
            row[f"jax_{label}"] = 2 * m * k * n / _median_time(lambda: mm(a, w).block_until_ready(), 3) / 1e9
            ta, tw = torch.ones(m, k, dtype=tdt), torch.ones(k, n, dtype=tdt)
            row[f"torch_{label}"] = 2 * m * k * n / _median_time(lambda: ta @ tw, 3) / 1e9
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=512)
    args = ap.parse_args()
    t = prefill_times(args.model, args.batch, args.tokens)
    print(f"# {args.model}, prefill {args.batch} x {args.tokens} tokens (JAX)")
    print(f"prefill as run: {t['prefill_s']:.3f} s; without attention: {t['no_attention_s']:.3f} s "
          f"({t['no_attention_s'] / t['prefill_s']:.0%} of it)")
    print("\n| matmul (M x K x N) | JAX f32 | torch f32 | JAX bf16 | torch bf16 |  (GFLOP/s)")
    print("|---|---|---|---|---|")
    for r in matmul_rates(t["shapes"]):
        print(f"| {r['shape']} | {r['jax_f32']:.0f} | {r['torch_f32']:.0f} | {r['jax_bf16']:.0f} | {r['torch_bf16']:.0f} |")


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    main()
