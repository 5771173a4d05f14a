"""A different-contexts adapter (LCF-X) as a channel between two agents: sharer cache -> message (m x r latents)
-> the receiver's cache.

The stages are separate jitted functions so a caller can time them and ship the message (optionally
quantized) between processes: `send` runs on the sharer's side, the receiving ones on the receiver's. Both
halves are the registered kind's (`adapters.interface`): `ADAPTER_KINDS[cfg.kind].send / .receive`.
"""
from __future__ import annotations

import functools
from typing import Optional, Sequence

import jax
import jax.numpy as jnp

from lcf_jax.adapters import ADAPTER_KINDS, lcfx
from lcf_jax.comm.agents import Agent, generate_answers, pad_rows, prefill_cache
from lcf_jax.models.cache import ExtraKV, KVCache
from lcf_jax.models.config import ModelConfig


@functools.partial(jax.jit, static_argnames=("cfg", "sharer_cfg", "receiver_cfg"))
def encode(adapter_params, sharer_cache, receiver_cache, *, cfg, sharer_cfg: ModelConfig, receiver_cfg: ModelConfig):
    return ADAPTER_KINDS[cfg.kind].send(adapter_params, sharer_cache, receiver_cache, cfg=cfg, sharer_cfg=sharer_cfg,
                                        receiver_cfg=receiver_cfg)


@functools.partial(jax.jit, static_argnames=("cfg", "receiver_cfg"))
def _decode(adapter_params, latents, *, cfg, receiver_cfg: ModelConfig) -> ExtraKV:
    extra = ADAPTER_KINDS[cfg.kind].receive(adapter_params, latents, None, cfg=cfg, sharer_cfg=None,
                                            receiver_cfg=receiver_cfg, capacity=0)
    return ExtraKV(extra.keys.astype(jnp.float32), extra.values.astype(jnp.float32), extra.mask)


def send(sharer: Agent, receiver: Agent, adapter_params, cfg, sharer_rows: Sequence[Sequence[int]],
         prompt_rows: Optional[Sequence[Sequence[int]]] = None, *, multiple: int = 64) -> jax.Array:
    """The message [B, m, r] for each sharer context (a kind that reads the receiver's prompt, LCF-X's conditioned
    variant, also gets the receiver's own prompt cache: what it already holds)."""
    s_tok, s_mask = pad_rows(sharer_rows, sharer.config.pad_token_id, multiple)
    s_cache = prefill_cache(sharer.params, jnp.asarray(s_tok), jnp.asarray(s_mask), config=sharer.config)
    r_cache = None
    if ADAPTER_KINDS[cfg.kind].reads_receiver_prompt(cfg):
        if prompt_rows is None:
            raise ValueError("this adapter reads the receiver's prompt (LCF-X conditioned): give its prompt rows")
        r_tok, r_mask = pad_rows(prompt_rows, receiver.config.pad_token_id, 32)
        r_cache = prefill_cache(receiver.params, jnp.asarray(r_tok), jnp.asarray(r_mask), config=receiver.config)
    return encode(adapter_params, s_cache, r_cache, cfg=cfg, sharer_cfg=sharer.config, receiver_cfg=receiver.config)


def receive(receiver: Agent, adapter_params, cfg, latents: jax.Array) -> ExtraKV:
    return _decode(adapter_params, latents, cfg=cfg, receiver_cfg=receiver.config)


@functools.partial(jax.jit, static_argnames=("cfg", "receiver_cfg", "capacity"))
def _prefix(adapter_params, latents, receiver_params, prefix_ids, slot_mask, *, capacity: int, cfg,
            receiver_cfg: ModelConfig) -> KVCache:
    return ADAPTER_KINDS[cfg.kind].receive(adapter_params, latents, (receiver_params, prefix_ids), cfg=cfg,
                                           sharer_cfg=None, receiver_cfg=receiver_cfg, capacity=capacity,
                                           slot_mask=slot_mask)


def special_prefix(agent: Agent) -> list[int]:
    """The ids every encoded prompt of this agent starts with (its BOS; empty for SmolLM2)."""
    return agent.encode("", special=True)


def answer_positioned(receiver: Agent, adapter_params, cfg, latents: jax.Array, prompt_rows, *, max_new_tokens: int,
                      slot_mask=None) -> list[str]:
    """Answers with the message as a positioned prefix: [BOS | m slots | prompt], the prompt rows (which
    start with the special prefix) continuing after the slots."""
    pre = special_prefix(receiver)
    for i, r in enumerate(prompt_rows):
        if list(r[:len(pre)]) != pre:
            raise ValueError(f"prompt row {i} does not start with the receiver's special prefix {pre}")
    rest = [list(r[len(pre):]) for r in prompt_rows]
    tokens, mask = pad_rows(rest, receiver.config.pad_token_id, 32)
    b, n = latents.shape[0], latents.shape[1]
    capacity = len(pre) + n + tokens.shape[1] + max_new_tokens
    prefix_ids = jnp.broadcast_to(jnp.asarray(pre, jnp.int32), (b, len(pre)))
    sm = lcfx.default_slot_mask(cfg, latents) if slot_mask is None else jnp.asarray(slot_mask, bool)
    cache = _prefix(adapter_params, latents, receiver.params, prefix_ids, sm, capacity=capacity, cfg=cfg,
                    receiver_cfg=receiver.config)
    return generate_answers(receiver, rest, max_new_tokens=max_new_tokens, cache=cache)


def answer(sharer: Agent, receiver: Agent, adapter_params, cfg, sharer_rows, prompt_rows, *,
           max_new_tokens: int, quantize: Optional[str] = None) -> tuple[list[str], int]:
    """Answers through LCF-X; returns (answers, bytes of one message)."""
    latents = send(sharer, receiver, adapter_params, cfg, sharer_rows, prompt_rows)
    nbytes = int(lcfx.message_nbytes(latents[:1]))
    if quantize:
        q, scale = lcfx.quantize_message(latents, quantize)
        nbytes = lcfx.message_nbytes((q[:1], None if scale is None else scale[:1]))
        latents = lcfx.dequantize_message(q, scale)
    if cfg.injection == "positioned":
        return answer_positioned(receiver, adapter_params, cfg, latents, prompt_rows,
                                 max_new_tokens=max_new_tokens), nbytes
    extra = receive(receiver, adapter_params, cfg, latents)
    return generate_answers(receiver, prompt_rows, max_new_tokens=max_new_tokens, extra_kv=extra), nbytes
