"""Multiple choice with a shared context (T1): both models read the question, the receiver scores
each choice on its cache fused with the sharer's by an LCF or C2C adapter.

The context is the question prompt (the same `Question: ...\\nAnswer:` that the receiver-alone row
of T1 scores with, `tables.mc_loglik`); each choice " {choice}" is a continuation. The scoring
runs exactly the training forward (`train.objective.receiver_hidden`, evaluation mode: C2C's gate
is hard), on one batch whose rows are the choices of one question. The rows share their context, so both models
read it once, the adapter fuses it once, and every choice continues from that fused cache.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lcf_jax.data.batches import ReceiverKV, SharedContextBatch, SharerKV
from lcf_jax.data.shared_context import (MC_PROMPT, SharedContextFeatures, mc_features,  # noqa: F401 (read here)
                                         unrelated_sharer_tokens)
from lcf_jax.models import transformer
from lcf_jax.train import objective
from lcf_jax.train.objective import Setup


def context_read_once(sharer_params, receiver_params, batch: SharedContextBatch, setup: Setup) -> SharedContextBatch:
    """`batch` with both models' caches of its context computed from its first row and given to every row: exact
    when the rows share one context (the choices of one question), a quarter of the context work for four."""
    cast = lambda p: jax.tree.map(lambda x: x.astype(setup.dtype), p)  # noqa: E731
    first = jax.tree.map(lambda x: x[:1], batch.sharer)
    s = objective.sharer_cache(cast(sharer_params), first, setup)
    r = objective.receiver_context_cache(cast(receiver_params), batch.receiver_ctx_ids[:1],
                                         batch.receiver_ctx_mask[:1], 0, setup)
    rows = batch.receiver_ids.shape[0]
    spread = lambda x: jnp.repeat(x, rows, axis=1)  # noqa: E731  (the batch axis of a cache is axis 1)
    return batch._replace(sharer_kv=SharerKV(spread(s.keys), spread(s.values)),
                          receiver_kv=ReceiverKV(spread(r.keys), spread(r.values)))


@functools.partial(jax.jit, static_argnames=("setup", "read_once"))
def choice_logliks(adapter_params, sharer_params, receiver_params, batch, *, setup: Setup, read_once: bool = True):
    """[B] sum of log-probabilities of each row's continuation. read_once: both models read the context and the
    adapter fuses it once for all rows; False makes every row read and fuse it itself (the reference
    `benchmarks/bench_t1_scoring.py` times against)."""
    if read_once:
        batch = context_read_once(sharer_params, receiver_params, batch, setup)
    hidden = objective.receiver_hidden(adapter_params, sharer_params, receiver_params, batch, setup, train=False,
                                       same_context=read_once)
    return objective.continuation_logprob(hidden, receiver_params, batch.receiver_ids, batch.loss_mask, setup)[0]


@functools.partial(jax.jit, static_argnames=("config", "width"))
def choice_token_logprobs(params, toks, pos, mask, start, *, config, width: int):
    """A model alone: [B, width] log-probability of toks[:, start + j] given what precedes it (start + width <= T).
    The LM head runs on those positions only (Gemma3's 262k-word softmax over the whole prompt is most of the work)."""
    hidden, _ = transformer.forward(params, toks, pos, config=config, token_mask=mask, hidden_only=True)
    h = jax.lax.dynamic_slice_in_dim(hidden, start - 1, width, axis=1)
    target = jax.lax.dynamic_slice_in_dim(toks, start, width, axis=1)
    logp = jax.nn.log_softmax(transformer.lm_head(params, h, config=config), axis=-1)
    return jnp.take_along_axis(logp, target[..., None], axis=-1)[..., 0]


def choice_batch(features: SharedContextFeatures, question: str, choices: Sequence[str], sharer_question: str = "",
                 sharer_prefix: str = "") -> tuple[SharedContextBatch, list[int]]:
    """(one row per choice: the question prompt as the shared context, " {choice}" as the continuation; each
    choice's token count). sharer_question (the control): the sharer reads that question instead, cut or repeated
    to the length of its own reading, while the receiver reads its own. sharer_prefix (the hint probe): the sharer
    alone reads this text before the question (`SharedContextFeatures.tokenize_sharer_prefixed`)."""
    if sharer_question and sharer_prefix:
        raise ValueError("give the sharer another question or a prefix, not both")
    prompt = MC_PROMPT.format(question=question)
    if sharer_prefix:
        toks = [features.tokenize_sharer_prefixed({"prompt": prompt, "completion": c}, sharer_prefix) for c in choices]
    else:
        toks = [features.tokenize({"prompt": prompt, "completion": c}) for c in choices]
    if any(t is None for t in toks):
        raise ValueError(f"question {question[:60]!r} or one of its choices tokenizes to nothing")
    if sharer_question:
        other = features.tokenize({"prompt": MC_PROMPT.format(question=sharer_question), "completion": choices[0]})
        if other is None:
            raise ValueError(f"control question {sharer_question[:60]!r} tokenizes to nothing")
        toks = [dataclasses.replace(t, sharer=unrelated_sharer_tokens(other.sharer, len(t.sharer))) for t in toks]
    keys = [features.bucket_key(t) for t in toks]
    # Few distinct shapes, few compiles: both contexts share one length bucket, targets pad to 16 or 64.
    ctx = max(max(k[0], k[1]) for k in keys)
    tgt = max(k[2] for k in keys)
    key = (ctx, ctx, 16 if tgt <= 16 else max(tgt, 64))
    return jax.tree.map(jnp.asarray, features.collate(toks, key=key)), [len(t.target) for t in toks]


def mc_loglik_fused(setup: Setup, adapter_params, frozen: tuple, features: SharedContextFeatures, question: str,
                    choices: Sequence[str], sharer_question: str = "", sharer_prefix: str = ""
                    ) -> tuple[list[float], list[int]]:
    """(sum of log-probabilities of each choice's tokens, each choice's token count); sharer_question: the
    control, sharer_prefix: the hint probe (`choice_batch`)."""
    batch, counts = choice_batch(features, question, choices, sharer_question, sharer_prefix)
    ll = choice_logliks(adapter_params, frozen[0], frozen[1], batch, setup=setup)
    return [float(x) for x in np.asarray(ll)], counts
