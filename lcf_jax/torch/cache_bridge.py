"""Between Hugging Face transformers caches and the adapters.

transformers keeps a DynamicCache: per layer `cache.layers[i].keys/.values` [B, H, S, D] (keys after RoPE),
the layout lcf_jax's KVCache stacks over layers. This module converts both ways and runs the two
communication modes beside unmodified transformers models:

  LCF / C2C (shared context): `fuse_caches` turns the receiver's prefilled context cache into the fused
      DynamicCache; `generate_with_cache` continues from it (positions continue after the context).
  LCF-X (different contexts): transformers has no notion of position-free extra K/V entries, so the m
      decoded slots are PREPENDED to the receiver's DynamicCache as a prefix (keys as decoded: no RoPE,
      exactly like lcf_jax, which never rotates extra entries) and generate() gets an attention mask
      [slot_mask | prompt mask] and explicit position_ids that start at 0 on the first real prompt token
      (transformers builds causal masks from cache indices, and the m prefix slots sit before every
      query, so each query sees every valid slot; RoPE uses the explicit position_ids). This reproduces
      lcf_jax's `forward(..., extra_kv=...)` exactly, with one exception: on sliding-window layers
      (Gemma3) lcf_jax lets every query see the extra slots whatever the window, while transformers'
      sliding mask (and its DynamicSlidingWindowLayer, which evicts old entries) hides a prefix slot
      once the query is `sliding_window` or more cache slots past it. `answer_with_lcfx` therefore
      refuses m + prompt length + max_new_tokens > sliding_window (Gemma3-270m: 512) instead of
      silently differing.

Positions of left-padded rows follow lcf_jax: 0 at each row's first real token (cumsum of the mask - 1).
Sharer and receiver prefills here use a plain DynamicCache() so that sliding layers keep every token
(transformers' config-built cache keeps only the last window-1 tokens of a sliding layer).
"""
from __future__ import annotations

from typing import Any, Optional

import torch

from lcf_jax.models.config import ModelConfig
from lcf_jax.torch import common as C
from lcf_jax.torch.common import KV, ExtraKV
from lcf_jax.torch.load import check_model, model_config_of


class SlidingWindowMismatchError(ValueError):
    """The request would let transformers' sliding window hide LCF-X slots that lcf_jax keeps visible."""


def _dynamic_cache_cls():
    from transformers import DynamicCache
    return DynamicCache


def positions_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """RoPE positions of a left-padded batch: 0 at each row's first real token. mask [B, T] -> int64 [B, T]."""
    return (torch.cumsum(mask.to(torch.long), dim=-1) - 1).clamp(min=0)


def kv_from_cache(cache: Any, attention_mask: Optional[torch.Tensor] = None,
                  positions: Optional[torch.Tensor] = None) -> KV:
    """A transformers Cache (DynamicCache) -> stacked KV. attention_mask [B, S] marks real slots (default
    all); positions default to `positions_from_mask(attention_mask)`."""
    layers = list(cache.layers)
    if not layers:
        raise ValueError("the cache holds no layers")
    keys, values = [], []
    for i, layer in enumerate(layers):
        k, v = layer.keys, layer.values
        seen = getattr(layer, "cumulative_length", None)
        if seen is not None and seen != k.shape[-2]:
            raise ValueError(f"cache layer {i} holds only the last {k.shape[-2]} of its {seen} tokens (a sliding-"
                             "window layer); prefill with `lcf_jax.torch.cache_bridge.prefill` (plain DynamicCache)")
        if keys and tuple(k.shape) != tuple(keys[0].shape):
            raise ValueError(f"cache layer {i} keys {tuple(k.shape)} differ from layer 0's {tuple(keys[0].shape)}")
        keys.append(k)
        values.append(v)
    keys_t, values_t = torch.stack(keys), torch.stack(values)
    b, s = keys_t.shape[1], keys_t.shape[3]
    mask = (torch.ones(b, s, dtype=torch.bool, device=keys_t.device) if attention_mask is None
            else attention_mask.to(torch.bool))
    if tuple(mask.shape) != (b, s):
        raise ValueError(f"attention_mask {tuple(mask.shape)} does not cover the cache's [batch, slots]={(b, s)}")
    if positions is None:
        positions = positions_from_mask(mask)
    return KV(keys_t, values_t, positions.to(torch.long), mask)


