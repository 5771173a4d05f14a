"""Shared building blocks of every ported decoder: norms, RoPE, gated MLP, grouped-query attention.

All functions are pure and shape-documented. Attention takes the receiver's own cache plus an
optional block of *extra* KV entries (what LCF-X injects); see `attention` for the conventions.
"""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

# Large finite negative rather than -inf: a fully masked row (a padding query) then gives a
# uniform softmax instead of NaNs, and its output is discarded by the caller anyway.
_MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)


def rms_norm(x: jax.Array, weight: jax.Array, eps: float, plus_one: bool) -> jax.Array:
    """RMSNorm over the last axis, computed in float32. Gemma scales by (1 + w), others by w."""
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    w = weight.astype(jnp.float32)
    y = y * (1.0 + w) if plus_one else y * w
    return y.astype(x.dtype)


def rope_cos_sin(positions: jax.Array, head_dim: int, theta: jax.Array | float,
                 scale: jax.Array | float = 1.0) -> tuple[jax.Array, jax.Array]:
    """cos/sin tables for Hugging Face's rotate-half RoPE.

    positions: [..., T] int -> cos, sin: [..., T, head_dim] float32 (the two halves repeat).
    `theta` and `scale` may be traced (they differ per layer in Gemma3 and are scanned over).
    """
    half = head_dim // 2
    exponents = jnp.arange(half, dtype=jnp.float32) * 2.0 / head_dim
    inv_freq = 1.0 / (jnp.asarray(theta, jnp.float32) ** exponents) / jnp.asarray(scale, jnp.float32)
    angles = positions.astype(jnp.float32)[..., None] * inv_freq
    angles = jnp.concatenate([angles, angles], axis=-1)
    return jnp.cos(angles), jnp.sin(angles)


def _rotate_half(x: jax.Array) -> jax.Array:
    half = x.shape[-1] // 2
    return jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """x: [B, T, H, D]; cos/sin: [B, T, D]. Rotation in float32, result in x's dtype."""
    x32 = x.astype(jnp.float32)
    c, s = cos[:, :, None, :], sin[:, :, None, :]
    return (x32 * c + _rotate_half(x32) * s).astype(x.dtype)


def invert_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Undoes `apply_rope` (rotation by the negative angle)."""
    return apply_rope(x, cos, -sin)


def activation(x: jax.Array, kind: str) -> jax.Array:
    if kind == "silu":
        return jax.nn.silu(x)
    if kind == "gelu_tanh":
        return jax.nn.gelu(x, approximate=True)
    raise ValueError(f"unknown activation {kind!r}")


def gated_mlp(x: jax.Array, gate: jax.Array, up: jax.Array, down: jax.Array, kind: str) -> jax.Array:
    """x: [B, T, D]; gate/up: [D, F]; down: [F, D]."""
    return (activation(x @ gate, kind) * (x @ up)) @ down


def attention(q: jax.Array, k: jax.Array, v: jax.Array, q_pos: jax.Array, k_pos: jax.Array,
              k_valid: jax.Array, *, scale: float, window: jax.Array | int | None = None,
              softcap: Optional[float] = None, extra_k: Optional[jax.Array] = None,
              extra_v: Optional[jax.Array] = None, extra_valid: Optional[jax.Array] = None,
              causal_blocks: bool = False) -> jax.Array:
    """Grouped-query attention over the cache plus optional extra entries.

    q: [B, T, H, D]; k, v: [B, Hkv, S, D] (the whole cache, this call's tokens already written);
    q_pos: [B, T]; k_pos, k_valid: [B, S]. A query sees cached keys that are valid, at a position
    <= its own, and (sliding layers) closer than `window` (0 or None = unlimited).
    extra_k/extra_v: [B, Hkv, N, D], extra_valid: [B, N]: position-free entries every query may
    see (they ignore causality and the sliding window); their keys are used as given, no RoPE.

    causal_blocks: the caller promises that this call's tokens were written at cache slots
    [index, index + T) with positions increasing along T for valid tokens, and that no slot after
    them is valid (true for a prefill with `positions_from_mask`). Query block i (of `_query_block(T)`
    tokens) then cannot see slots past S - T + its end, so those scores are never computed: about
    half the attention work of a fresh prefill, same result for every valid query.
    Returns [B, T, H, D].
    """
    t, s = q.shape[1], k.shape[2]
    block = _query_block(t) if causal_blocks else t
    if block >= t:
        return _attend(q, k, v, q_pos, k_pos, k_valid, scale, window, softcap, extra_k, extra_v, extra_valid)
    outs = []
    for start in range(0, t, block):
        end = min(start + block, t)
        keys = s - t + end  # this call's later tokens and the empty slots after them are never visible
        outs.append(_attend(q[:, start:end], k[:, :, :keys], v[:, :, :keys], q_pos[:, start:end], k_pos[:, :keys],
                            k_valid[:, :keys], scale, window, softcap, extra_k, extra_v, extra_valid))
    return jnp.concatenate(outs, axis=1)


def _query_block(t: int) -> int:
    """Query block of causal_blocks: 64 tokens (fastest on CPU at 512), at most 16 blocks (compile time)."""
    return max(64, -(-t // 16))


def _attend(q, k, v, q_pos, k_pos, k_valid, scale, window, softcap, extra_k, extra_v, extra_valid):
    b, t, h, d = q.shape
    hkv = k.shape[1]
    g = h // hkv
    qg = q.reshape(b, t, hkv, g, d).transpose(0, 2, 3, 1, 4)  # [B, Hkv, G, T, D]
    scores = jnp.einsum("bkgtd,bksd->bkgts", qg, k, preferred_element_type=jnp.float32) * scale
    allowed = k_valid[:, None, :] & (k_pos[:, None, :] <= q_pos[:, :, None])  # [B, T, S]
    if window is not None:
        dist = q_pos[:, :, None] - k_pos[:, None, :]
        w = jnp.asarray(window)
        allowed = allowed & ((w <= 0) | (dist < w))
    if softcap:
        scores = jnp.tanh(scores / softcap) * softcap
    scores = jnp.where(allowed[:, None, None], scores, _MASK_VALUE)
    if extra_k is not None:
        ex = jnp.einsum("bkgtd,bknd->bkgtn", qg, extra_k, preferred_element_type=jnp.float32) * scale
        if softcap:
            ex = jnp.tanh(ex / softcap) * softcap
        ex = jnp.where(extra_valid[:, None, None, None, :], ex, _MASK_VALUE)
        scores = jnp.concatenate([ex, scores], axis=-1)
        v = jnp.concatenate([extra_v.astype(v.dtype), v], axis=2)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    out = jnp.einsum("bkgts,bksd->bkgtd", probs, v)
    return out.transpose(0, 3, 1, 2, 4).reshape(b, t, h, d)
