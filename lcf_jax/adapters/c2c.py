"""C2C baseline: a JAX port of thu-nics/C2C's fuser (`C2CProjector`, rosetta/model/projector.py).

One projector per receiver layer that has a source (with C2C's "last_aligned" map every receiver
layer has one), each with separate key and value branches. Per token t of the receiver cache and
its aligned sharer token a(t) (same alignment as LCF), for branch X in {K, V}:

    x      = [X_sharer[a(t)] flattened over heads | X_receiver[t] flattened]      [Hs*Ds + Hr*Dr]
    h      = x @ W_in + b_in                                                     [hidden]
    h      = FFN(h)                          (mlp1: one block, intermediate `intermediate_dim`)
    proj   = FFN^(num_layers-2)(h) @ W_out + b_out                              [Hr*Dr] (projected X)
    scal   = FFN'(h) @ W_s + b_s                                                [Hr] (per-head weight;
                                              FFN' has intermediate = hidden, C2C's scalar path)
    X_out  = X_receiver + gate_X * sigmoid(scal)[head] * proj[head]

with FFN(h) = h + Dropout(W2 GELU(W1 RMSNorm(h))) (C2C's StandardFFNLayer: pre-RMSNorm, eps 1e-6,
bias-free, exact GELU). The gate is a scalar logit per branch and layer: during training
gate = sigmoid((logit + g) / T) with Gumbel noise g = -log(-log u) drawn per (batch, head, token),
T annealed from 1.0 to 0.001 over 1929 steps (`c2c_temperature`); at evaluation gate = 1[logit > 0]
(hard 0/1; the initial logit 0 gives gate 0, i.e. an untrained C2C is off at eval).

Keys are fused as cached, i.e. rotated (C2C does not undo RoPE). Defaults are C2C's:
hidden_dim 1024, intermediate_dim 1024, num_layers 3, dropout 0.1, PyTorch nn.Linear init
(U(+-1/sqrt(fan_in)) for weights and biases), RMSNorm weights 1, gate logits 0. For Qwen2.5-0.5B ->
Qwen3-0.6B this is 28 projectors of 17,066,002 parameters = 477.8M = 955.7 MB in bfloat16 (the
paper's 956 MB).

Params: {"key": branch, "value": branch}, each array stacked over the receiver layers that have a
projector (leading "layers" axis); see `C2CModule`.
"""
from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from lcf_jax.adapters import common as C
from lcf_jax.adapters.interface import AdapterKind
from lcf_jax.adapters.specs import c2c as SPEC
from lcf_jax.adapters.specs.c2c import C2CConfig, c2c_layers
from lcf_jax.models.cache import KVCache
from lcf_jax.models.config import ModelConfig
from lcf_jax.models.layers import rms_norm


def c2c_temperature(cfg: C2CConfig, step) -> jax.Array:
    """C2C's gate temperature schedule: geometric from initial to final over anneal_steps."""
    ratio = jnp.minimum(jnp.asarray(step, jnp.float32) / cfg.anneal_steps, 1.0)
    return cfg.initial_temperature * (cfg.final_temperature / cfg.initial_temperature) ** ratio


def init_c2c(key: jax.Array, cfg: C2CConfig, sharer_cfg: ModelConfig, receiver_cfg: ModelConfig) -> dict:
    return C.init_from_layout(SPEC.param_layout(cfg, sharer_cfg, receiver_cfg), key)


def c2c_param_axes(cfg: C2CConfig, sharer_cfg: ModelConfig, receiver_cfg: ModelConfig) -> dict:
    return C.axes_from_layout(SPEC.param_layout(cfg, sharer_cfg, receiver_cfg))


def _ffn(p, h, *, eps, dropout, rng):
    """C2C StandardFFNLayer: h + Dropout(W2 GELU(W1 RMSNorm(h))); dropout only when rng is given."""
    y = rms_norm(h, p["norm"], eps, plus_one=False)
    y = jax.nn.gelu(y @ p["w1"], approximate=False) @ p["w2"]
    if rng is not None and dropout > 0:
        keep = jax.random.bernoulli(rng, 1.0 - dropout, y.shape)
        y = jnp.where(keep, y / (1.0 - dropout), 0.0)
    return h + y


