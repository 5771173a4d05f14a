"""LCF-X: cache-to-cache communication between models that read DIFFERENT contexts.

No token alignment exists, so the sharer's cache is summarised into a fixed message of m latent
vectors of width r (the only thing that crosses between the models), which the receiver decodes into
m extra position-free K/V entries per layer that its attention sees next to its own tokens
(`forward(..., extra_kv=ExtraKV)`).

Encoder (sharer side), `encode_message`:
  1. per sharer token, a joint latent over the used sharer layers U: keys un-rotated with the sharer's
     positions and each layer's RoPE theta/scale, then
        z = act(RMSNorm(sum_{l in U} [k_l | v_l] @ W_enc[l] + b_enc) * enc_norm)       [B, S, r]
     (one projection of the concatenation of all used layers' K/V);
  2. attention pooling: m learned query slots attend over the valid sharer tokens (masked softmax,
     `pool_heads` heads over r), then an output projection and RMSNorm:
        latents = RMSNorm(concat_h softmax(q_h k_h^T / sqrt(r/h)) v_h @ W_o) * out_norm  [B, m, r]
     A sharer row with no valid token gives all-zero latents.
  3. conditioned variant: the queries are shifted per slot by a projection of a summary of the
     receiver's own cache, c = act(RMSNorm(sum_l masked_mean_t([k_l | v_l]) @ W_cond[l] + b_cond))
     (receiver keys un-rotated too), q_j += c @ W_shift[:, j, :] (W_shift zero-init, so a fresh
     conditioned encoder equals the unconditioned one). The summary can then ask for what the
     receiver lacks. Note c [B, r] travels receiver -> sharer (a back-channel of r floats per row).

  2'. window pooling (`pooling="window"`): a relevance score per token (`token_scores`), from the receiver
     summary c when conditioned, a learned prior over the passage's tokens alone when not, and the m
     consecutive tokens with the most softmax(score) mass (`window_slots`); slot j is token start + j
     through the same value path as a one-token pooling (`token_messages`). The message is then an
     excerpt of the passage in the receiver's terms, chosen (conditioned) by what the receiver asks;
     slots past a short passage's end are all zero and masked.

Decoder (receiver side), `decode_message`: per receiver layer l,
        h = RMSNorm(latents) * dec_norm[l];  K = h @ W_k[l] + b_k[l];  V = v_gate[l] * (h @ W_v[l] + b_v[l])
reshaped to all receiver kv heads [B, Hr, m, Dr]. The keys are position-free (the receiver applies
no RoPE to extra entries; its queries are rotated, so the adapter learns keys in that frame).

Linear latent path (`linear=True`, with `pool_heads=1`): the encoder is z = sum_l [k_l | v_l] @ W_enc[l] +
b_enc (no norm, no activation), the slot output is pooled @ W_o (no norm) and the decoder reads the
latents directly; only the pooling SCORES see a norm (keys from RMSNorm(z) * enc_norm). A slot is then
exactly a convex combination of translated tokens, and the translation of one token (W_enc, W_v, W_o,
dec_*) is a linear map that `train/latent_align.fit_closed_form` solves in closed form.

Near no-op initialisation. Extra entries are softmaxed together with the receiver's own keys, so
an exact no-op needs either zero attention weight or zero value AND no renormalisation. There is
no key that scores very low against every possible query, so we choose values: `v_gate` starts at
exactly 0 (the extra values are exactly zero, yet W_v still gets gradients through v_gate) and the
key projection starts small (`key_init_std`) so the extra scores start near 0. The residual effect
is a renormalisation: each own-token attention weight shrinks by Z/(Z + sum_j exp(s_j)) with
s_j ~ 0, where Z is the sum of exp-scores of the receiver's own keys (usually large next to m
because of attention-sink scores). An exact no-op remains available: mask the slots
(`slot_mask=False`), which gives bit-for-bit the receiver's own attention. Receiver layers not in
`receiver_layers` get zero keys and values (the same small renormalisation).

Message transport: `message_nbytes`, `quantize_message(latents, "float16" | "int8")` (int8:
symmetric per-slot absmax scale in float32, error <= scale/2 per element) and `dequantize_message`.
"""
from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from lcf_jax.adapters import common as C
from lcf_jax.adapters.interface import AdapterKind
from lcf_jax.adapters.specs import lcfx as SPEC
from lcf_jax.adapters.specs.lcfx import LCFXConfig, decoded_layers, used_layers
from lcf_jax.models.cache import ExtraKV, KVCache
from lcf_jax.models.config import ModelConfig
from lcf_jax.models.layers import activation as _activation
from lcf_jax.models.layers import apply_rope, invert_rope, rms_norm

