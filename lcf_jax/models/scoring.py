"""A model alone scoring continuations of a context it reads once."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from lcf_jax.models import transformer
from lcf_jax.models.cache import KVCache


@functools.partial(jax.jit, static_argnames=("config",))
def continuation_logprobs_read_once(params, ctx, ctx_mask, conts, conts_mask, *, config):
    """A model alone: [Q * G, W] log-probability of each right-padded continuation token conts[r, j], rows in
    runs of G continuing one of the Q left-padded contexts ctx [Q, Tc]; each context is read once and its cache
    given to its G rows (a choice's share of the work instead of a whole prompt per choice); 0 where conts_mask is
    False."""
    (q, tc), (rows, width) = ctx.shape, conts.shape
    group = rows // q
    empty = KVCache.empty(config, q, tc + width, jnp.float32)
    last, cache = transformer.forward(params, ctx, transformer.positions_from_mask(ctx_mask), empty, config=config,
                                      token_mask=ctx_mask, last_logits_only=True)
    start = jnp.repeat(jnp.sum(ctx_mask, axis=1, dtype=jnp.int32), group)[:, None]
    positions = start + jnp.arange(width, dtype=jnp.int32)[None, :]
    hidden, _ = transformer.forward(params, conts, positions, cache.repeat_rows(group), config=config,
                                    token_mask=conts_mask, hidden_only=True)
    first = jnp.repeat(jax.nn.log_softmax(last[:, -1].astype(jnp.float32), -1), group, axis=0)
    first = jnp.take_along_axis(first, conts[:, :1], axis=-1)
    rest = jax.nn.log_softmax(transformer.lm_head(params, hidden[:, :-1], config=config).astype(jnp.float32), -1)
    rest = jnp.take_along_axis(rest, conts[:, 1:, None], axis=-1)[..., 0]
    return jnp.concatenate([first, rest], axis=1) * conts_mask