def _branch(p, src, tgt, rngs, *, heads, cfg: C2CConfig, train: bool, temperature):
    """One layer, one branch. src [N, Hs*Ds], tgt [N, Hr, Dr] -> [N, Hr, Dr]."""
    n, hr, dr = tgt.shape
    r_mlp1, r_scal, r_proj, r_gate = (rngs if rngs is not None else (None,) * 4)
    f32 = jnp.float32
    x = jnp.concatenate([src.astype(f32), tgt.reshape(n, hr * dr).astype(f32)], axis=-1)
    h = x @ p["in_w"] + p["in_b"]
    ffn = functools.partial(_ffn, eps=cfg.eps, dropout=cfg.dropout)
    h = ffn(p["mlp1"], h, rng=r_mlp1)
    hp = h
    for i in range(cfg.num_layers - 2):
        blk = jax.tree.map(lambda a: a[i], p["proj_mlp2"])
        hp = ffn(blk, hp, rng=None if r_proj is None else jax.random.fold_in(r_proj, i))
    proj = (hp @ p["proj_out_w"] + p["proj_out_b"]).reshape(n, hr, dr)
    scal = ffn(p["scalar_mlp2"], h, rng=r_scal) @ p["scalar_head_w"] + p["scalar_head_b"]   # [N, Hr]
    logit = p["gate_logit"].astype(f32)
    if train:
        u = jax.random.uniform(r_gate, (n, hr, 1), f32)
        g = -jnp.log(-jnp.log(u + 1e-20) + 1e-20)
        gate = jax.nn.sigmoid((logit + g) / temperature)
    else:
        gate = (logit > 0).astype(f32)
    out = tgt.astype(f32) + gate * jax.nn.sigmoid(scal)[..., None] * proj
    return out.astype(tgt.dtype)


def apply_c2c(params: dict, sharer_cache: KVCache, receiver_cache: KVCache, alignment: jax.Array, *,
              cfg: C2CConfig, sharer_cfg: ModelConfig, receiver_cfg: ModelConfig, train: bool = False,
              temperature=1.0, rng: Optional[jax.Array] = None) -> KVCache:
    """Fuses the sharer cache into the receiver cache with C2C's projectors.

    Shapes as `lcf.apply_lcf`. train=True: Gumbel-sigmoid gates at `temperature` and dropout, needs
    `rng`; train=False: hard gates 1[logit > 0], no dropout. Tokens outside the receiver mask or
    without a valid aligned sharer token are left untouched.
    """
    C.check_kv_cache(sharer_cache, sharer_cfg, "sharer")
    C.check_kv_cache(receiver_cache, receiver_cfg, "receiver")
    C.check_alignment(alignment, sharer_cache, receiver_cache)
    C.check_params(params, SPEC.param_layout(cfg, sharer_cfg, receiver_cfg), "C2C")
    if train and rng is None:
        raise ValueError("apply_c2c(train=True) needs rng (Gumbel noise and dropout)")
    if train and not jnp.issubdtype(rng.dtype, jax.dtypes.prng_key):
        rng = jax.random.wrap_key_data(rng)  # raw uint32 PRNGKey
    layers, sources = c2c_layers(cfg, sharer_cfg, receiver_cfg)
    n = len(layers)
    b, hr, sr, dr = (receiver_cache.keys.shape[i] for i in (1, 2, 3, 4))
    hs, ds = sharer_cache.keys.shape[2], sharer_cache.keys.shape[4]
    src_idx, dst_idx = np.asarray(sources), np.asarray(layers)
    valid = C.fuse_valid(sharer_cache, receiver_cache, alignment)

    def tokens(x, h, d, flat):  # [n, B, H, S, D] -> [n, B*S, H*D] or [n, B*S, H, D]
        y = x.transpose(0, 1, 3, 2, 4)
        return y.reshape(n, b * sr, h * d) if flat else y.reshape(n, b * sr, h, d)

    keys, values = receiver_cache.keys, receiver_cache.values
    out = {}
    for bi, (name, s_all, r_all) in enumerate((("key", sharer_cache.keys, keys), ("value", sharer_cache.values, values))):
        src = tokens(C.gather_aligned(s_all[src_idx], alignment, 3, 1), hs, ds, True)
        tgt = r_all[dst_idx]
        if train:
            rngs = jax.random.split(jax.random.fold_in(rng, bi), n * 4).reshape(n, 4)
        else:
            rngs = None
        fn = functools.partial(_branch, heads=hr, cfg=cfg, train=train, temperature=temperature)
        if train:
            y = jax.vmap(lambda p, s_, t_, k_: fn(p, s_, t_, tuple(k_)))(params[name], src, tokens(tgt, hr, dr, False), rngs)
        else:
            y = jax.vmap(lambda p, s_, t_: fn(p, s_, t_, None))(params[name], src, tokens(tgt, hr, dr, False))
        y = y.reshape(n, b, sr, hr, dr).transpose(0, 1, 3, 2, 4)
        out[name] = r_all.at[dst_idx].set(jnp.where(valid[None, :, None, :, None], y, tgt))
    return receiver_cache.replace_kv(out["key"], out["value"])


def receive_c2c(params: dict, message: KVCache, receiver_state: tuple, *, cfg: C2CConfig, sharer_cfg: ModelConfig,
                receiver_cfg: ModelConfig, train: bool = False, rng: Optional[jax.Array] = None, step=0) -> KVCache:
    """The receiver half (`interface`): receiver_state = (its cache of the shared context, alignment); the
    gates' temperature follows `step` while training."""
    receiver_cache, alignment = receiver_state
    return apply_c2c(params, message, receiver_cache, alignment, cfg=cfg, sharer_cfg=sharer_cfg,
                     receiver_cfg=receiver_cfg, train=train, temperature=c2c_temperature(cfg, step), rng=rng)


ADAPTER = AdapterKind(SPEC, init_c2c, c2c_param_axes, send=C.send_cache,
                      receive=receive_c2c)
