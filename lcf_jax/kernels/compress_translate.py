"""Fused compress-translate kernel: one sharer KV block -> a gated residual on the receiver's KV.

What it fuses (per layer, tokens flattened to N = batch * seq):

  1. undo the sharer's RoPE on its keys            k_s = invert_rope(sharer_k)
  2. joint K/V input                               x = [k_s | sharer_v]          [N, 2*Hs*Ds]
  3. down-projection, RMSNorm (plain weight, f32), activation (silu | gelu_tanh)  [N, r]
  4. up-projection                                 y = z @ w_up + b_up           [N, 2*Hr*Dr]
  5. receiver RoPE on the translated keys at the receiver positions
  6. gated residual    k_out = recv_k + gate * head_k * k_hat,  v_out = recv_v + gate * head_v * v_hat

Unfused, XLA writes and re-reads every intermediate (de-rotated keys, the concatenated input,
z before and after the norm, y, the rotated k_hat) through HBM; the kernel reads each input
once, keeps z in on-chip memory and writes each output once. The weights are small
(2*Hs*Ds*r + r*2*Hr*Dr elements) and stay resident for every block of tokens.

Shapes: sharer_k, sharer_v [N, Hs, Ds]; sharer_cos, sharer_sin [N, Ds]; recv_k, recv_v
[N, Hr, Dr]; recv_cos, recv_sin [N, Dr] (Hugging Face rotate-half tables, see
`lcf_jax.models.layers.rope_cos_sin`); params: w_down [2*Hs*Ds, r], b_down [r], norm [r],
w_up [r, 2*Hr*Dr], b_up [2*Hr*Dr], head_k [Hr], head_v [Hr], gate [] (the gate value).
Returns (k_out, v_out), each [N, Hr, Dr] in recv_k's dtype.

Precision: matmul operands are cast to the weight's dtype and accumulate in float32; RoPE,
RMSNorm, the activation and the gated residual run in float32.

How RoPE is done without lane shuffles. The kernel sees 2-D layouts [N, H*D] and contains
only elementwise ops, row reductions and matmuls (so one body serves Triton, Mosaic TPU and
interpret mode). rotate_half is a signed permutation P (rot(x) = x @ P) that is folded into
the weights in the wrapper:
  * sharer: invert_rope(k) @ Wk = (k*cos) @ Wk + (k*swap(sin)) @ rot_rows(Wk), where swap
    exchanges the two halves of each head (exact for any table: rot(k)*s = (k*swap(s)) @ P)
    and rot_rows applies rotate-half to the rows of each head's block (= -P @ Wk);
  * receiver: rot(z @ Wk + b) = z @ rot_cols(Wk) + rot(b), so
    k_hat = (z@Wk + b) * cos + (z@rot_cols(Wk) + rot(b)) * sin.
This costs one extra (Hs*Ds x r) and one extra (r x Hr*Dr) matmul per token, cheap for this
memory-bound op. cos/sin are tiled per head to [N, H*D] in the wrapper.

Block size (tokens per grid step): default 128 on TPU (fills the MXU's rows; VMEM use is
about 2 * block * (4*Hs*Ds + 6*Hr*Dr) * 4 B plus the resident weights, well under the scoped
limit for the model pairs of this project), 64 on GPU (the Triton program keeps z [block, r]
in registers), and the smallest legal block covering N when N is tiny. N is padded up to a
block multiple and sliced back. On GPU the Triton lowering needs power-of-two array sizes, so
Hs*Ds, Hr*Dr and r are zero-padded to powers of two (zero weight rows/columns; RMSNorm
divides by the true r) and the matmuls are chunked along Hs*Ds and Hr*Dr (64 columns).

Backends: "auto" (Pallas Triton on GPU, Pallas Mosaic on TPU, the reference on CPU),
"reference"/"xla", "interpret" (the GPU-layout kernel in generic interpret mode, runs on
CPU), "interpret_tpu" (the TPU kernel in TPU-semantics interpret mode, runs on CPU),
"pallas_gpu", "pallas_tpu". Gradients: `jax.custom_vjp`, forward = kernel, backward = the
vjp of `compress_translate_reference` (recomputed), to params and every array input.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Mapping

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu
from jax.experimental.pallas import triton as pltriton

from lcf_jax.models.config import ACTIVATIONS
from lcf_jax.models.layers import activation as _activation
from lcf_jax.models.layers import apply_rope, invert_rope, rms_norm

BACKENDS = ("auto", "reference", "xla", "interpret", "interpret_tpu", "pallas_gpu", "pallas_tpu")
PARAM_NAMES = ("w_down", "b_down", "norm", "w_up", "b_up", "head_k", "head_v", "gate")

_F32 = jnp.float32


# --------------------------------------------------------------------------------------------
# Reference (single source of truth)
# --------------------------------------------------------------------------------------------
def compress_translate_reference(sharer_k, sharer_v, sharer_cos, sharer_sin, recv_k, recv_v,
                                 recv_cos, recv_sin, params: Mapping[str, jax.Array], *,
                                 activation: str = "silu", eps: float = 1e-6):
    """Plain-jnp compress-translate (see the module docstring). Returns (k_out, v_out)."""
    n, hs, ds = sharer_k.shape
    _, hr, dr = recv_k.shape
    k_s = invert_rope(sharer_k[None], sharer_cos[None], sharer_sin[None])[0]
    x = jnp.concatenate([k_s.reshape(n, hs * ds), sharer_v.reshape(n, hs * ds)], axis=-1)
    w_down, w_up = params["w_down"], params["w_up"]
    z = jnp.dot(x.astype(w_down.dtype), w_down, preferred_element_type=_F32)
    z = z + params["b_down"].astype(_F32)
    z = rms_norm(z, params["norm"], eps, plus_one=False)
    z = _activation(z, activation)
    y = jnp.dot(z.astype(w_up.dtype), w_up, preferred_element_type=_F32)
    y = y + params["b_up"].astype(_F32)
    k_hat = y[:, :hr * dr].reshape(n, hr, dr)
    v_hat = y[:, hr * dr:].reshape(n, hr, dr)
    k_hat = apply_rope(k_hat[None], recv_cos[None], recv_sin[None])[0]
    gate = jnp.asarray(params["gate"]).astype(_F32)
    gk = gate * params["head_k"].astype(_F32)[None, :, None]
    gv = gate * params["head_v"].astype(_F32)[None, :, None]
    k_out = recv_k.astype(_F32) + gk * k_hat
    v_out = recv_v.astype(_F32) + gv * v_hat
    return k_out.astype(recv_k.dtype), v_out.astype(recv_k.dtype)


# --------------------------------------------------------------------------------------------
# Kernel
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _Layout:
    """How a backend lays the problem out. chunk=None: whole matmuls, no column loop."""
    pow2_features: bool      # pad Hs*Ds, Hr*Dr, r to powers of two (Triton)
    chunk: int | None        # column chunk of the Hs*Ds contraction and the Hr*Dr outputs
    block_multiple: int      # legal token blocks are multiples of this
    block_pow2: bool         # and powers of two (Triton)
    default_block: int


_GPU_LAYOUT = _Layout(pow2_features=True, chunk=64, block_multiple=16, block_pow2=True,
                      default_block=64)
_TPU_LAYOUT = _Layout(pow2_features=False, chunk=None, block_multiple=8, block_pow2=False,
                      default_block=128)


def _kernel(sk_ref, sv_ref, scos_ref, ssw_ref, rk_ref, rv_ref, rcos_ref, rsin_ref,
            wdk_ref, wdkr_ref, wdv_ref, bd_ref, nw_ref, wuk_ref, wukr_ref, wuv_ref,
            buk_ref, bukr_ref, buv_ref, gk_ref, gv_ref, ok_ref, ov_ref, *,
            r_true: int, eps: float, activation: str, chunk: int | None):
    """One block of tokens, steps 1-6. All refs 2-D; weights whole."""
    ks = sk_ref.shape[1]
    kr = rk_ref.shape[1]
    down_dt = wdk_ref.dtype
    up_dt = wuk_ref.dtype

    def dot(a, b):
        return jnp.dot(a, b, preferred_element_type=_F32)

    def chunks(width):
        step = width if chunk is None else min(chunk, width)
        return [slice(c, c + step) for c in range(0, width, step)]

    # Steps 1-3: de-rotated keys (folded into the weights) and values -> z [bt, r].
    z = None
    for sl in chunks(ks):
        k = sk_ref[:, sl].astype(_F32)
        a = (k * scos_ref[:, sl].astype(_F32)).astype(down_dt)
        b = (k * ssw_ref[:, sl].astype(_F32)).astype(down_dt)
        v = sv_ref[:, sl].astype(down_dt)
        part = dot(a, wdk_ref[sl, :]) + dot(b, wdkr_ref[sl, :]) + dot(v, wdv_ref[sl, :])
        z = part if z is None else z + part
    z = z + bd_ref[...].astype(_F32)
    ms = jnp.sum(z * z, axis=-1, keepdims=True) * (1.0 / r_true)   # padded columns are 0
    z = z * jax.lax.rsqrt(ms + eps) * nw_ref[...].astype(_F32)
    zu = _activation(z, activation).astype(up_dt)

    # Steps 4-6: up-projection, receiver RoPE, gated residual, per output column chunk.
    for sl in chunks(kr):
        yk = dot(zu, wuk_ref[:, sl]) + buk_ref[:, sl].astype(_F32)
        ykr = dot(zu, wukr_ref[:, sl]) + bukr_ref[:, sl].astype(_F32)
        k_hat = yk * rcos_ref[:, sl].astype(_F32) + ykr * rsin_ref[:, sl].astype(_F32)
        ok_ref[:, sl] = (rk_ref[:, sl].astype(_F32)
                         + gk_ref[:, sl].astype(_F32) * k_hat).astype(ok_ref.dtype)
        v_hat = dot(zu, wuv_ref[:, sl]) + buv_ref[:, sl].astype(_F32)
        ov_ref[:, sl] = (rv_ref[:, sl].astype(_F32)
                         + gv_ref[:, sl].astype(_F32) * v_hat).astype(ov_ref.dtype)


def _rot_half(x: jax.Array, axis: int) -> jax.Array:
    """Hugging Face rotate-half along `axis`: [x1, x2] -> [-x2, x1]."""
    x1, x2 = jnp.split(x, 2, axis=axis)
    return jnp.concatenate([-x2, x1], axis=axis)


def _swap_halves(x: jax.Array) -> jax.Array:
    x1, x2 = jnp.split(x, 2, axis=-1)
    return jnp.concatenate([x2, x1], axis=-1)


def _next_pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def _pick_block(n: int, layout: _Layout, block_tokens: int | None) -> int:
    if block_tokens is not None:
        return block_tokens
    if layout.block_pow2:
        return min(layout.default_block, max(layout.block_multiple, _next_pow2(n)))
    # 16: a whole bf16 sublane tile on TPU even when N is tiny.
    return min(layout.default_block, _round_up(max(n, 1), max(16, layout.block_multiple)))


def _pad2(x: jax.Array, rows: int, cols: int) -> jax.Array:
    pr, pc = rows - x.shape[0], cols - x.shape[1]
    return x if (pr, pc) == (0, 0) else jnp.pad(x, ((0, pr), (0, pc)))


def _pallas_forward(sharer_k, sharer_v, sharer_cos, sharer_sin, recv_k, recv_v, recv_cos,
                    recv_sin, params, *, activation: str, eps: float, block_tokens: int | None,
                    layout: _Layout, target: str, interpret: Any):
    """Wrapper-side layout work + the pallas_call. target: "gpu" | "tpu" (spec flavour)."""
    n, hs, ds = sharer_k.shape
    _, hr, dr = recv_k.shape
    ks, kr = hs * ds, hr * dr
    r = params["w_down"].shape[1]
    bt = _pick_block(n, layout, block_tokens)
    n_pad = _round_up(n, bt)
    if layout.pow2_features:
        ks_p, kr_p, r_p = (max(16, _next_pow2(d)) for d in (ks, kr, r))
    else:
        ks_p, kr_p, r_p = ks, kr, r

    # Activations, [N, H*D], cos/sin tiled per head (heads-major columns h*D + d).
    rows = lambda x, c: _pad2(x, n_pad, c)  # noqa: E731
    sk = rows(sharer_k.reshape(n, ks), ks_p)
    sv = rows(sharer_v.reshape(n, ks), ks_p)
    scos = rows(jnp.tile(sharer_cos, (1, hs)), ks_p)
    ssw = rows(jnp.tile(_swap_halves(sharer_sin), (1, hs)), ks_p)
    rk = rows(recv_k.reshape(n, kr), kr_p)
    rv = rows(recv_v.reshape(n, kr), kr_p)
    rcos = rows(jnp.tile(recv_cos, (1, hr)), kr_p)
    rsin = rows(jnp.tile(recv_sin, (1, hr)), kr_p)

    # Weights with rotate-half folded in (see the module docstring).
    w_down, w_up = params["w_down"], params["w_up"]
    wdk, wdv = w_down[:ks], w_down[ks:]
    wdkr = _rot_half(wdk.reshape(hs, ds, r), axis=1).reshape(ks, r)
    wuk, wuv = w_up[:, :kr], w_up[:, kr:]
    wukr = _rot_half(wuk.reshape(r, hr, dr), axis=2).reshape(r, kr)
    b_up = params["b_up"]
    buk, buv = b_up[:kr], b_up[kr:]
    bukr = _rot_half(buk.reshape(hr, dr), axis=1).reshape(kr)
    gate = jnp.asarray(params["gate"]).astype(_F32)
    gk = jnp.repeat(gate * params["head_k"].astype(_F32), dr)
    gv = jnp.repeat(gate * params["head_v"].astype(_F32), dr)
    wdk, wdkr, wdv = (_pad2(w, ks_p, r_p) for w in (wdk, wdkr, wdv))
    wuk, wukr, wuv = (_pad2(w, r_p, kr_p) for w in (wuk, wukr, wuv))
    row = lambda x, c: _pad2(x.reshape(1, -1), 1, c)  # noqa: E731
    bd, nw = row(params["b_down"], r_p), row(params["norm"], r_p)
    buk, bukr, buv, gk, gv = (row(x, kr_p) for x in (buk, bukr, buv, gk, gv))

    tokens = [sk, sv, scos, ssw, rk, rv, rcos, rsin]
    weights = [wdk, wdkr, wdv, bd, nw, wuk, wukr, wuv, buk, bukr, buv, gk, gv]

    def token_spec(x):
        return pl.BlockSpec((bt, x.shape[1]), lambda i: (i, 0))

    if target == "tpu":
        # Whole weights resident in VMEM for the entire grid (copied in once, not pipelined).
        weight_specs = [pl.BlockSpec(memory_space=pltpu.VMEM) for _ in weights]
        compiler_params = pltpu.CompilerParams(dimension_semantics=("parallel",))
        if interpret is not False:
            # TPU interpret mode (jax 0.10.2) does not extend dimension_semantics over the grid
            # axis that vmap prepends (Mosaic lowering does); leave them unset there.
            compiler_params = pltpu.CompilerParams()
    else:
        weight_specs = [pl.BlockSpec(w.shape, lambda i: (0, 0)) for w in weights]
        compiler_params = pltriton.CompilerParams(num_warps=8 if r_p * bt >= 8192 else 4,
                                                  num_stages=1)
        if interpret is not False:
            compiler_params = None

    out_dtype = recv_k.dtype
    flops = 2 * n_pad * (3 * ks_p * r_p + 3 * r_p * kr_p)
    bytes_accessed = (sum(x.size * x.dtype.itemsize for x in tokens + weights)
                      + 2 * n_pad * kr_p * jnp.dtype(out_dtype).itemsize)
    kernel = functools.partial(_kernel, r_true=r, eps=float(eps), activation=activation,
                               chunk=layout.chunk)
    ok, ov = pl.pallas_call(
        kernel,
        out_shape=[jax.ShapeDtypeStruct((n_pad, kr_p), out_dtype)] * 2,
        grid=(n_pad // bt,),
        in_specs=[token_spec(x) for x in tokens] + weight_specs,
        out_specs=[pl.BlockSpec((bt, kr_p), lambda i: (i, 0))] * 2,
        compiler_params=compiler_params,
        cost_estimate=pl.CostEstimate(flops=flops, transcendentals=n_pad * r_p,
                                      bytes_accessed=bytes_accessed),
        interpret=interpret,
        name="compress_translate",
    )(*tokens, *weights)
    return (ok[:n, :kr].reshape(n, hr, dr), ov[:n, :kr].reshape(n, hr, dr))


# --------------------------------------------------------------------------------------------
# custom_vjp: kernel forward, reference backward
# --------------------------------------------------------------------------------------------
@functools.partial(jax.custom_vjp, nondiff_argnums=(9,))
def _fused(sharer_k, sharer_v, sharer_cos, sharer_sin, recv_k, recv_v, recv_cos, recv_sin,
           params, cfg):
    activation, eps, block_tokens, backend = cfg
    if backend == "pallas_tpu":
        layout, target, interpret = _TPU_LAYOUT, "tpu", False
    elif backend == "interpret_tpu":
        layout, target, interpret = _TPU_LAYOUT, "tpu", pltpu.InterpretParams()
    elif backend == "pallas_gpu":
        layout, target, interpret = _GPU_LAYOUT, "gpu", False
    elif backend == "interpret":
        layout, target, interpret = _GPU_LAYOUT, "gpu", True
    else:  # pragma: no cover - guarded by the public wrapper
        raise ValueError(f"not a kernel backend: {backend!r}")
    return _pallas_forward(sharer_k, sharer_v, sharer_cos, sharer_sin, recv_k, recv_v,
                           recv_cos, recv_sin, params, activation=activation, eps=eps,
                           block_tokens=block_tokens, layout=layout, target=target,
                           interpret=interpret)


def _fused_fwd(*args):
    *arrays, cfg = args
    return _fused(*arrays, cfg), tuple(arrays)


def _fused_bwd(cfg, residuals, cotangents):
    activation, eps, _, _ = cfg
    ref = functools.partial(compress_translate_reference, activation=activation, eps=eps)
    _, vjp = jax.vjp(ref, *residuals)
    return vjp(cotangents)


_fused.defvjp(_fused_fwd, _fused_bwd)


# --------------------------------------------------------------------------------------------
# Public wrapper
# --------------------------------------------------------------------------------------------
def _check_shape(name: str, x, expected: tuple, what: str):
    if tuple(x.shape) != tuple(expected):
        raise ValueError(f"compress_translate: {name} has shape {tuple(x.shape)}, "
                         f"expected {tuple(expected)} ({what})")


def _check_float(name: str, x):
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"compress_translate: {name} must be floating point, got {x.dtype}")


def _resolve_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"compress_translate: backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "xla":
        return "reference"
    if backend == "auto":
        platform = jax.default_backend()
        if platform == "gpu":
            return "pallas_gpu"
        if platform == "tpu":
            return "pallas_tpu"
        return "reference"
    return backend


@functools.partial(jax.jit, static_argnames=("activation", "eps", "block_tokens", "backend"))
def compress_translate(sharer_k, sharer_v, sharer_cos, sharer_sin, recv_k, recv_v, recv_cos,
                       recv_sin, params, *, activation="silu", eps=1e-6, block_tokens=None,
                       backend="auto"):
    """Fused compress-translate of one layer; see the module docstring for the math.

    sharer_k, sharer_v: [N, Hs, Ds]; sharer_cos, sharer_sin: [N, Ds]; recv_k, recv_v:
    [N, Hr, Dr]; recv_cos, recv_sin: [N, Dr]; params: w_down [2*Hs*Ds, r], b_down [r],
    norm [r], w_up [r, 2*Hr*Dr], b_up [2*Hr*Dr], head_k [Hr], head_v [Hr], gate [].
    Returns (k_out, v_out), each [N, Hr, Dr] in recv_k's dtype. Differentiable (custom_vjp)
    and vmappable (e.g. over stacked layers).
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"compress_translate: activation must be one of {ACTIVATIONS}, "
                         f"got {activation!r}")
    backend = _resolve_backend(backend)
    if sharer_k.ndim != 3:
        raise ValueError(f"compress_translate: sharer_k must be [N, Hs, Ds], got shape "
                         f"{tuple(sharer_k.shape)}")
    if recv_k.ndim != 3:
        raise ValueError(f"compress_translate: recv_k must be [N, Hr, Dr], got shape "
                         f"{tuple(recv_k.shape)}")
    n, hs, ds = sharer_k.shape
    _, hr, dr = recv_k.shape
    if ds % 2 or dr % 2:
        raise ValueError(f"compress_translate: head dims must be even for rotate-half RoPE, got "
                         f"sharer_k {tuple(sharer_k.shape)}, recv_k {tuple(recv_k.shape)}")
    _check_shape("sharer_v", sharer_v, sharer_k.shape, "= sharer_k.shape")
    _check_shape("sharer_cos", sharer_cos, (n, ds), "[N, Ds] from sharer_k")
    _check_shape("sharer_sin", sharer_sin, (n, ds), "[N, Ds] from sharer_k")
    _check_shape("recv_k", recv_k, (n, hr, dr), "[N, Hr, Dr], N from sharer_k")
    _check_shape("recv_v", recv_v, recv_k.shape, "= recv_k.shape")
    _check_shape("recv_cos", recv_cos, (n, dr), "[N, Dr] from recv_k")
    _check_shape("recv_sin", recv_sin, (n, dr), "[N, Dr] from recv_k")
    arrays = dict(sharer_k=sharer_k, sharer_v=sharer_v, sharer_cos=sharer_cos,
                  sharer_sin=sharer_sin, recv_k=recv_k, recv_v=recv_v, recv_cos=recv_cos,
                  recv_sin=recv_sin)
    for name, x in arrays.items():
        _check_float(name, x)
    if sharer_v.dtype != sharer_k.dtype:
        raise ValueError(f"compress_translate: sharer_v dtype {sharer_v.dtype} != sharer_k "
                         f"dtype {sharer_k.dtype}")
    if recv_v.dtype != recv_k.dtype:
        raise ValueError(f"compress_translate: recv_v dtype {recv_v.dtype} != recv_k dtype "
                         f"{recv_k.dtype}")

    missing = [k for k in PARAM_NAMES if k not in params]
    if missing:
        raise ValueError(f"compress_translate: params is missing {missing}")
    params = {k: jnp.asarray(params[k]) for k in PARAM_NAMES}
    r = params["w_down"].shape[-1] if params["w_down"].ndim == 2 else -1
    expected = {"w_down": (2 * hs * ds, r), "b_down": (r,), "norm": (r,),
                "w_up": (r, 2 * hr * dr), "b_up": (2 * hr * dr,), "head_k": (hr,),
                "head_v": (hr,), "gate": ()}
    for k, shape in expected.items():
        _check_shape(f"params['{k}']", params[k], shape,
                     f"Hs={hs}, Ds={ds}, Hr={hr}, Dr={dr}, r={r}")
        _check_float(f"params['{k}']", params[k])

    if backend == "reference":
        return compress_translate_reference(sharer_k, sharer_v, sharer_cos, sharer_sin, recv_k,
                                            recv_v, recv_cos, recv_sin, params,
                                            activation=activation, eps=eps)
    layout = _TPU_LAYOUT if backend in ("pallas_tpu", "interpret_tpu") else _GPU_LAYOUT
    if block_tokens is not None:
        ok = (isinstance(block_tokens, int) and block_tokens > 0
              and block_tokens % layout.block_multiple == 0
              and (not layout.block_pow2 or block_tokens == _next_pow2(block_tokens)))
        if not ok:
            rule = ("a power of two >= 16" if layout.block_pow2
                    else f"a positive multiple of {layout.block_multiple}")
            raise ValueError(f"compress_translate: block_tokens={block_tokens!r} is not legal "
                             f"for backend {backend!r}; it must be {rule}")
    cfg = (activation, float(eps), block_tokens, backend)
    return _fused(sharer_k, sharer_v, sharer_cos, sharer_sin, recv_k, recv_v, recv_cos,
                  recv_sin, params, cfg)