def cache_from_kv(keys: torch.Tensor, values: torch.Tensor, hf_config: Any = None):
    """Stacked keys/values [L, B, H, S, D] -> DynamicCache. With `hf_config`, layers follow the model's layer
    types (sliding layers then keep only their last window-1 entries, as transformers does)."""
    cls = _dynamic_cache_cls()
    data = [(keys[i], values[i]) for i in range(keys.shape[0])]
    return cls(data, config=hf_config) if hf_config is not None else cls(data)


@torch.no_grad()
def prefill(model: Any, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None):
    """Runs a transformers causal LM on a (left-padded) batch. Returns (KV of every token, last logits [B, V])."""
    mask = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.to(torch.bool)
    pos = positions_from_mask(mask)
    out = model(input_ids=input_ids, attention_mask=mask.to(torch.long), position_ids=pos,
                cache=_dynamic_cache_cls()(), use_cache=True, logits_to_keep=1)
    return kv_from_cache(out.cache, mask, pos), out.logits[:, -1]


def fuse_caches(adapter, sharer: KV, receiver: KV, alignment: torch.Tensor, hf_config: Any = None):
    """LCF / C2C: the receiver's context cache with the sharer fused in, as a DynamicCache for generate()."""
    if adapter.kind not in ("lcf", "c2c"):
        raise ValueError(f"fuse_caches needs an lcf or c2c adapter, got {adapter.kind!r} (use answer_with_lcfx)")
    with torch.no_grad():
        keys, values = adapter(sharer, receiver, alignment)
    return cache_from_kv(keys, values, hf_config)


def check_window(receiver: ModelConfig, total_slots: int, what: str) -> None:
    if receiver.sliding_window and "sliding" in receiver.layer_types and total_slots > receiver.sliding_window:
        raise SlidingWindowMismatchError(
            f"{what} = {total_slots} cache slots exceeds the receiver's sliding window ({receiver.sliding_window}): "
            "transformers' sliding-window layers would stop attending to the LCF-X slots that lcf_jax keeps "
            "visible to every query; shorten the prompt or max_new_tokens")


def generate_with_cache(model: Any, cache: Any, cache_mask: torch.Tensor, input_ids: torch.Tensor,
                        attention_mask: Optional[torch.Tensor] = None,
                        start_positions: Optional[torch.Tensor] = None, **generate_kwargs) -> torch.Tensor:
    """generate() continuing from a prefilled `cache` whose slots `cache_mask` [B, P] marks valid.

    input_ids [B, T] (left-padded) are the NEW tokens only; their RoPE positions are
    start_positions[b] + 0, 1, ... over the real tokens (lcf_jax's `generate(cache=...)` convention; default 0).
    Returns generate()'s sequences [B, T + new tokens]."""
    b, t = input_ids.shape
    mask = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.to(torch.bool)
    pos = positions_from_mask(mask)
    if start_positions is not None:
        pos = pos + start_positions.to(torch.long)[:, None]
    full_mask = torch.cat([cache_mask.to(torch.long), mask.to(torch.long)], dim=1)
    # input_ids shorter than the mask: transformers takes them as the new tokens after the cache.
    return model.generate(input_ids=input_ids, attention_mask=full_mask, position_ids=pos, cache=cache,
                          **generate_kwargs)


def _greedy_defaults(model: Any, kwargs: dict) -> dict:
    cfg = model_config_of(model)
    out = dict(do_sample=False, num_beams=1)
    if cfg.eos_token_ids:
        out["eos_token_id"] = list(cfg.eos_token_ids)
    out["pad_token_id"] = cfg.pad_token_id
    out.update(kwargs)
    return out