def init_lcfx(key: jax.Array, cfg: LCFXConfig, sharer_cfg: ModelConfig, receiver_cfg: ModelConfig) -> dict:
    return C.init_from_layout(SPEC.param_layout(cfg, sharer_cfg, receiver_cfg), key)


def lcfx_param_axes(cfg: LCFXConfig, sharer_cfg: ModelConfig, receiver_cfg: ModelConfig) -> dict:
    return C.axes_from_layout(SPEC.param_layout(cfg, sharer_cfg, receiver_cfg))


def unrotated_kv(cache: KVCache, mcfg: ModelConfig, layers) -> jax.Array:
    """[n, B, S, 2*H*D]: per token, [un-rotated key | value] of each of `layers`."""
    idx = np.asarray(layers)
    k = cache.keys[idx].transpose(0, 1, 3, 2, 4)      # [n, B, S, H, D]
    v = cache.values[idx].transpose(0, 1, 3, 2, 4)
    cos, sin = C.layer_rope_tables(cache.positions, mcfg, layers)   # [n, B, S, D]
    k = jax.vmap(invert_rope)(k, cos, sin)
    n, b, s, h, d = k.shape
    return jnp.concatenate([k.reshape(n, b, s, h * d), v.reshape(n, b, s, h * d)], axis=-1)


def receiver_summary(params: dict, receiver_cache: KVCache, *, cfg: LCFXConfig, sharer_cfg: ModelConfig,
                     receiver_cfg: ModelConfig) -> jax.Array:
    """Conditioning vector c [B, r] from the receiver's own cache (masked mean of un-rotated K/V)."""
    _, _, cu = used_layers(cfg, sharer_cfg, receiver_cfg)
    x = unrotated_kv(receiver_cache, receiver_cfg, cu).astype(jnp.float32)      # [n, B, S, F]
    w = receiver_cache.mask.astype(jnp.float32)
    mean = jnp.einsum("nbsf,bs->bnf", x, w) / jnp.maximum(w.sum(-1), 1.0)[:, None, None]
    c = jnp.einsum("bnf,nfr->br", mean, params["cond_w"].astype(jnp.float32)) + params["cond_b"]
    return _activation(rms_norm(c, params["cond_norm"], cfg.eps, plus_one=False), cfg.activation)


def token_latents(params: dict, sharer_cache: KVCache, *, cfg: LCFXConfig, sharer_cfg: ModelConfig,
                  receiver_cfg: ModelConfig) -> jax.Array:
    """Encoder step 1: the per-token joint latent z [B, S, r] (float32) of the sharer's cache."""
    su, _, _ = used_layers(cfg, sharer_cfg, receiver_cfg)
    x = unrotated_kv(sharer_cache, sharer_cfg, su)                                   # [n, B, S, F]
    w_enc = params["enc_w"]
    z = jnp.einsum("nbsf,nfr->bsr", x.astype(w_enc.dtype), w_enc, preferred_element_type=jnp.float32)
    z = z + params["enc_b"]
    if cfg.linear:
        return z
    return _activation(rms_norm(z, params["enc_norm"], cfg.eps, plus_one=False), cfg.activation)


def token_messages(params: dict, z: jax.Array, *, cfg: LCFXConfig) -> jax.Array:
    """The latent a slot carries when its pooling attention is all on one token, for every token:
    [B, S, r]. With one-hot attention every head's pooled value is that token's, so the concatenated
    heads are z @ pool_wv; then the same output projection and norm as `encode_message`. Used by the
    latent-alignment pre-training (`train/latent_align.py`), which teaches the decoder to turn such a
    slot into the receiver's own K/V for the same text before the pooling is trained."""
    f32 = jnp.float32
    pooled = z.astype(f32) @ params["pool_wv"].astype(f32)
    return _slot_output(params, pooled, cfg)


