"""JAX ports vs transformers PyTorch eager on this CPU, same run: prefill and decode speed, peak memory.

    .venv/bin/python benchmarks/bench_models.py [--quick]

Each (model, implementation) runs in its own subprocess so its peak RSS is its own. Prefill: a
512-token prompt at batch 1 and 8, last-position logits only on both sides (`logits_to_keep=1` in
transformers). The JAX prefill is also timed without causal query blocks (full attention), to show
what they save. Decode: greedy tokens/s after a 64-token prompt, batch 1, EOS ignored, prefill
excluded (time(prompt + N tokens) - time(prompt + 1 token)). Compilation is excluded (warm-up call).

A roofline for this machine, measured in the same run, bounds what any implementation can reach:
each side's best float32 matmul rate (a 2048^3 product) and the memory read rate (a 1 GiB reduction).
Prefill ceiling = the prefill's necessary (causal) matmul FLOPs at the best matmul rate; decode ceiling = the bytes
read per token (all weights + the KV cache) at the memory rate. The "max ratio" columns are
torch's measured time over that ceiling: the largest speed-up over torch this machine permits.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

MODELS = ("smollm2-135m-instruct", "gemma3-270m")


def _median_time(fn, repeats: int) -> float:
    fn()  # warm-up / compile
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def prefill_flops(config, batch: int, tokens: int) -> float:
    """Matmul FLOPs a prefill with last-position logits needs: projections + MLP per token, the causal
    half of the T x T attention score and value products (T(T+1)/2 query-key pairs: what no
    implementation can skip), the head."""
    c = config
    per_token_macs = c.num_layers * (c.hidden_size * (2 * c.num_heads + 2 * c.num_kv_heads) * c.head_dim
                                     + 3 * c.hidden_size * c.intermediate_size)
    attn_macs = c.num_layers * 2 * c.num_heads * c.head_dim * tokens * (tokens + 1) // 2
    head_macs = c.hidden_size * c.vocab_size
    return 2.0 * batch * (tokens * per_token_macs + attn_macs + head_macs)


def decode_bytes(config, context: int) -> float:
    """float32 bytes a batch-1 decode step must read: every weight once (the tied embedding doubles as
    the head) and the KV cache of `context` tokens."""
    import numpy as np

    from lcf_jax.models import transformer
    shapes = transformer.param_shapes(config)
    n_params = sum(int(np.prod(s)) for s in _leaves(shapes))
    cache = 2 * config.num_layers * config.num_kv_heads * config.head_dim * context
    return 4.0 * (n_params + cache)


def _leaves(tree):
    for v in tree.values():
        yield from (_leaves(v) if isinstance(v, dict) else [v])


def _machine(impl: str) -> dict:
    """This side's float32 matmul rate (GFLOP/s) and the memory read rate (GB/s)."""
    import numpy as np
    n, big = 2048, np.ones(256 * 1024 * 1024, np.float32)
    if impl == "jax":
        import jax
        import jax.numpy as jnp
        a = jnp.ones((n, n), jnp.float32)
        mm = jax.jit(lambda a: a @ a)
        mm_s = _median_time(lambda: jax.block_until_ready(mm(a)), 3)
        x = jnp.asarray(big)
        red = jax.jit(jnp.sum)
        read_s = _median_time(lambda: jax.block_until_ready(red(x)), 3)
    else:
        import torch
        a = torch.ones(n, n)
        mm_s = _median_time(lambda: a @ a, 3)
        x = torch.from_numpy(big)
        read_s = _median_time(lambda: x.sum(), 3)
    return {"matmul_gflops": 2 * n ** 3 / mm_s / 1e9, "read_gbs": big.nbytes / read_s / 1e9}


