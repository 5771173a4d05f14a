"""LCF (Latent Cache Flow), shared context: the sharer's K/V of the aligned token, compressed to a
rank-r latent and translated into a gated residual on the receiver's own K/V, per receiver layer.

Per receiver layer l that carries an adapter (source sharer layer s = layer_map[l]) and per receiver
token t (aligned sharer token a(t), see `align.py`):

    k_s   = invert_rope(K_s[a(t)])                        un-rotate with the SHARER's position of a(t)
                                                          and layer s's theta/scale
    z     = act(RMSNorm([k_s | V_s[a(t)]] @ W_down + b_down) * norm)             [r]
    k_hat, v_hat = split(z @ W_up + b_up)                                        [Hr, Dr] each
    k_hat = apply_rope(k_hat)                             rotate with the RECEIVER's position of t
                                                          and layer l's theta/scale
    K_r[t] += g_l * head_k * k_hat,   V_r[t] += g_l * head_v * v_hat,
    g_l = sigmoid(gate_logit_l) * enabled_l

computed by `lcf_jax.kernels.compress_translate` (vmapped over the stacked adapter layers).

Why RoPE is undone before compressing and re-applied after: cached keys are stored rotated by
their position, with the sharer's base and per-layer theta (Gemma3 mixes 10k local / 1M global
layers; SmolLM2 uses 100k). A rotated key mixes content with position through a position-dependent
rotation, so a fixed linear map cannot translate it consistently across positions. Un-rotating gives
position-free content the low-rank map can learn once; rotating the translated key with the
receiver's own tables puts it exactly where the receiver's queries expect a key at that token's
position (receiver positions differ from the sharer's after re-tokenization). Values carry no
position and pass straight through.

`enabled` is a non-trainable per-layer 0/1 mask held outside the params (from the config's
`disabled` layers, optionally multiplied by a runtime mask): exactly 0 leaves the layer's K/V
bit-identical. Receiver layers without an adapter (no source, or pruned away: not in
`LCFConfig.layers`) are never touched. Tokens outside the receiver mask, or whose aligned sharer
slot is padding / -1, are left untouched.

Parameter layout: adapter layers are grouped by rank (one group unless pruning gave layers
different ranks); each group is a dict of arrays stacked on a leading "layers" axis, keyed "r<rank>":
  w_down [n, 2*Hs*Ds, r] ("layers","kv_in","rank")    b_down, norm [n, r] ("layers","rank")
  w_up   [n, r, 2*Hr*Dr] ("layers","rank","kv_out")   b_up [n, 2*Hr*Dr] ("layers","kv_out")
  head_k, head_v [n, Hr] ("layers","kv_heads")        gate_logit [n] ("layers",)
Init: W_down lecun-normal, W_up and biases zero, norm/head scales one, gate_logit = gate_init: the
fresh adapter is an exact no-op and W_up learns first (LoRA-style).

`joint_kv=False` is the ablation the paper argues against: keys and values each get their own
rank-r bottleneck (w_down_k [n, Hs*Ds, r] -> w_up_k [n, r, Hr*Dr], the same for v, each with its
own bias and norm). At the same r it has the joint adapter's parameter count (plus 2r per layer)
but a latent twice as wide, and nothing ties a key to its value. Plain jnp (no Pallas kernel); not
exportable and not prunable: it exists to be compared against, in `reproduce --table ablations`.
"""
from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from lcf_jax.adapters import common as C
from lcf_jax.adapters.interface import AdapterKind
from lcf_jax.adapters.specs import lcf as SPEC
from lcf_jax.adapters.specs.lcf import LCFConfig, lcf_enabled, lcf_groups
from lcf_jax.kernels.compress_translate import compress_translate
from lcf_jax.models import layers as L
from lcf_jax.models.cache import KVCache
from lcf_jax.models.config import ModelConfig


def separate_translate(sharer_k, sharer_v, sharer_cos, sharer_sin, recv_k, recv_v, recv_cos, recv_sin, params, *,
                       activation: str = "silu", eps: float = 1e-6):
    """One layer of the separate-K/V ablation, with `compress_translate`'s signature and shapes."""
    n, hs, ds = sharer_k.shape
    _, hr, dr = recv_k.shape
    f32 = jnp.float32

    def path(x, part):
        z = jnp.dot(x.reshape(n, hs * ds).astype(f32), params[f"w_down_{part}"].astype(f32)) + params[f"b_down_{part}"]
        z = L.activation(L.rms_norm(z, params[f"norm_{part}"], eps, plus_one=False), activation)
        return (jnp.dot(z, params[f"w_up_{part}"].astype(f32)) + params[f"b_up_{part}"]).reshape(n, hr, dr)

    k_hat = path(L.invert_rope(sharer_k[None], sharer_cos[None], sharer_sin[None])[0], "k")
    k_hat = L.apply_rope(k_hat[None], recv_cos[None], recv_sin[None])[0]
    v_hat = path(sharer_v, "v")
    gate = jnp.asarray(params["gate"]).astype(f32)
    k_out = recv_k.astype(f32) + gate * params["head_k"].astype(f32)[None, :, None] * k_hat
    v_out = recv_v.astype(f32) + gate * params["head_v"].astype(f32)[None, :, None] * v_hat
    return k_out.astype(recv_k.dtype), v_out.astype(recv_k.dtype)