@torch.no_grad()
def lcfx_extra(sharer_model: Any, receiver_model: Any, adapter, sharer_input_ids: torch.Tensor,
               receiver_input_ids: Optional[torch.Tensor] = None, *,
               sharer_attention_mask: Optional[torch.Tensor] = None,
               receiver_attention_mask: Optional[torch.Tensor] = None,
               slot_mask: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, ExtraKV]:
    """Sharer context -> (message latents [B, m, r], decoded ExtraKV for the receiver)."""
    s_kv, _ = prefill(sharer_model, sharer_input_ids, sharer_attention_mask)
    r_kv = None
    if adapter.config["conditioned"]:
        if receiver_input_ids is None:
            raise ValueError("the conditioned LCF-X variant needs the receiver's prompt")
        r_kv, _ = prefill(receiver_model, receiver_input_ids, receiver_attention_mask)
    latents = adapter.encode(s_kv, r_kv)
    return latents, adapter.decode(latents, slot_mask)


def prefix_cache(extra: ExtraKV, receiver_model: Any):
    """The receiver's DynamicCache holding the m LCF-X slots (position-free keys, no RoPE) as a prefix."""
    dtype = next(receiver_model.parameters()).dtype
    return cache_from_kv(extra.keys.to(dtype), extra.values.to(dtype), receiver_model.config)


def snap_to_vocabulary(embeds: torch.Tensor, receiver_model: Any) -> torch.Tensor:
    """`lcfx.snap_to_vocabulary`: each vector [B, n, D] replaced by the receiver's input vector (embedding row
    times the model's embed scale) of largest cosine similarity."""
    emb = receiver_model.get_input_embeddings()
    table = emb.weight.to(torch.float32)
    scale = float(getattr(emb, "embed_scale", 1.0))
    unit = table / table.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    ids = torch.argmax(embeds.to(torch.float32) @ unit.T, dim=-1)
    return table[ids] * scale


@torch.no_grad()
def positioned_prefix(receiver_model: Any, adapter, latents: torch.Tensor, prefix_ids: torch.Tensor,
                      slot_mask: Optional[torch.Tensor] = None):
    """The positioned LCF-X message as a plain transformers cache: [prefix | n slots].

    prefix_ids [B, P]: what the receiver's tokenizer puts before every prompt (Gemma's BOS; P may be 0).
    Slot j (of the valid ones) sits at position P + j: decoder "embed" lets the receiver prefill the decoded
    input vectors itself; decoder "kv" writes the decoded keys rotated at those positions. Returns
    (DynamicCache, cache mask [B, P + n], the position the prompt continues at [B])."""
    if not adapter.positioned:
        raise ValueError("positioned_prefix needs an adapter with injection='positioned' (this one sends "
                         "position-free extra KV: use prefix_cache)")
    b, n = latents.shape[:2]
    p = prefix_ids.shape[1]
    device = latents.device
    if slot_mask is None:  # window pooling leaves the slots past a short passage's end all zero
        slot_mask = (latents.ne(0).any(dim=-1) if adapter.config["pooling"] == "window"
                     else torch.ones(b, n, dtype=torch.bool, device=device))
    mask = slot_mask.to(torch.bool)
    positions = p + positions_from_mask(mask)
    cache_mask = torch.cat([torch.ones(b, p, dtype=torch.bool, device=device), mask], dim=1)
    dtype = next(receiver_model.parameters()).dtype
    if adapter.config["decoder"] == "embed":
        cache = _dynamic_cache_cls()(config=receiver_model.config)
        if p:
            receiver_model(input_ids=prefix_ids, position_ids=torch.arange(p, device=device)[None].expand(b, p),
                           cache=cache, use_cache=True, logits_to_keep=1)
        embeds = adapter.decode_embeddings(latents)
        if adapter.config.get("snap", False):
            embeds = snap_to_vocabulary(embeds, receiver_model)
        out = receiver_model(inputs_embeds=embeds.to(dtype),
                             attention_mask=cache_mask.to(torch.long), position_ids=positions, cache=cache,
                             use_cache=True, logits_to_keep=1)
        return out.cache, cache_mask, p + mask.sum(-1)
    rc = adapter.receiver_config
    extra = adapter.decode(latents, mask)
    keys = extra.keys.clone()
    for l in range(rc.num_layers):
        cos, sin = C.layer_rope(positions, rc, l)
        keys[l] = C.apply_rope(keys[l].transpose(1, 2), cos, sin).transpose(1, 2)
    if p:
        pre, _ = prefill(receiver_model, prefix_ids)
        keys = torch.cat([pre.keys.to(torch.float32), keys], dim=3)
        values = torch.cat([pre.values.to(torch.float32), extra.values], dim=3)
    else:
        values = extra.values
    return cache_from_kv(keys.to(dtype), values.to(dtype), receiver_model.config), cache_mask, p + mask.sum(-1)