def _measure(name: str, impl: str, prefill_len: int, batches: list[int], new_tokens: int, repeats: int) -> dict:
    import numpy as np

    rng = np.random.RandomState(0)
    out: dict = {"model": name, "impl": impl}
    if impl == "jax":
        import dataclasses

        import jax
        import jax.numpy as jnp

        from lcf_jax.models import generate, registry, transformer
        from lcf_jax.models.cache import KVCache

        config, params = registry.load_model(name)
        config = dataclasses.replace(config, eos_token_ids=())
        params = jax.tree.map(jnp.asarray, params)
        for b in batches:
            toks = jnp.asarray(rng.randint(3, 1000, (b, prefill_len)))
            mask = jnp.ones((b, prefill_len), bool)
            cache = KVCache.empty(config, b, prefill_len)
            run = lambda: jax.block_until_ready(transformer.prefill(params, toks, mask, cache, config=config))
            out[f"prefill_b{b}_s"] = _median_time(run, repeats)
            # The same prefill without causal query blocks (every query against every slot): what they save.
            full = jax.jit(lambda p, t, m, c: transformer.forward(
                p, t, transformer.positions_from_mask(m), c, config=config, token_mask=m, last_logits_only=True,
                causal_blocks=False)[0])
            out[f"prefill_b{b}_full_attention_s"] = _median_time(
                lambda: jax.block_until_ready(full(params, toks, mask, cache)), repeats)
        prompt = jnp.asarray(rng.randint(3, 1000, (1, 64)))
        pmask = jnp.ones((1, 64), bool)

        def gen(n):
            return lambda: jax.block_until_ready(
                generate.generate(params, prompt, pmask, jax.random.PRNGKey(0), config=config, max_new_tokens=n))
        t_n, t_1 = _median_time(gen(new_tokens), repeats), _median_time(gen(1), repeats)
    else:
        import torch

        from lcf_jax.models import registry

        torch.set_num_threads(os.cpu_count() or 1)
        model = registry.load_hf_model(name)
        pad = model.config.pad_token_id or 0
        with torch.inference_mode():
            for b in batches:
                toks = torch.tensor(rng.randint(3, 1000, (b, prefill_len)))
                run = lambda: model(toks, logits_to_keep=1)
                out[f"prefill_b{b}_s"] = _median_time(run, repeats)
            prompt = torch.tensor(rng.randint(3, 1000, (1, 64)))

            def gen(n):
                return lambda: model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=n,
                                              min_new_tokens=n, do_sample=False, eos_token_id=None, pad_token_id=pad)
            t_n, t_1 = _median_time(gen(new_tokens), repeats), _median_time(gen(1), repeats)
    out["decode_tok_s"] = (new_tokens - 1) / max(t_n - t_1, 1e-9)
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # before the 1 GiB probe
    out.update(_machine(impl))
    from lcf_jax.models.registry import model_config
    for b in batches:
        out[f"prefill_b{b}_flops"] = prefill_flops(model_config(name), b, prefill_len)
    out["decode_bytes"] = decode_bytes(model_config(name), 64 + new_tokens // 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short prompt, few tokens (a smoke run)")
    ap.add_argument("--models", nargs="*", default=list(MODELS))
    ap.add_argument("--child", nargs=2, metavar=("MODEL", "IMPL"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    prefill_len, batches, new_tokens, repeats = (64, [1, 2], 8, 1) if args.quick else (512, [1, 8], 64, 3)
    if args.child:
        print(json.dumps(_measure(args.child[0], args.child[1], prefill_len, batches, new_tokens, repeats)))
        return
    rows = []
    for name in args.models:
        pair = {}
        for impl in ("torch", "jax"):
            cmd = [sys.executable, __file__, "--child", name, impl] + (["--quick"] if args.quick else [])
            res = subprocess.run(cmd, capture_output=True, text=True)
            if res.returncode:
                sys.exit(f"{name}/{impl} failed:\n{res.stderr[-3000:]}")
            pair[impl] = json.loads(res.stdout.strip().splitlines()[-1])
        rows.append(pair)
    cpu = f"{os.cpu_count()} CPU cores"
    print(f"# bench_models ({cpu}; prefill {prefill_len} tokens; decode {new_tokens} tokens after a 64-token prompt)")

    def speed_cells(t, j):
        cells = [f"{t[k]:.3f} / {j[k]:.3f} / {t[k] / j[k]:.2f}x" for k in (f"prefill_b{b}_s" for b in batches)]
        return cells + [f"{t['decode_tok_s']:.1f} / {j['decode_tok_s']:.1f} / {j['decode_tok_s'] / t['decode_tok_s']:.2f}x",
                        f"{t['peak_rss_mib']:.0f} / {j['peak_rss_mib']:.0f}"]

    _print_table(rows, [f"prefill b{b} (s) torch / jax / ratio" for b in batches]
                 + ["decode tok/s torch / jax / ratio", "peak RSS MiB torch / jax"], speed_cells)
    print("\n# JAX prefill: causal query blocks (what `prefill` runs) against full attention, same run")
    _print_table(rows, [f"prefill b{b} (s) full / blocks / ratio" for b in batches], lambda t, j: [
        f"{j[f'prefill_b{b}_full_attention_s']:.3f} / {j[f'prefill_b{b}_s']:.3f} / "
        f"{j[f'prefill_b{b}_full_attention_s'] / j[f'prefill_b{b}_s']:.2f}x" for b in batches])
    peak = max(max(p["torch"]["matmul_gflops"], p["jax"]["matmul_gflops"]) for p in rows)
    read = max(max(p["torch"]["read_gbs"], p["jax"]["read_gbs"]) for p in rows)
    print(f"\n# roofline: best float32 matmul {peak:.0f} GFLOP/s (torch {rows[0]['torch']['matmul_gflops']:.0f}, "
          f"jax {rows[0]['jax']['matmul_gflops']:.0f}); memory read {read:.1f} GB/s")

    def roofline_cells(t, j):
        cells = []
        for b in batches:
            k, flops = f"prefill_b{b}_s", t[f"prefill_b{b}_flops"]
            cells.append(f"{flops / t[k] / 1e9:.0f} / {flops / j[k] / 1e9:.0f}, {t[k] / (flops / (peak * 1e9)):.2f}x")
        ceiling = read * 1e9 / t["decode_bytes"]
        return cells + [f"{t['decode_bytes'] / 1e6:.0f}, {ceiling:.1f}, {ceiling / t['decode_tok_s']:.2f}x"]

    _print_table(rows, [f"prefill b{b}: torch / jax GFLOP/s, max ratio" for b in batches]
                 + ["decode: MB/token, ceiling tok/s, max ratio"], roofline_cells)


def _print_table(rows: list[dict], columns: list[str], cells) -> None:
    """One Markdown row per model: `cells(torch_result, jax_result)` gives the cells after its name."""
    print("| " + " | ".join(["model"] + columns) + " |")
    print("|" + "---|" * (len(columns) + 1))
    for pair in rows:
        print("| " + " | ".join([pair["torch"]["model"]] + cells(pair["torch"], pair["jax"])) + " |")

if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    main()
