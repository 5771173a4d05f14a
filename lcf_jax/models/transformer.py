"""The decoder forward shared by every family: `forward(params, tokens, positions, cache) -> (logits, cache)`.

Parameters are a plain nested dict; per-layer weights are stacked on a leading `layers` axis and the
forward is a `lax.scan` over layers (one compiled layer body, fast compiles for 30-layer models).
Per-layer differences (Gemma3's sliding/global layers with their own RoPE base) are scanned inputs.
"""
from __future__ import annotations

import dataclasses

import functools
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from lcf_jax.models import layers as L
from lcf_jax.models.cache import ExtraKV, KVCache, check_cache, check_extra
from lcf_jax.models.config import ModelConfig


class ParamMismatchError(ValueError):
    pass


def param_shapes(config: ModelConfig) -> dict:
    """Shapes of every weight, by our names. The single source of truth for the parameter layout."""
    c = config
    n, d, f = c.num_layers, c.hidden_size, c.intermediate_size
    h, kv, hd = c.num_heads, c.num_kv_heads, c.head_dim
    layer = {
        "attn_norm": (n, d), "mlp_norm": (n, d),
        "q": (n, d, h, hd), "k": (n, d, kv, hd), "v": (n, d, kv, hd), "o": (n, h, hd, d),
        "gate": (n, d, f), "up": (n, d, f), "down": (n, f, d),
    }
    if c.qkv_bias:
        layer.update({"q_bias": (n, h, hd), "k_bias": (n, kv, hd), "v_bias": (n, kv, hd)})
    if c.qk_norm:
        layer.update({"q_norm": (n, hd), "k_norm": (n, hd)})
    if c.sandwich_norm:
        layer.update({"post_attn_norm": (n, d), "post_mlp_norm": (n, d)})
    shapes = {"embed": (c.vocab_size, d), "final_norm": (d,), "layers": layer}
    if not c.tie_embeddings:
        shapes["lm_head"] = (d, c.vocab_size)
    return shapes


# Logical axis names of every weight, mapped to mesh axes by the one rules table in
# `lcf_jax/train/sharding.py`.
PARAM_AXES = {
    "embed": ("vocab", "embed"), "final_norm": ("embed",), "lm_head": ("embed", "vocab"),
    "layers": {
        "attn_norm": ("layers", "embed"), "mlp_norm": ("layers", "embed"),
        "post_attn_norm": ("layers", "embed"), "post_mlp_norm": ("layers", "embed"),
        "q": ("layers", "embed", "q_heads", "head_dim"), "k": ("layers", "embed", "kv_heads", "head_dim"),
        "v": ("layers", "embed", "kv_heads", "head_dim"), "o": ("layers", "q_heads", "head_dim", "embed"),
        "q_bias": ("layers", "q_heads", "head_dim"), "k_bias": ("layers", "kv_heads", "head_dim"),
        "v_bias": ("layers", "kv_heads", "head_dim"),
        "q_norm": ("layers", "head_dim"), "k_norm": ("layers", "head_dim"),
        "gate": ("layers", "embed", "mlp"), "up": ("layers", "embed", "mlp"), "down": ("layers", "mlp", "embed"),
    },
}


def param_axes(config: ModelConfig) -> dict:
    shapes = param_shapes(config)
    return jax.tree.map(lambda _, ax: ax, shapes, _select(PARAM_AXES, shapes),
                        is_leaf=lambda x: isinstance(x, tuple))


def _select(table: dict, like: dict) -> dict:
    return {k: (_select(table[k], v) if isinstance(v, dict) else table[k]) for k, v in like.items()}


def init_params(config: ModelConfig, key: jax.Array, dtype=jnp.float32, scale: float = 0.02) -> dict:
    """Random weights (tests and shape inference); real weights come from `convert.py`."""
    shapes = param_shapes(config)
    leaves, treedef = jax.tree.flatten(shapes, is_leaf=lambda x: isinstance(x, tuple))
    keys = jax.random.split(key, len(leaves))
    out = [scale * jax.random.normal(k, s, dtype) for k, s in zip(keys, leaves)]
    return jax.tree.unflatten(treedef, out)


def check_params(params: dict, config: ModelConfig) -> None:
    """Raises ParamMismatchError naming the first weight whose presence or shape differs."""
    want = param_shapes(config)

    def walk(w, p, prefix):
        if not isinstance(p, dict):
            raise ParamMismatchError(f"params{prefix} should be a dict of weights")
        for name in sorted(set(w) | set(p)):
            path = f"{prefix}/{name}"
            if name not in p:
                raise ParamMismatchError(f"weight {path} is missing (expected shape {w[name]}) for {config.family}")
            if name not in w:
                raise ParamMismatchError(f"weight {path} is not part of a {config.family} model with this config")
            if isinstance(w[name], dict):
                walk(w[name], p[name], path)
            elif tuple(p[name].shape) != tuple(w[name]):
                raise ParamMismatchError(
                    f"weight {path} has shape {tuple(p[name].shape)} but the config expects {tuple(w[name])}")

    walk(want, params, "")


