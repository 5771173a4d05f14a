"""GPU check of the fused compress-translate kernel (lcf_jax/kernels/compress_translate.py).

On a GPU: checks the Pallas GPU (Triton) kernel against the XLA reference (float32 and bfloat16)
and times forward and forward+backward of kernel vs the jitted reference for N = 8*512 tokens,
r = 256, both model pairs (SmolLM2 Hs=3 Ds=64 <-> Gemma3 Hr=1 Dr=256). Prints a table of
milliseconds and speed-ups with the device name. Exits with status 2 if no GPU is present.

  PYTHONPATH=. python benchmarks/gpu_kernel_check.py
  PYTHONPATH=. python benchmarks/gpu_kernel_check.py --backend interpret --tokens 64  # CPU dry run
"""
from __future__ import annotations

import argparse
import functools
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from lcf_jax.kernels.compress_translate import compress_translate
from lcf_jax.models.layers import rope_cos_sin

PAIRS = {"smollm2->gemma3": (3, 64, 1, 256), "gemma3->smollm2": (1, 256, 3, 64)}


def make(n, hs, ds, hr, dr, r, dtype, param_dtype, seed=0):
    ks = iter(jax.random.split(jax.random.PRNGKey(seed), 16))
    nrm = lambda shape, s=1.0: s * jax.random.normal(next(ks), shape)  # noqa: E731
    pos = jnp.arange(n) % 512
    sc, ss = rope_cos_sin(pos, ds, 1e5)
    rc, rs = rope_cos_sin(pos, dr, 1e6)
    params = dict(w_down=nrm((2 * hs * ds, r), (2 * hs * ds) ** -0.5), b_down=nrm((r,), 0.1),
                  norm=1 + nrm((r,), 0.1), w_up=nrm((r, 2 * hr * dr), r ** -0.5),
                  b_up=nrm((2 * hr * dr,), 0.1), head_k=nrm((hr,)), head_v=nrm((hr,)),
                  gate=jnp.asarray(0.5))
    params = {k: v.astype(param_dtype) for k, v in params.items()}
    return (nrm((n, hs, ds)).astype(dtype), nrm((n, hs, ds)).astype(dtype), sc, ss,
            nrm((n, hr, dr)).astype(dtype), nrm((n, hr, dr)).astype(dtype), rc, rs, params)


def bench(fn, args, iters):
    jax.block_until_ready(fn(*args))                      # compile + warm up
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t)
    return 1e3 * float(np.median(times))


def fwd_bwd(fn):
    def loss(*args):
        k, v = fn(*args)
        return jnp.sum(k.astype(jnp.float32) ** 2) + jnp.sum(v.astype(jnp.float32))
    return jax.jit(jax.grad(loss, argnums=tuple(range(9))))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--backend", default="pallas_gpu")
    ap.add_argument("--tokens", type=int, default=8 * 512)
    ap.add_argument("--rank", type=int, default=256)
    ap.add_argument("--iters", type=int, default=50)
    a = ap.parse_args()
    if a.backend == "pallas_gpu" and jax.default_backend() != "gpu":
        print(f"No GPU found (JAX backend is {jax.default_backend()!r}); nothing to check.")
        sys.exit(2)
    print(f"device: {jax.devices()[0].device_kind}  jax {jax.__version__}  backend {a.backend}  "
          f"N={a.tokens} r={a.rank}")
    ref = jax.jit(functools.partial(compress_translate, backend="reference"))
    failures = 0

    # Correctness (reference at highest matmul precision: XLA's default f32 dot may be TF32).
    for pair, dims in PAIRS.items():
        for dt, atol, rtol in ((jnp.float32, 2e-3, 1e-3), (jnp.bfloat16, 1e-1, 3e-2)):
            args = make(a.tokens, *dims, a.rank, dt, jnp.float32)
            try:
                got = jax.jit(functools.partial(compress_translate, backend=a.backend))(*args)
                with jax.default_matmul_precision("highest"):
                    want = jax.jit(functools.partial(compress_translate, backend="reference"))(*args)
                err = max(float(jnp.max(jnp.abs(g.astype(jnp.float32) - w.astype(jnp.float32))))
                          for g, w in zip(got, want))
                ok = all(np.allclose(np.asarray(g, np.float32), np.asarray(w, np.float32),
                                     atol=atol, rtol=rtol) for g, w in zip(got, want))
            except Exception as e:  # noqa: BLE001 - report and go on
                ok, err = False, f"{type(e).__name__}: {str(e)[:300]}"
            failures += not ok
            print(f"check {pair:16s} {jnp.dtype(dt).name:8s} max|err|={err}  {'OK' if ok else 'FAIL'}")

    # Timing. Rows: pair, cache/param dtype, pass; kernel at each block size vs XLA reference.
    blocks = (16, 32, 64, 128) if a.backend == "pallas_gpu" else (None,)
    print(f"\n{'pair':16s} {'dtype':9s} {'pass':8s} {'xla ms':>8s} "
          + " ".join(f"{'bt=' + str(b):>9s}" for b in blocks) + f" {'best x':>7s}")
    for pair, dims in PAIRS.items():
        for dt in (jnp.bfloat16, jnp.float32):
            args = make(a.tokens, *dims, a.rank, dt, dt)
            for pass_name in ("fwd", "fwd+bwd"):
                wrap = jax.jit if pass_name == "fwd" else fwd_bwd
                t_ref = bench(wrap(ref), args, a.iters)
                cells, best = [], float("inf")
                for b in blocks:
                    kern = functools.partial(compress_translate, backend=a.backend, block_tokens=b)
                    try:
                        t = bench(wrap(kern), args, a.iters)
                        best = min(best, t)
                        cells.append(f"{t:9.3f}")
                    except Exception as e:  # noqa: BLE001
                        cells.append(f"{'fail':>9s}")
                        print(f"  [{pair} {pass_name} bt={b}] {type(e).__name__}: {str(e)[:200]}")
                print(f"{pair:16s} {jnp.dtype(dt).name:9s} {pass_name:8s} {t_ref:8.3f} "
                      + " ".join(cells) + f" {t_ref / best:6.2f}x")
    print("\nx = xla ms / best kernel ms (>1: kernel faster). fwd+bwd: backward is the reference's vjp.")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