@torch.no_grad()
def answer_with_lcfx(sharer_model: Any, receiver_model: Any, adapter, sharer_input_ids: torch.Tensor,
                     receiver_input_ids: torch.Tensor, max_new_tokens: int, *,
                     sharer_attention_mask: Optional[torch.Tensor] = None,
                     receiver_attention_mask: Optional[torch.Tensor] = None,
                     slot_mask: Optional[torch.Tensor] = None, check_models: bool = True,
                     prefix_ids: Optional[torch.Tensor] = None, **generate_kwargs) -> torch.Tensor:
    """The receiver answers its prompt with the sharer's context sent through an LCF-X adapter.

    sharer_input_ids [B, S] (the sharer's own context) and receiver_input_ids [B, T] (the receiver's prompt),
    each left-padded when batched (pass the attention masks). Greedy by default (generate_kwargs override).
    Returns receiver_model.generate()'s sequences [B, T + new tokens] (prompt first, as generate() returns).
    A positioned adapter (injection="positioned") puts the message right after `prefix_ids` [B, P] (the ids the
    receiver's tokenizer starts every prompt with, e.g. Gemma's BOS): receiver_input_ids then hold the prompt
    WITHOUT them.
    """
    if adapter.kind != "lcfx":
        raise ValueError(f"answer_with_lcfx needs an lcfx adapter, got {adapter.kind!r}")
    if check_models:
        check_model(adapter, "sharer", sharer_model)
        check_model(adapter, "receiver", receiver_model)
    r_mask = (torch.ones_like(receiver_input_ids, dtype=torch.bool) if receiver_attention_mask is None
              else receiver_attention_mask.to(torch.bool))
    if adapter.positioned:
        b = receiver_input_ids.shape[0]
        pre = (torch.zeros(b, 0, dtype=receiver_input_ids.dtype) if prefix_ids is None else prefix_ids)
        s_kv, _ = prefill(sharer_model, sharer_input_ids, sharer_attention_mask)
        r_kv = None
        if adapter.config["conditioned"]:  # the receiver's own prompt, prefix included, as in lcf_jax
            r_kv, _ = prefill(receiver_model, torch.cat([pre, receiver_input_ids], dim=1),
                              torch.cat([torch.ones_like(pre, dtype=torch.bool), r_mask], dim=1))
        latents = adapter.encode(s_kv, r_kv)
        cache, cache_mask, start = positioned_prefix(receiver_model, adapter, latents, pre, slot_mask)
        return generate_with_cache(receiver_model, cache, cache_mask, receiver_input_ids, r_mask, start_positions=start,
                                   max_new_tokens=max_new_tokens, **_greedy_defaults(receiver_model, generate_kwargs))
    check_window(adapter.receiver_config, adapter.slots + receiver_input_ids.shape[1] + max_new_tokens,
                 f"{adapter.slots} LCF-X slots + {receiver_input_ids.shape[1]} prompt tokens + {max_new_tokens} new")
    _, extra = lcfx_extra(sharer_model, receiver_model, adapter, sharer_input_ids, receiver_input_ids,
                          sharer_attention_mask=sharer_attention_mask, receiver_attention_mask=r_mask,
                          slot_mask=slot_mask)
    cache = prefix_cache(extra, receiver_model)
    return generate_with_cache(receiver_model, cache, extra.mask, receiver_input_ids, r_mask,
                               max_new_tokens=max_new_tokens, **_greedy_defaults(receiver_model, generate_kwargs))