def _layer_statics(config: ModelConfig) -> dict:
    """Per-layer values that differ across layers, scanned alongside the weights."""
    n = config.num_layers
    return {
        "theta": np.array([config.layer_rope_theta(i) for i in range(n)], np.float32),
        "rope_scale": np.array([config.layer_rope_scale(i) for i in range(n)], np.float32),
        "window": np.array([config.layer_window(i) or 0 for i in range(n)], np.int32),
    }


def forward(params: dict, tokens: jax.Array, positions: jax.Array, cache: Optional[KVCache] = None, *,
            config: ModelConfig, token_mask: Optional[jax.Array] = None,
            extra_kv: Optional[ExtraKV] = None, kv_delta: Optional[tuple[jax.Array, jax.Array]] = None,
            last_logits_only: bool = False, hidden_only: bool = False, causal_blocks: bool = False,
            embeds: Optional[jax.Array] = None):
    """Runs the decoder on `tokens` and returns (logits, cache).

    tokens, positions: [B, T] int; token_mask: [B, T] bool (False for padding; default all True).
    cache: a KVCache with room for T more slots, or None for a fresh cache of exactly T slots.
    extra_kv: foreign entries attended in addition to the cache (see `ExtraKV`).
    kv_delta: (dk, dv), each [layers, B, kv_heads, T, head_dim], added to this call's keys (after
    RoPE) and values before they are attended to and cached.
    Returns logits [B, T, vocab] (float32) and the updated cache. With last_logits_only, logits are [B, 1, vocab] for the last position
    (prefill and decode need no more; saves a [B, T, vocab] matmul). With hidden_only, returns
    (final hidden states [B, T, D], cache) and no logits: apply `lm_head` where they are needed.
    causal_blocks: the positions increase along T for valid tokens (as `positions_from_mask` makes them),
    so attention may skip the key blocks no query of a block can see (`layers.attention`). Every
    prefill here sets it; the result for valid tokens is the same.
    embeds: [B, T, D] input vectors used instead of the token embeddings (already scaled the way the
    model scales its embeddings); `tokens` is then ignored and may be None. An LCF-X message decoded to
    input embeddings enters the receiver this way, so the receiver's own layers make its K/V.
    """
    c = config
    if embeds is not None:
        b, t = embeds.shape[:2]
        if embeds.shape[2] != c.hidden_size:
            raise ValueError(f"embeds width {embeds.shape[2]} != hidden_size {c.hidden_size}")
    else:
        b, t = tokens.shape
    if positions.shape != (b, t):
        raise ValueError(f"positions shape {positions.shape} != tokens shape {(b, t)}")
    if token_mask is None:
        token_mask = jnp.ones((b, t), bool)
    dtype = params["embed"].dtype
    if cache is None:
        cache = KVCache.empty(c, b, t, dtype)
    check_cache(cache, c)
    if extra_kv is not None:
        check_extra(extra_kv, c, b)

    start = cache.index
    new_pos = jax.lax.dynamic_update_slice(cache.positions, positions.astype(jnp.int32), (0, start))
    new_mask = jax.lax.dynamic_update_slice(cache.mask, token_mask, (0, start))

    if embeds is not None:
        x = embeds.astype(dtype)
    else:
        x = embed_tokens(params, tokens, config=c)

    xs = {"p": params["layers"], "k": cache.keys, "v": cache.values, **_layer_statics(c)}
    if extra_kv is not None:
        xs["ek"], xs["ev"] = extra_kv.keys, extra_kv.values
    if kv_delta is not None:
        xs["dk"], xs["dv"] = kv_delta

    def layer(x, s):
        p = s["p"]
        h = L.rms_norm(x, p["attn_norm"], c.rms_eps, c.norm_plus_one)
        q = jnp.einsum("btd,dhk->bthk", h, p["q"])
        k = jnp.einsum("btd,dhk->bthk", h, p["k"])
        v = jnp.einsum("btd,dhk->bthk", h, p["v"])
        if c.qkv_bias:
            q, k, v = q + p["q_bias"], k + p["k_bias"], v + p["v_bias"]
        if c.qk_norm:
            q = L.rms_norm(q, p["q_norm"], c.rms_eps, c.norm_plus_one)
            k = L.rms_norm(k, p["k_norm"], c.rms_eps, c.norm_plus_one)
        cos, sin = L.rope_cos_sin(positions, c.head_dim, s["theta"], s["rope_scale"])
        q, k = L.apply_rope(q, cos, sin), L.apply_rope(k, cos, sin)
        k, v = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)  # [B, Hkv, T, D]
        if "dk" in s:
            k, v = k + s["dk"].astype(k.dtype), v + s["dv"].astype(v.dtype)
        ck = jax.lax.dynamic_update_slice(s["k"], k.astype(s["k"].dtype), (0, 0, start, 0))
        cv = jax.lax.dynamic_update_slice(s["v"], v.astype(s["v"].dtype), (0, 0, start, 0))
        attn = L.attention(q, ck, cv, positions, new_pos, new_mask, scale=c.attn_scale, window=s["window"],
                           softcap=c.attn_logit_softcap, extra_k=s.get("ek"), extra_v=s.get("ev"),
                           extra_valid=None if extra_kv is None else extra_kv.mask, causal_blocks=causal_blocks)
        out = jnp.einsum("bthk,hkd->btd", attn, p["o"])
        if c.sandwich_norm:
            out = L.rms_norm(out, p["post_attn_norm"], c.rms_eps, c.norm_plus_one)
        x = x + out
        h = L.rms_norm(x, p["mlp_norm"], c.rms_eps, c.norm_plus_one)
        h = L.gated_mlp(h, p["gate"], p["up"], p["down"], c.activation)
        if c.sandwich_norm:
            h = L.rms_norm(h, p["post_mlp_norm"], c.rms_eps, c.norm_plus_one)
        return x + h, (ck, cv)

    x, (keys, values) = jax.lax.scan(layer, x, xs)
    x = L.rms_norm(x, params["final_norm"], c.rms_eps, c.norm_plus_one)
    new_cache = KVCache(keys=keys, values=values, positions=new_pos, mask=new_mask, index=start + t)
    if hidden_only:
        return x, new_cache
    logits = lm_head(params, x[:, -1:] if last_logits_only else x, config=c)
    return logits, new_cache


