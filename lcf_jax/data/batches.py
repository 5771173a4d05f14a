"""The batch layouts: one NamedTuple per layout, each built in one place (its feed).

NamedTuples are pytrees, so `jax.jit`, shardings and `device_put` take a batch as it is, and an optional part
(a teacher row, a precomputed sharer cache) is `None`: absent from the pytree, fixed when the feed is built,
never a key tested while tracing. Arrays are numpy on the host and jax arrays inside a step; nothing here
imports JAX.

    QABatch             different contexts (LCF-X), `pipeline.QAFeatures` train rows and the synthetic feed
    PromptBatch         the same examples for decoding (`QAFeatures`, mode "generate")
    SharedContextBatch  shared context (LCF, C2C), `shared_context.SharedContextFeatures` and the synthetic feed
    PassagePairBatch    latent-alignment pre-training (`train.latent_align.PassagePairs`)
    TokenTargetBatch    token-translation pre-training (`train.token_translation.TokenBatches`)
    LocatorBatch        locator pre-training (`train.locator.LocatorBatches`)
"""
from __future__ import annotations

from typing import Any, NamedTuple, Optional, Sequence

import numpy as np

Array = Any  # numpy on the host, jax inside a step


class SharerRows(NamedTuple):
    """The sharer's passage [B, Ts]: token ids, which slots hold tokens, and their RoPE positions."""
    ids: Array
    mask: Array
    positions: Array


class SharerKV(NamedTuple):
    """The sharer's cache of its `SharerRows`, computed outside the differentiated step: [Ls, B, Hs, Ts, Ds] each
    (the batch axis is axis 1)."""
    keys: Array
    values: Array


class ReceiverKV(NamedTuple):
    """The receiver's cache of its own left-padded context rows [B, Tc] (shared context), read from a store of
    caches computed once (`train.context_store`): [Lr, B, Hr, Tc, Dr] each."""
    keys: Array
    values: Array


class TeacherRows(NamedTuple):
    """The teacher's right-padded row [B, Tt] ([prefix | `Context: {passage}\\n` | prompt | target]); student
    row position t holds the same token as teacher position t + offset [B]."""
    ids: Array
    mask: Array
    offset: Array


class QABatch(NamedTuple):
    """Different contexts: a left-padded passage for the sharer; right-padded prompt + target rows [B, Tr] for
    the receiver, loss_mask True exactly at the target tokens. example_mask False marks padding copies;
    example_rows is each row's index in the feed's tokenised examples."""
    sharer: SharerRows
    receiver_ids: Array
    receiver_mask: Array
    loss_mask: Array
    example_mask: Array
    example_rows: Array
    teacher: Optional[TeacherRows] = None
    sharer_kv: Optional[SharerKV] = None


class PromptBatch(NamedTuple):
    """QA examples for decoding: the passage as in `QABatch`, the prompt left-padded [B, Tp] so that every row
    ends at the same position."""
    sharer: SharerRows
    prompt_ids: Array
    prompt_mask: Array
    prompt_positions: Array
    example_mask: Array
    example_rows: Array


class SharedContextBatch(NamedTuple):
    """Shared context: the context in both tokenizations, left-padded (sharer [B, Ts], receiver [B, Tc]),
    alignment [B, Tc] the sharer slot of each receiver slot (-1: none), and the continuation [B, Tr]
    right-padded with loss_mask on its target tokens."""
    sharer: SharerRows
    receiver_ctx_ids: Array
    receiver_ctx_mask: Array
    alignment: Array
    receiver_ids: Array
    receiver_mask: Array
    loss_mask: Array
    example_mask: Array
    sharer_kv: Optional[SharerKV] = None
    receiver_kv: Optional[ReceiverKV] = None
    # Choice distillation (`data.choice_questions.ChoiceBatches`): rows are the choices of consecutive questions,
    # data.choice_group rows each (example_mask False on a question's padding rows), every row the same context
    # as the others of its question; [B] the teacher's mean log-probability of each row's choice.
    choice_teacher: Optional[Array] = None


class PassagePairBatch(NamedTuple):
    """One passage in both tokenizations, left-padded [B, L]; alignment maps each receiver slot to its sharer
    slot (-1: none) and align_weight marks the receiver tokens a loss reads."""
    sharer: SharerRows
    receiver_ids: Array
    receiver_mask: Array
    alignment: Array
    align_weight: Array


class TokenTargetBatch(NamedTuple):
    """Right-padded passages [B, S] with the receiver token id each sharer token should become, and the tokens
    a loss reads."""
    sharer: SharerRows
    targets: Array
    weight: Array


class LocatorBatch(NamedTuple):
    """Right-padded passages [B, S] with the tokens that overlap the answer, and the receiver's prompt [B, Tp]."""
    sharer: SharerRows
    answer_mask: Array
    prompt_ids: Array
    prompt_mask: Array
    prompt_positions: Array


def is_namedtuple(x) -> bool:
    return isinstance(x, tuple) and hasattr(x, "_fields")


def stack(rows: Sequence[Any]):
    """One batch from per-example layouts of the same type (numpy arrays of one example each): every array
    stacked on a new leading axis, None parts kept None."""
    first = rows[0]
    if first is None:
        return None
    if is_namedtuple(first):
        return type(first)(*(stack([getattr(r, f) for r in rows]) for f in first._fields))
    return np.stack([np.asarray(r) for r in rows])


def leaves(batch, prefix: str = "") -> dict[str, Array]:
    """Flat {dotted name: array} view of a batch (logs, shape reports, tests)."""
    if batch is None:
        return {}
    if is_namedtuple(batch):
        out: dict[str, Array] = {}
        for f in batch._fields:
            out.update(leaves(getattr(batch, f), f"{prefix}{f}."))
        return out
    return {prefix[:-1]: batch}


CACHES = (SharerKV, ReceiverKV)   # the layouts whose batch axis is 1 ([layers, batch, ...]), every other array's is 0


def map_rows(fn, batch):
    """fn(array, batch_axis) on every array of a batch, its layout kept (None stays None): the one rule for where
    a batch's rows are (data-parallel sharding splits them, gradient accumulation cuts them into micro-batches)."""
    if batch is None:
        return None
    if isinstance(batch, CACHES):
        return type(batch)(fn(batch.keys, 1), fn(batch.values, 1))
    if is_namedtuple(batch):
        return type(batch)(*(map_rows(fn, x) for x in batch))
    if isinstance(batch, dict):
        return {k: map_rows(fn, v) for k, v in batch.items()}
    return fn(batch, 0)