def init_lcf(key: jax.Array, cfg: LCFConfig, sharer_cfg: ModelConfig, receiver_cfg: ModelConfig) -> dict:
    return C.init_from_layout(SPEC.param_layout(cfg, sharer_cfg, receiver_cfg), key)


def lcf_param_axes(cfg: LCFConfig, sharer_cfg: ModelConfig, receiver_cfg: ModelConfig) -> dict:
    return C.axes_from_layout(SPEC.param_layout(cfg, sharer_cfg, receiver_cfg))


def apply_lcf(params: dict, sharer_cache: KVCache, receiver_cache: KVCache, alignment: jax.Array, *,
              cfg: LCFConfig, sharer_cfg: ModelConfig, receiver_cfg: ModelConfig,
              enabled: Optional[jax.Array] = None) -> KVCache:
    """Fuses the sharer cache into the receiver cache.

    sharer_cache: KVCache of the sharer [Ls, B, Hs, Ss, Ds]; receiver_cache: [Lr, B, Hr, Sr, Dr];
    alignment: int [B, Sr], the sharer cache slot fused into each receiver slot (-1: none; see
    `align.alignment_to_slots`). enabled: optional float [n adapter layers] runtime 0/1 mask (times
    the config's). Returns the receiver cache with fused K/V (positions, mask, index unchanged).
    """
    C.check_kv_cache(sharer_cache, sharer_cfg, "sharer")
    C.check_kv_cache(receiver_cache, receiver_cfg, "receiver")
    C.check_alignment(alignment, sharer_cache, receiver_cache)
    C.check_params(params, SPEC.param_layout(cfg, sharer_cfg, receiver_cfg), "LCF")
    en = jnp.asarray(lcf_enabled(cfg, sharer_cfg, receiver_cfg))
    if enabled is not None:
        if tuple(enabled.shape) != tuple(en.shape):
            raise ValueError(f"enabled has shape {tuple(enabled.shape)}, expected {tuple(en.shape)} (one per adapter layer)")
        en = en * jax.lax.stop_gradient(enabled.astype(jnp.float32))

    b, hr, sr, dr = (receiver_cache.keys.shape[i] for i in (1, 2, 3, 4))
    hs, ds = sharer_cache.keys.shape[2], sharer_cache.keys.shape[4]
    valid = C.fuse_valid(sharer_cache, receiver_cache, alignment)            # [B, Sr]
    s_pos = C.gather_aligned(sharer_cache.positions, alignment, 1, 0)       # [B, Sr]
    if cfg.joint_kv:
        ct = functools.partial(compress_translate, activation=cfg.activation, eps=cfg.eps,
                               block_tokens=cfg.block_tokens, backend=cfg.backend)
    else:
        ct = functools.partial(separate_translate, activation=cfg.activation, eps=cfg.eps)

    def tokens(x, h, d):  # [n, B, H, S, D] -> [n, B*S, H, D]
        return x.transpose(0, 1, 3, 2, 4).reshape(x.shape[0], b * sr, h, d)

    keys, values = receiver_cache.keys, receiver_cache.values
    for g in lcf_groups(cfg, sharer_cfg, receiver_cfg):
        n = len(g.receiver_layers)
        src, dst = np.asarray(g.sharer_layers), np.asarray(g.receiver_layers)
        sk = C.gather_aligned(sharer_cache.keys[src], alignment, 3, 1)       # [n, B, Hs, Sr, Ds]
        sv = C.gather_aligned(sharer_cache.values[src], alignment, 3, 1)
        scos, ssin = C.layer_rope_tables(s_pos, sharer_cfg, g.sharer_layers)  # [n, B, Sr, Ds]
        rcos, rsin = C.layer_rope_tables(receiver_cache.positions, receiver_cfg, g.receiver_layers)
        rk, rv = keys[dst], values[dst]
        p = params[g.name]
        kp = {k: v for k, v in p.items() if k != "gate_logit"}
        kp["gate"] = jax.nn.sigmoid(p["gate_logit"].astype(jnp.float32)) * en[np.asarray(g.index)]
        ko, vo = jax.vmap(ct)(tokens(sk, hs, ds), tokens(sv, hs, ds),
                              scos.reshape(n, b * sr, ds), ssin.reshape(n, b * sr, ds),
                              tokens(rk, hr, dr), tokens(rv, hr, dr),
                              rcos.reshape(n, b * sr, dr), rsin.reshape(n, b * sr, dr), kp)
        back = lambda x: x.reshape(n, b, sr, hr, dr).transpose(0, 1, 3, 2, 4)  # noqa: E731
        m = valid[None, :, None, :, None]
        keys = keys.at[dst].set(jnp.where(m, back(ko), rk))
        values = values.at[dst].set(jnp.where(m, back(vo), rv))
    return receiver_cache.replace_kv(keys, values)


def receive_lcf(params: dict, message: KVCache, receiver_state: tuple, *, cfg: LCFConfig, sharer_cfg: ModelConfig,
                receiver_cfg: ModelConfig, train: bool = False, rng=None, step=0) -> KVCache:
    """The receiver half (`interface`): receiver_state = (its cache of the shared context, alignment)."""
    receiver_cache, alignment = receiver_state
    return apply_lcf(params, message, receiver_cache, alignment, cfg=cfg, sharer_cfg=sharer_cfg,
                     receiver_cfg=receiver_cfg)


ADAPTER = AdapterKind(SPEC, init_lcf, lcf_param_axes, send=C.send_cache,
                      receive=receive_lcf)