def first_layers(params: dict, config: ModelConfig, n: int) -> tuple[dict, ModelConfig]:
    """The model cut after its first n layers: (params with the layer stacks sliced, config with
    num_layers=n). Its cache equals the first n layers of the full model's cache; a stage that reads
    only early layers (an adapter's `sharer_layers`) runs this instead of the whole model."""
    if not 1 <= n <= config.num_layers:
        raise ValueError(f"first_layers: n={n} outside [1, {config.num_layers}]")
    cut = dataclasses.replace(config, num_layers=n, layer_types=tuple(config.layer_types[:n]))
    return {**params, "layers": jax.tree.map(lambda x: x[:n], params["layers"])}, cut


def embed_tokens(params: dict, tokens: jax.Array, *, config: ModelConfig) -> jax.Array:
    """Token ids [...] -> the input vectors [..., D] the first layer sees (embedding times embed_scale)."""
    x = jnp.take(params["embed"], tokens, axis=0)
    if config.embed_scale != 1.0:
        x = x * jnp.asarray(config.embed_scale, x.dtype)
    return x


def lm_head(params: dict, hidden: jax.Array, *, config: ModelConfig) -> jax.Array:
    """Final hidden states [..., D] -> float32 logits [..., vocab] (tied or separate head, soft-capped)."""
    head = params["embed"].T if config.tie_embeddings else params["lm_head"]
    logits = jnp.einsum("...d,dv->...v", hidden, head, preferred_element_type=jnp.float32)
    if config.final_logit_softcap:
        logits = jnp.tanh(logits / config.final_logit_softcap) * config.final_logit_softcap
    return logits


forward_jit = jax.jit(forward, static_argnames=("config", "last_logits_only", "hidden_only", "causal_blocks"))


def positions_from_mask(mask: jax.Array) -> jax.Array:
    """RoPE positions for a left-padded batch: 0 at each row's first real token. mask: [B, T]."""
    return jnp.maximum(jnp.cumsum(mask.astype(jnp.int32), axis=-1) - 1, 0)


@functools.partial(jax.jit, static_argnames=("config",))
def prefill(params: dict, tokens: jax.Array, mask: jax.Array, cache: KVCache, *, config: ModelConfig,
            extra_kv: Optional[ExtraKV] = None):
    """Prefill of a left-padded batch into `cache`; returns (last logits [B, vocab], cache)."""
    logits, cache = forward(params, tokens, positions_from_mask(mask), cache, config=config,
                            token_mask=mask, extra_kv=extra_kv, last_logits_only=True, causal_blocks=True)
    return logits[:, -1], cache