def _slot_output(params: dict, pooled: jax.Array, cfg: LCFXConfig) -> jax.Array:
    out = pooled @ params["pool_wo"].astype(jnp.float32)
    return out if cfg.linear else rms_norm(out, params["out_norm"], cfg.eps, plus_one=False)


def token_scores(params: dict, z: jax.Array, c: Optional[jax.Array], *, cfg: LCFXConfig) -> jax.Array:
    """Window pooling's relevance of each sharer token: [B, S] float32,
        score_t = (c W_q) . (z_t W_k) / sqrt(k) + z_t . w_b
    (c: the receiver summary [B, r], None for an unconditioned adapter, which keeps only the prior
    z_t . w_b; z: per-token latents [B, S, r]). Bilinear in the mean of the receiver's prompt K/V, so it
    can weigh how strongly each passage token matches the question's tokens."""
    f32 = jnp.float32
    prior = z.astype(f32) @ params["loc_wb"].astype(f32)
    if c is None:
        return prior
    q = c.astype(f32) @ params["loc_wq"].astype(f32)                                   # [B, k]
    k = z.astype(f32) @ params["loc_wk"].astype(f32)                                   # [B, S, k]
    return jnp.einsum("bk,bsk->bs", q, k) * cfg.locator_rank ** -0.5 + prior


def window_slots(scores: jax.Array, mask: jax.Array, m: int) -> tuple[jax.Array, jax.Array]:
    """The m consecutive valid tokens with the largest softmax(scores) mass: (index [B, m] into the S
    cache slots, valid [B, m]). Valid tokens may sit anywhere in the row (left or right padding); a row
    with fewer than m valid tokens takes all of them and leaves the last slots invalid."""
    b, s = scores.shape
    mask = mask.astype(bool)
    order = jnp.argsort(~mask, axis=1, stable=True)          # valid slots first, in order
    n = jnp.sum(mask, axis=1, dtype=jnp.int32)
    ranked_valid = jnp.arange(s)[None, :] < n[:, None]
    sc = jnp.where(ranked_valid, jnp.take_along_axis(scores.astype(jnp.float32), order, axis=1), -1e30)
    p = jax.nn.softmax(sc, axis=-1) * ranked_valid
    cum = jnp.concatenate([jnp.zeros((b, 1), jnp.float32), jnp.cumsum(p, axis=1)], axis=1)   # [B, S+1]
    starts = jnp.arange(s)
    mass = cum[:, jnp.minimum(starts + m, s)] - cum[:, starts]
    allowed = starts[None, :] <= jnp.maximum(n - m, 0)[:, None]
    start = jnp.argmax(jnp.where(allowed, mass, -1.0), axis=1)
    ordinal = start[:, None] + jnp.arange(m)[None, :]
    index = jnp.take_along_axis(order, jnp.minimum(ordinal, s - 1), axis=1)
    return index.astype(jnp.int32), ordinal < n[:, None]


def default_slot_mask(cfg: LCFXConfig, latents: jax.Array) -> jax.Array:
    """[B, n] bool: the slots that hold something. Window pooling leaves the slots past a short
    passage's end all zero; every slot of an attention-pooled message holds a token mixture."""
    if cfg.pooling == "window":
        return jnp.any(latents != 0, axis=-1)
    return jnp.ones(latents.shape[:2], bool)


