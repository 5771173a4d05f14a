"""Jit-compiled decoding: prefill once, then a `lax.while_loop` over new tokens (no Python loop).

Batches are left-padded (see `pad_batch`); each row stops at its first EOS and the loop ends when
every row has stopped or `max_new_tokens` is reached. Sampling is greedy at temperature 0.
"""
from __future__ import annotations

import functools
from typing import Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lcf_jax.models.cache import ExtraKV, KVCache
from lcf_jax.models.config import ModelConfig
from lcf_jax.models.transformer import forward, positions_from_mask


class PromptTooLongError(ValueError):
    pass


class Generation(NamedTuple):
    tokens: jax.Array  # [B, max_new_tokens], pad_token after a row's EOS
    lengths: jax.Array  # [B] number of generated tokens, EOS included
    cache: KVCache


def pad_batch(rows: Sequence[Sequence[int]], pad_id: int, length: Optional[int] = None,
              multiple: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Left-pads token lists to a common length (rounded up to `multiple`). Returns tokens, mask."""
    n = max(len(r) for r in rows) if length is None else length
    n = -(-n // multiple) * multiple
    tokens = np.full((len(rows), n), pad_id, np.int32)
    mask = np.zeros((len(rows), n), bool)
    for i, r in enumerate(rows):
        if len(r) > n:
            raise PromptTooLongError(f"row {i} has {len(r)} tokens, more than the padded length {n}")
        if len(r):
            tokens[i, n - len(r):] = r
            mask[i, n - len(r):] = True
    return tokens, mask


def first_line(text: str) -> str:
    """A decoded answer's first line of text, without the spaces around it (a base model runs on into the next
    'Question:' or example)."""
    return text.strip().split("\n")[0].strip()


def in_length_order(rows: Sequence[Sequence[int]], batch_size: int, answer: Callable[[list], Sequence],
                    progress: Optional[Callable[[int, int], None]] = None) -> list:
    """`answer(batch)` over `rows` in batches of up to batch_size, shortest rows first (little padding, few padded
    lengths), its results back in the rows' order. progress(done, total) after each batch."""
    order = np.argsort([len(r) for r in rows], kind="stable")
    out: list = [None] * len(rows)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        for i, result in zip(idx, answer([rows[i] for i in idx])):
            out[i] = result
        if progress is not None:
            progress(min(start + batch_size, len(rows)), len(rows))
    return out


def check_prompt_length(config: ModelConfig, prompt_len: int, max_new_tokens: int) -> None:
    total = prompt_len + max_new_tokens
    if total > config.max_position_embeddings:
        raise PromptTooLongError(
            f"prompt of {prompt_len} tokens + {max_new_tokens} new tokens = {total} exceeds "
            f"{config.name or config.family}'s maximum of {config.max_position_embeddings} positions; "
            "shorten the prompt or lower max_new_tokens")


def _sample(logits: jax.Array, key: jax.Array, temperature: float, top_k: int) -> jax.Array:
    if temperature <= 0.0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = logits / temperature
    if top_k > 0:
        kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("config", "max_new_tokens", "temperature", "top_k"))
def generate(params: dict, tokens: jax.Array, mask: jax.Array, key: jax.Array, *, config: ModelConfig,
             max_new_tokens: int, temperature: float = 0.0, top_k: int = 0,
             extra_kv: Optional[ExtraKV] = None, cache: Optional[KVCache] = None) -> Generation:
    """Decodes up to `max_new_tokens` after a left-padded prompt.

    tokens, mask: [B, T]. `cache` (optional) holds a context already prefilled (e.g. an adapter-fused
    cache); it must have room for T + max_new_tokens more slots. `extra_kv` is attended at every step.
    """
    b, t = tokens.shape
    eos = jnp.asarray(config.eos_token_ids or (-1,), jnp.int32)
    if cache is None:
        cache = KVCache.empty(config, b, t + max_new_tokens, params["embed"].dtype)
        start_pos = jnp.zeros((b,), jnp.int32)
    else:
        # Positions continue after the context the cache already holds.
        start_pos = jnp.max(jnp.where(cache.mask, cache.positions + 1, 0), axis=-1)
    positions = positions_from_mask(mask) + start_pos[:, None]
    logits, cache = forward(params, tokens, positions, cache, config=config, token_mask=mask, extra_kv=extra_kv,
                            last_logits_only=True, causal_blocks=True)
    next_pos = start_pos + jnp.sum(mask, axis=-1).astype(jnp.int32)
    key, sub = jax.random.split(key)
    first = _sample(logits[:, -1], sub, temperature, top_k)
    out = jnp.full((b, max_new_tokens), config.pad_token_id, jnp.int32).at[:, 0].set(first)
    done = jnp.isin(first, eos)
    lengths = jnp.ones((b,), jnp.int32)

    def cond(state):
        i, _, _, done, *_ = state
        return (i < max_new_tokens) & ~jnp.all(done)

    def body(state):
        i, out, cache, done, lengths, pos, key = state
        prev = out[:, i - 1]
        logits, cache = forward(params, prev[:, None], pos[:, None], cache, config=config, extra_kv=extra_kv)
        key, sub = jax.random.split(key)
        tok = _sample(logits[:, -1], sub, temperature, top_k)
        tok = jnp.where(done, config.pad_token_id, tok)
        out = out.at[:, i].set(tok)
        lengths = lengths + (~done).astype(jnp.int32)
        done = done | jnp.isin(tok, eos)
        return i + 1, out, cache, done, lengths, pos + 1, key

    state = (jnp.asarray(1), out, cache, done, lengths, next_pos, key)
    _, out, cache, _, lengths, _, _ = jax.lax.while_loop(cond, body, state)
    return Generation(out, lengths, cache)


def generate_text(params: dict, config: ModelConfig, tokenizer, prompts: Sequence[str], *,
                  max_new_tokens: int = 32, temperature: float = 0.0, seed: int = 0,
                  chat: bool = False, pad_multiple: int = 16) -> list[str]:
    """Convenience wrapper: strings in, strings out (chat template applied when `chat`)."""
    rows = []
    for p in prompts:
        if chat:
            ids = tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                                tokenize=True)
            ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
        else:
            ids = tokenizer(p)["input_ids"]
        rows.append(list(ids))
    tokens, mask = pad_batch(rows, config.pad_token_id, multiple=pad_multiple)
    check_prompt_length(config, tokens.shape[1], max_new_tokens)
    gen = generate(params, jnp.asarray(tokens), jnp.asarray(mask), jax.random.PRNGKey(seed), config=config,
                   max_new_tokens=max_new_tokens, temperature=temperature)
    out_tokens, lengths = np.asarray(gen.tokens), np.asarray(gen.lengths)
    return [tokenizer.decode(out_tokens[i, :lengths[i]], skip_special_tokens=True) for i in range(len(rows))]