def encode_message(params: dict, sharer_cache: KVCache, receiver_cache: Optional[KVCache] = None, *,
                   cfg: LCFXConfig, sharer_cfg: ModelConfig, receiver_cfg: ModelConfig) -> jax.Array:
    """Sharer cache [Ls, B, Hs, S, Ds] (its own context) -> message latents [B, m, r] (float32).

    receiver_cache ([Lr, B, Hr, Sr, Dr]) is required iff cfg.conditioned.
    """
    C.check_kv_cache(sharer_cache, sharer_cfg, "sharer")
    C.check_params(params, SPEC.param_layout(cfg, sharer_cfg, receiver_cfg), "LCF-X")
    if cfg.conditioned:
        if receiver_cache is None:
            raise ValueError("a conditioned LCF-X encoder needs receiver_cache")
        C.check_kv_cache(receiver_cache, receiver_cfg, "receiver")
        if receiver_cache.mask.shape[0] != sharer_cache.mask.shape[0]:
            raise ValueError(f"receiver batch {receiver_cache.mask.shape[0]} != sharer batch {sharer_cache.mask.shape[0]}")
    f32 = jnp.float32
    z = token_latents(params, sharer_cache, cfg=cfg, sharer_cfg=sharer_cfg, receiver_cfg=receiver_cfg)
    if cfg.pooling == "window":
        c = (receiver_summary(params, receiver_cache, cfg=cfg, sharer_cfg=sharer_cfg, receiver_cfg=receiver_cfg)
             if cfg.conditioned else None)
        index, valid = window_slots(token_scores(params, z, c, cfg=cfg), sharer_cache.mask, cfg.slots)
        lat = token_messages(params, jnp.take_along_axis(z, index[..., None], axis=1), cfg=cfg)
        return jnp.where(valid[..., None], lat, 0.0).astype(f32)
    b, s, r = z.shape
    h, m = cfg.pool_heads, cfg.slots
    q = jnp.broadcast_to(params["queries"].astype(f32), (b, m, r))
    if cfg.conditioned:
        c = receiver_summary(params, receiver_cache, cfg=cfg, sharer_cfg=sharer_cfg, receiver_cfg=receiver_cfg)
        q = q + jnp.einsum("br,rmq->bmq", c, params["cond_shift"].astype(f32))
    # The linear path normalises only what the scores see, so slot values stay convex combinations.
    zk = rms_norm(z, params["enc_norm"], cfg.eps, plus_one=False) if cfg.linear else z
    k = (zk @ params["pool_wk"].astype(f32)).reshape(b, s, h, r // h)
    v = (z @ params["pool_wv"].astype(f32)).reshape(b, s, h, r // h)
    qh = q.reshape(b, m, h, r // h)
    scores = jnp.einsum("bmhd,bshd->bhms", qh, k) * (r // h) ** -0.5
    valid = sharer_cache.mask[:, None, None, :]
    scores = jnp.where(valid, scores, -1e30)
    probs = jax.nn.softmax(scores, axis=-1) * valid
    pooled = jnp.einsum("bhms,bshd->bmhd", probs, v).reshape(b, m, r)
    lat = _slot_output(params, pooled, cfg)
    any_valid = sharer_cache.mask.any(axis=-1)[:, None, None]
    return jnp.where(any_valid, lat, 0.0).astype(f32)


def decode_message(params: dict, latents: jax.Array, *, cfg: LCFXConfig, receiver_cfg: ModelConfig,
                   slot_mask: Optional[jax.Array] = None) -> ExtraKV:
    """Message latents [B, m, r] -> ExtraKV for every receiver layer: keys/values [Lr, B, Hr, m, Dr]
    float32 (zeros on layers outside cfg.receiver_layers), mask [B, m] (slot_mask, default all True).
    Only the decoder params (dec_*, v_gate) are read: the receiver needs no encoder weights.
    """
    if latents.ndim != 3 or latents.shape[1:] != (cfg.slots, cfg.rank):
        raise ValueError(f"latents must be [B, slots={cfg.slots}, rank={cfg.rank}], got {tuple(latents.shape)}")
    if cfg.decoder != "kv":
        raise ValueError(f"decode_message makes per-layer K/V; decoder={cfg.decoder!r} decodes to input vectors "
                         "(use message_prefix)")
    ru = decoded_layers(cfg, receiver_cfg)
    if params["dec_wk"].shape != (len(ru), cfg.rank, receiver_cfg.kv_width):
        raise ValueError(f"dec_wk has shape {tuple(params['dec_wk'].shape)}, expected "
                         f"{(len(ru), cfg.rank, receiver_cfg.kv_width)} for this receiver")
    b, m, _ = latents.shape
    L = receiver_cfg.num_layers
    f32 = jnp.float32
    k, v = decode_layers(params, latents, cfg=cfg, receiver_cfg=receiver_cfg)
    if len(ru) != L:
        idx = np.asarray(ru)
        k = jnp.zeros((L,) + k.shape[1:], f32).at[idx].set(k)
        v = jnp.zeros((L,) + v.shape[1:], f32).at[idx].set(v)
    if slot_mask is None:
        slot_mask = default_slot_mask(cfg, latents)
    elif tuple(slot_mask.shape) != (b, m):
        raise ValueError(f"slot_mask must be [B, slots]={(b, m)}, got {tuple(slot_mask.shape)}")
    return ExtraKV(keys=k, values=v, mask=slot_mask.astype(bool))


def decode_layers(params: dict, latents: jax.Array, *, cfg: LCFXConfig, receiver_cfg: ModelConfig):
    """Latents [B, n, r] (any n) -> (keys, values) [len(receiver_layers), B, Hr, n, Dr] float32."""
    b, m, _ = latents.shape
    hr, dr = receiver_cfg.num_kv_heads, receiver_cfg.head_dim
    f32 = jnp.float32
    lat = latents.astype(f32)

    def one(norm, wk, bk, wv, bv, g):
        hh = lat if cfg.linear else rms_norm(lat, norm, cfg.eps, plus_one=False)
        k = jnp.einsum("bmr,rk->bmk", hh.astype(wk.dtype), wk, preferred_element_type=f32) + bk
        v = (jnp.einsum("bmr,rk->bmk", hh.astype(wv.dtype), wv, preferred_element_type=f32) + bv) * g
        shape = lambda x: x.reshape(b, m, hr, dr).transpose(0, 2, 1, 3)  # noqa: E731
        return shape(k), shape(v)

    return jax.vmap(one)(params["dec_norm"], params["dec_wk"], params["dec_bk"], params["dec_wv"],
                         params["dec_bv"], params["v_gate"].astype(f32))


def decode_embeddings(params: dict, latents: jax.Array, *, cfg: LCFXConfig) -> jax.Array:
    """Embed decoder: latents [B, n, r] -> receiver input vectors [B, n, D] (float32):
    RMSNorm(W2 act(W1 RMSNorm(latents) + b1) + b2) * dec_e_scale."""
    f32 = jnp.float32
    h = rms_norm(latents.astype(f32), params["dec_e_norm"], cfg.eps, plus_one=False)
    h = _activation(h @ params["dec_e_w1"].astype(f32) + params["dec_e_b1"], cfg.activation)
    e = h @ params["dec_e_w2"].astype(f32) + params["dec_e_b2"]
    return rms_norm(e, params["dec_e_scale"], cfg.eps, plus_one=False)


def snap_to_vocabulary(e: jax.Array, receiver_params: dict, receiver_cfg: ModelConfig, chunk: int = 512) -> jax.Array:
    """Each vector of e [B, n, D] replaced by the receiver's input vector (embedding times embed_scale) with
    the largest cosine similarity; computed in chunks of rows so the [rows, vocab] scores stay small. A chunk
    is never larger than the rows: padding one message (64 rows) to 512 made a batch-1 snap 7x slower, and
    the ids are the same (all 19,456 slots of 300 SQuAD test messages checked)."""
    table = receiver_params["embed"].astype(jnp.float32)
    unit = table * jax.lax.rsqrt(jnp.sum(table * table, -1, keepdims=True) + 1e-12)
    b, n, d = e.shape
    flat = e.reshape(b * n, d).astype(jnp.float32)
    chunk = min(chunk, flat.shape[0])
    pad = -(-flat.shape[0] // chunk) * chunk - flat.shape[0]
    rows = jnp.pad(flat, ((0, pad), (0, 0))).reshape(-1, chunk, d)
    ids = jax.lax.map(lambda x: jnp.argmax(x @ unit.T, axis=-1), rows).reshape(-1)[:b * n]
    return (jnp.take(table, ids, axis=0) * receiver_cfg.embed_scale).reshape(b, n, d)


def calibrate_embed_decoder(params: dict, receiver_params: dict, *, cfg: LCFXConfig, receiver_cfg: ModelConfig) -> dict:
    """Sets dec_e_scale to the root-mean-square of the receiver's input vectors (per feature), so a fresh
    embed decoder emits vectors of the size the receiver's first layer sees for real tokens."""
    if cfg.decoder != "embed":
        return params
    emb = receiver_params["embed"].astype(jnp.float32) * receiver_cfg.embed_scale
    rms = jnp.sqrt(jnp.mean(emb * emb, axis=0))
    return {**params, "dec_e_scale": rms.astype(params["dec_e_scale"].dtype)}


def _slot_positions(b: int, n: int, p: int, slot_mask):
    """(mask, positions) of n slots after a prefix of p: valid slots take positions p, p+1, ... in order
    (a row with fewer valid slots continues its prompt earlier, as a shorter passage would)."""
    from lcf_jax.models import transformer
    mask = jnp.ones((b, n), bool) if slot_mask is None else slot_mask.astype(bool)
    positions = p + transformer.positions_from_mask(mask)
    return mask, positions.astype(jnp.int32)


def _prefix_start(receiver_params: dict, prefix_ids: jax.Array, capacity: int, receiver_cfg: ModelConfig) -> KVCache:
    from lcf_jax.models import transformer  # the receiver's forward (models sit below adapters)
    b, p = prefix_ids.shape
    cache = KVCache.empty(receiver_cfg, b, capacity, receiver_params["embed"].dtype)
    if p:
        _, cache = transformer.forward(receiver_params, prefix_ids, jnp.broadcast_to(jnp.arange(p), (b, p)), cache,
                                       config=receiver_cfg, hidden_only=True)
    return cache


def positioned_kv_prefix(keys: jax.Array, values: jax.Array, receiver_params: dict, prefix_ids: jax.Array, *,
                         capacity: int, receiver_cfg: ModelConfig, layers=None,
                         slot_mask: Optional[jax.Array] = None) -> KVCache:
    """The positioned convention for given K/V: a receiver cache [special prefix | n entries].

    keys (un-rotated, the receiver's frame), values: [len(layers), B, Hr, n, Dr] for receiver `layers`
    (default all; the others hold zeros at these slots); prefix_ids [B, P]. Entry j gets position P + j
    and its keys that position's rotation in each layer, exactly as if the receiver had read a token
    there. The ladder's R2 feeds the receiver's own un-rotated passage K/V through it.
    """
    layers = tuple(range(receiver_cfg.num_layers)) if layers is None else tuple(layers)
    _, b, _, n, _ = keys.shape
    p = prefix_ids.shape[1]
    if capacity < p + n:
        raise ValueError(f"capacity {capacity} < prefix {p} + slots {n}")
    cache = _prefix_start(receiver_params, prefix_ids, capacity, receiver_cfg)
    mask, positions = _slot_positions(b, n, p, slot_mask)
    cos, sin = C.layer_rope_tables(positions, receiver_cfg, layers)                    # [n_l, B, n, D]
    rot = jax.vmap(lambda x, c_, s_: apply_rope(x.transpose(0, 2, 1, 3), c_, s_).transpose(0, 2, 1, 3))
    dtype = cache.keys.dtype
    idx = np.asarray(layers)
    new_keys = cache.keys.at[idx, :, :, p:p + n].set(rot(keys, cos, sin).astype(dtype))
    new_values = cache.values.at[idx, :, :, p:p + n].set(values.astype(dtype))
    return cache._replace(keys=new_keys, values=new_values,
                          positions=cache.positions.at[:, p:p + n].set(positions),
                          mask=cache.mask.at[:, p:p + n].set(mask), index=jnp.asarray(p + n, jnp.int32))


def message_prefix(params: dict, latents: jax.Array, receiver_params: dict, prefix_ids: jax.Array, *,
                   capacity: int, cfg: LCFXConfig, receiver_cfg: ModelConfig,
                   slot_mask: Optional[jax.Array] = None) -> KVCache:
    """The positioned message: a receiver cache holding [special prefix | m message slots], with room
    for `capacity` slots in all. The prompt continues at position P + m (P = prefix_ids.shape[1]).

    latents [B, m, r]; prefix_ids [B, P] (the receiver's BOS; P may be 0); slot_mask [B, m] (default
    all True; a False slot is invisible, as a padding token). Works for any n = latents.shape[1] (the
    ladder feeds per-token latents). decoder="kv": `positioned_kv_prefix` of the decoded per-layer K/V;
    decoder="embed": the receiver prefills the decoded vectors itself at positions P..P+n-1.
    """
    from lcf_jax.models import transformer
    if cfg.injection != "positioned":
        raise ValueError("message_prefix is the positioned convention; this adapter has injection='extra'")
    b, n, _ = latents.shape
    p = prefix_ids.shape[1]
    if slot_mask is None:
        slot_mask = default_slot_mask(cfg, latents)
    if cfg.decoder == "kv":
        ru = decoded_layers(cfg, receiver_cfg)
        k, v = decode_layers(params, latents, cfg=cfg, receiver_cfg=receiver_cfg)
        return positioned_kv_prefix(k, v, receiver_params, prefix_ids, capacity=capacity, receiver_cfg=receiver_cfg,
                                    layers=ru, slot_mask=slot_mask)
    if capacity < p + n:
        raise ValueError(f"capacity {capacity} < prefix {p} + slots {n}")
    cache = _prefix_start(receiver_params, prefix_ids, capacity, receiver_cfg)
    mask, positions = _slot_positions(b, n, p, slot_mask)
    e = decode_embeddings(params, latents, cfg=cfg)
    if cfg.snap:
        e = snap_to_vocabulary(e, receiver_params, receiver_cfg)
    _, cache = transformer.forward(receiver_params, None, positions, cache, config=receiver_cfg, token_mask=mask,
                                   embeds=e.astype(cache.keys.dtype), hidden_only=True)
    return cache


# ------------------------------------------------------------------------------------------------
# Message transport
# ------------------------------------------------------------------------------------------------
MESSAGE_DTYPES = ("float32", "bfloat16", "float16", "int8")


def message_nbytes(message: Any) -> int:
    """Bytes on the wire of a message: latents, or a (q, scale) pair from `quantize_message`."""
    return int(sum(np.prod(x.shape) * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(message)))


def quantize_message(latents: jax.Array, dtype: str = "int8"):
    """latents [B, m, r] -> (q, scale). float16/bfloat16/float32: (cast, None). int8: symmetric per
    slot, scale [B, m, 1] float32 = max|x| / 127, q = round(x / scale); |x - q*scale| <= scale/2."""
    if dtype not in MESSAGE_DTYPES:
        raise ValueError(f"message dtype must be one of {MESSAGE_DTYPES}, got {dtype!r}")
    x = latents.astype(jnp.float32)
    if dtype != "int8":
        return x.astype(dtype), None
    scale = jnp.max(jnp.abs(x), axis=-1, keepdims=True) / 127.0
    safe = jnp.where(scale > 0, scale, 1.0)
    q = jnp.clip(jnp.round(x / safe), -127, 127).astype(jnp.int8)
    return q, scale


def dequantize_message(q: jax.Array, scale: Optional[jax.Array] = None) -> jax.Array:
    """Inverse of `quantize_message` -> float32 latents."""
    if scale is None:
        if q.dtype == jnp.int8:
            raise ValueError("an int8 message needs its scale")
        return q.astype(jnp.float32)
    return q.astype(jnp.float32) * scale.astype(jnp.float32)


DECODER_KEYS = ("dec_norm", "dec_wk", "dec_bk", "dec_wv", "dec_bv", "v_gate",
                "dec_e_norm", "dec_e_w1", "dec_e_b1", "dec_e_w2", "dec_e_b2", "dec_e_scale")


def split_params(params: dict) -> tuple[dict, dict]:
    """(sharer-side encoder params, receiver-side decoder params). The conditioning projection
    (cond_*) sits with the encoder: it consumes the receiver summary sent back to the sharer."""
    return ({k: v for k, v in params.items() if k not in DECODER_KEYS},
            {k: v for k, v in params.items() if k in DECODER_KEYS})


def receive_message(params: dict, message: jax.Array, receiver_state: tuple, *, cfg: LCFXConfig,
                    sharer_cfg: Optional[ModelConfig], receiver_cfg: ModelConfig, capacity: int, train: bool = False,
                    rng=None, step=0, slot_mask: Optional[jax.Array] = None):
    """The receiver half (`interface`): receiver_state = (the receiver's params, its special-prefix ids [B, P]).
    Positioned: the cache [prefix | slots] (`message_prefix`); injection="extra": the position-free ExtraKV.
    slot_mask [B, m]: the message's real slots (default: `default_slot_mask`)."""
    if cfg.injection != "positioned":
        return decode_message(params, message, cfg=cfg, receiver_cfg=receiver_cfg, slot_mask=slot_mask)
    receiver_params, prefix_ids = receiver_state
    return message_prefix(params, message, receiver_params, prefix_ids, capacity=capacity, cfg=cfg,
                          receiver_cfg=receiver_cfg, slot_mask=slot_mask)


ADAPTER = AdapterKind(SPEC, init_lcfx, lcfx_param_axes, send=encode_message,
                      receive=receive_message, prepare=calibrate_embed_decoder,
                      reads_receiver_prompt=lambda cfg: cfg.conditioned)
