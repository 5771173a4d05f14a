"""The training objective: the receiver's cross-entropy on target tokens given what the adapter injects.

The frozen models are inputs (closed over as arrays, wrapped in stop_gradient); only the adapter's
parameters are differentiated. Two batch layouts (`data.batches`):

different contexts (lcfx): `QABatch`, from `data.pipeline.QAFeatures` (train mode) or the synthetic feed;
shared context (lcf, c2c): `SharedContextBatch`, from `data.shared_context.SharedContextFeatures`.
Either may carry a precomputed sharer cache (`sharer_kv`); a `SharedContextBatch` may also carry the receiver's
cache of the context (`receiver_kv`, from `train.context_store`), a `QABatch` the teacher's rows.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional, Union

import jax
import jax.numpy as jnp

from lcf_jax.adapters import ADAPTER_KINDS
from lcf_jax.data.batches import QABatch, ReceiverKV, SharedContextBatch, SharerKV, SharerRows
from lcf_jax.models import transformer
from lcf_jax.models.cache import ExtraKV, KVCache
from lcf_jax.models.config import ModelConfig


@dataclasses.dataclass(frozen=True)
class Setup:
    """Everything static about a run's forward: hashable, a jit static argument."""
    kind: str  # "lcf" | "lcfx" | "c2c"
    adapter: Any  # LCFConfig | LCFXConfig | C2CConfig
    sharer: ModelConfig
    receiver: ModelConfig
    compute_dtype: str = "float32"  # "bfloat16": frozen models and adapter math in bf16, fp32 master weights
    # Logits are computed only at this many target positions per row (0: every position). The
    # receiver's vocabulary (262k for Gemma3) makes the full [B, T, vocab] head the costliest matmul.
    loss_positions: int = 0
    # The receiver's special prefix length (its BOS): a positioned LCF-X message sits right after it.
    receiver_prefix: int = 0
    # Loss weights (LCF-X): cross-entropy on the target; KL(teacher || student) on the target tokens,
    # the teacher being the receiver that reads the passage (batch.teacher); and the mean squared
    # distance of the student's final hidden states to the teacher's over the prompt and target,
    # relative to the teacher's mean square.
    ce_weight: float = 1.0
    kl_weight: float = 0.0
    hidden_weight: float = 0.0
    kl_temperature: float = 1.0
    # Choice distillation (> 0: rows come in groups of this many, the choices of one question, `batch.choice_teacher`
    # their teacher's scores): KL(teacher || student) over each question's choices, at kl_temperature.
    choice_group: int = 0
    # > 0 (choice distillation): the batch's second half holds each question again with the sharer reading an
    # unrelated question (`ChoiceBatches(controls=True)`); this weights KL(receiver alone || that fused receiver)
    # over its choices: a message that carries nothing of the question should change no choice.
    choice_control_weight: float = 0.0

    @property
    def distills(self) -> bool:
        return self.kl_weight > 0 or self.hidden_weight > 0

    @property
    def dtype(self):
        return jnp.dtype(self.compute_dtype)


def sharer_cache(sharer_params: dict, rows: SharerRows, setup: Setup, kv: Optional[SharerKV] = None) -> KVCache:
    """The sharer's cache over its rows: precomputed (`kv`), or computed now (no gradient)."""
    if kv is not None:
        return KVCache(keys=kv.keys.astype(setup.dtype), values=kv.values.astype(setup.dtype),
                       positions=rows.positions.astype(jnp.int32), mask=rows.mask.astype(bool),
                       index=jnp.asarray(rows.ids.shape[1], jnp.int32))
    _, cache = transformer.forward(sharer_params, rows.ids, rows.positions, None, config=setup.sharer,
                                   token_mask=rows.mask, last_logits_only=True)
    return jax.tree.map(jax.lax.stop_gradient, cache)


def receiver_context_cache(receiver_params: dict, ctx_ids: jax.Array, ctx_mask: jax.Array, room: int, setup: Setup
                           ) -> KVCache:
    """The receiver's cache of its left-padded context rows [B, Tc], with `room` empty slots after them for the
    continuation (no gradient: the receiver is frozen)."""
    tc = ctx_ids.shape[1]
    empty = KVCache.empty(setup.receiver, ctx_ids.shape[0], tc + room, setup.dtype)
    _, cache = transformer.forward(receiver_params, ctx_ids, transformer.positions_from_mask(ctx_mask), empty,
                                   config=setup.receiver, token_mask=ctx_mask, last_logits_only=True)
    return jax.tree.map(jax.lax.stop_gradient, cache)


def stored_context_cache(kv: ReceiverKV, ctx_mask: jax.Array, room: int, setup: Setup) -> KVCache:
    """`receiver_context_cache` from K/V computed once and stored (`train.context_store`): the same slots,
    positions and mask; padding slots hold zeros instead of what the receiver made of pad tokens, which no
    query attends to and no adapter fuses."""
    pad = ((0, 0), (0, 0), (0, 0), (0, room), (0, 0))
    mask = jnp.pad(ctx_mask.astype(bool), ((0, 0), (0, room)))
    positions = jnp.pad(transformer.positions_from_mask(ctx_mask), ((0, 0), (0, room)))
    return KVCache(keys=jnp.pad(kv.keys.astype(setup.dtype), pad), values=jnp.pad(kv.values.astype(setup.dtype), pad),
                   positions=positions, mask=mask, index=jnp.asarray(ctx_mask.shape[1], jnp.int32))


def _cast(tree, dtype):
    return jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def _right_padded_positions(mask: jax.Array, offset=0) -> jax.Array:
    return jnp.broadcast_to(jnp.arange(mask.shape[1], dtype=jnp.int32), mask.shape) + offset


def receiver_hidden(adapter_params: dict, sharer_params: dict, receiver_params: dict,
                    batch: Union[QABatch, SharedContextBatch], setup: Setup, *,
                    train: bool = True, rng: Optional[jax.Array] = None, step=0, same_context: bool = False,
                    group: int = 1) -> jax.Array:
    """Receiver final hidden states [B, Tr, D] over `receiver_ids` with what the adapter's two halves give it
    (`adapters.interface`): a fused cache of the shared context, or a message prefix.

    same_context (evaluation of a shared-context adapter only): every row continues the same context (the choices
    of one question), so its fused cache is computed once, from the first row, and given to every row (the same to
    float rounding), and a row's share of the fusion work (most of C2C's) instead of all of it.
    group (shared context): rows come in runs of `group` that share a context (choice distillation); both models
    read and the adapter fuses each run's context once, from its first row."""
    if same_context and (train or not ADAPTER_KINDS[setup.kind].shared_context):
        raise ValueError("same_context=True fuses one row's context for every row: it needs train=False (training "
                         "draws noise per row) and a shared-context adapter kind (lcf, c2c), "
                         f"got train={train}, kind={setup.kind!r}")
    if group > 1 and (same_context or not ADAPTER_KINDS[setup.kind].shared_context):
        raise ValueError(f"group={group} shares a context per run of rows: it needs a shared-context adapter kind "
                         f"(lcf, c2c) and same_context=False, got kind={setup.kind!r}, same_context={same_context}")
    dt = setup.dtype
    kind = ADAPTER_KINDS[setup.kind]
    frozen_s, frozen_r = jax.lax.stop_gradient(_cast(sharer_params, dt)), jax.lax.stop_gradient(_cast(receiver_params, dt))
    ap = _cast(adapter_params, dt) if dt != jnp.float32 else adapter_params
    if group > 1:   # one context per run of rows (their continuation rows stay): read and fuse it once
        every = lambda x: None if x is None else x[::group] if x.ndim < 5 else x[:, ::group]  # noqa: E731 (caches: axis 1)
        batch = batch._replace(sharer=jax.tree.map(every, batch.sharer), receiver_ctx_ids=every(batch.receiver_ctx_ids),
                               receiver_ctx_mask=every(batch.receiver_ctx_mask), alignment=every(batch.alignment),
                               sharer_kv=jax.tree.map(every, batch.sharer_kv),
                               receiver_kv=jax.tree.map(every, batch.receiver_kv))
    s_cache = sharer_cache(frozen_s, batch.sharer, setup, batch.sharer_kv)
    ids, mask = batch.receiver_ids, batch.receiver_mask
    halves = dict(cfg=setup.adapter, sharer_cfg=setup.sharer, receiver_cfg=setup.receiver)
    options = dict(train=train, rng=rng, step=step)
    if not kind.shared_context:
        r_cache = None
        if kind.reads_receiver_prompt(setup.adapter):
            prompt_mask = mask & ~batch.loss_mask.astype(bool)
            _, r_cache = transformer.forward(frozen_r, ids, _right_padded_positions(mask), None, config=setup.receiver,
                                             token_mask=prompt_mask, last_logits_only=True)
            r_cache = r_cache._replace(mask=prompt_mask)
        message = kind.send(ap, s_cache, r_cache, **halves)
        p = setup.receiver_prefix
        received = kind.receive(ap, message, (frozen_r, ids[:, :p]), capacity=ids.shape[1] + message.shape[1],
                                **halves, **options)
        if isinstance(received, ExtraKV):   # LCF-X's position-free convention: keys every query sees
            extra = ExtraKV(received.keys.astype(dt), received.values.astype(dt), received.mask)
            hidden, _ = transformer.forward(frozen_r, ids, _right_padded_positions(mask), None, config=setup.receiver,
                                            token_mask=mask, extra_kv=extra, hidden_only=True)
            return hidden
        return _after_prefix_hidden(received, frozen_r, ids, mask, setup)
    # Shared context: the receiver's own cache of the context (stored, or prefilled now), fused, then the
    # continuation on the fused cache.
    ctx_mask, tr = batch.receiver_ctx_mask, ids.shape[1]
    offset = jnp.repeat(jnp.sum(ctx_mask, axis=1, dtype=jnp.int32)[:, None], group, axis=0)
    if batch.receiver_kv is not None:
        r_cache = stored_context_cache(batch.receiver_kv, ctx_mask, tr, setup)
    else:
        r_cache = receiver_context_cache(frozen_r, batch.receiver_ctx_ids, ctx_mask, tr, setup)
    alignment = jnp.concatenate([batch.alignment, jnp.full((ctx_mask.shape[0], tr), -1, jnp.int32)], axis=1)
    if same_context:
        s_cache, r_cache, alignment = s_cache.first_rows(1), r_cache.first_rows(1), alignment[:1]
    fused = kind.receive(ap, kind.send(ap, s_cache, None, **halves), (r_cache, alignment), **halves, **options)
    if same_context:
        fused = fused.repeat_rows(ids.shape[0])
    elif group > 1:
        fused = fused.repeat_rows(group)
    hidden, _ = transformer.forward(frozen_r, ids, _right_padded_positions(mask, offset), fused,
                                    config=setup.receiver, token_mask=mask, hidden_only=True)
    return hidden


def receiver_alone_hidden(receiver_params: dict, batch: SharedContextBatch, setup: Setup, group: int = 1
                          ) -> jax.Array:
    """The receiver alone's final hidden states [B, Tr, D] over `receiver_ids` after its own cache of the context
    (read once per run of `group` rows), no adapter; no gradient."""
    frozen_r = jax.lax.stop_gradient(_cast(receiver_params, setup.dtype))
    ids, mask = batch.receiver_ids, batch.receiver_mask
    ctx_ids, ctx_mask = batch.receiver_ctx_ids[::group], batch.receiver_ctx_mask[::group]
    cache = receiver_context_cache(frozen_r, ctx_ids, ctx_mask, ids.shape[1], setup)
    offset = jnp.repeat(jnp.sum(ctx_mask, axis=1, dtype=jnp.int32)[:, None], group, axis=0)
    hidden, _ = transformer.forward(frozen_r, ids, _right_padded_positions(mask, offset),
                                    cache.repeat_rows(group) if group > 1 else cache, config=setup.receiver,
                                    token_mask=mask, hidden_only=True)
    return jax.lax.stop_gradient(hidden)


def _after_prefix_hidden(prefix: KVCache, frozen_r, ids, mask, setup: Setup) -> jax.Array:
    """Receiver hidden states [B, Tr, D] over right-padded rows [prefix | prompt + target] whose first P
    tokens (its BOS) and the message slots are already in `prefix`; the P prefix rows of the result are
    zeros (no loss reads them)."""
    p, b = setup.receiver_prefix, ids.shape[0]
    # the prompt continues right after the last valid slot, as generation continues it (`generate`)
    start = jnp.max(jnp.where(prefix.mask, prefix.positions + 1, 0), axis=1).astype(jnp.int32)[:, None]
    hidden, _ = transformer.forward(frozen_r, ids[:, p:], _right_padded_positions(mask[:, p:], start), prefix,
                                    config=setup.receiver, token_mask=mask[:, p:], hidden_only=True)
    return jnp.concatenate([jnp.zeros((b, p, hidden.shape[-1]), hidden.dtype), hidden], axis=1)


def teacher_hidden(receiver_params: dict, batch: QABatch, setup: Setup) -> jax.Array:
    """The teacher's final hidden states aligned to the student's rows: [B, Tr, D], where row position t
    holds the teacher's state at t + teacher_offset (the teacher read `Context: {passage}\n` after its
    prefix, then the same prompt and target tokens). No gradient."""
    frozen_r = jax.lax.stop_gradient(_cast(receiver_params, setup.dtype))
    tid, tmask = batch.teacher.ids, batch.teacher.mask
    hidden, _ = transformer.forward(frozen_r, tid, _right_padded_positions(tmask), None, config=setup.receiver,
                                    token_mask=tmask, hidden_only=True)
    tr = batch.receiver_ids.shape[1]
    idx = jnp.minimum(jnp.arange(tr)[None, :] + batch.teacher.offset[:, None], tid.shape[1] - 1)
    return jax.lax.stop_gradient(jnp.take_along_axis(hidden, idx[..., None], axis=1))


def _target_positions(weights: jax.Array, k: int):
    """Indices [B, k'] of the first k positions where weights > 0 (all positions when k is 0)."""
    if k and k < weights.shape[1]:
        return jnp.argsort(weights <= 0, axis=1, stable=True)[:, :k]
    return jnp.broadcast_to(jnp.arange(weights.shape[1]), weights.shape)


def distill_losses(hidden: jax.Array, t_hidden: jax.Array, receiver_params: dict, ids: jax.Array,
                   weights: jax.Array, hidden_weights: jax.Array, setup: Setup) -> dict:
    """CE on the target, KL(teacher || student) on the target tokens, and the relative hidden-state
    distance over `hidden_weights` positions. hidden, t_hidden: [B, T, D] aligned; weights: [B, T]
    (targets); hidden_weights: [B, T] (prompt + target tokens after the prefix)."""
    h, th, tgt, w = hidden[:, :-1], t_hidden[:, :-1], ids[:, 1:], weights[:, 1:].astype(jnp.float32)
    order = _target_positions(w, setup.loss_positions)
    pick = lambda x: jnp.take_along_axis(x, order[..., None], axis=1)  # noqa: E731
    h_t, th_t = pick(h), pick(th)
    tgt, w = jnp.take_along_axis(tgt, order, axis=1), jnp.take_along_axis(w, order, axis=1)
    head = jax.lax.stop_gradient(_cast(receiver_params, h.dtype))
    s_logits = transformer.lm_head(head, h_t, config=setup.receiver)
    logp = jax.nn.log_softmax(s_logits, axis=-1)
    n = jnp.maximum(jnp.sum(w), 1.0)
    ce = -jnp.sum(jnp.take_along_axis(logp, tgt[..., None], axis=-1)[..., 0] * w) / n
    tau = setup.kl_temperature
    t_logits = jax.lax.stop_gradient(transformer.lm_head(head, th_t, config=setup.receiver))
    t_logp = jax.nn.log_softmax(t_logits / tau, axis=-1)
    s_logp = logp if tau == 1.0 else jax.nn.log_softmax(s_logits / tau, axis=-1)
    kl = jnp.sum(jnp.exp(t_logp) * (t_logp - s_logp), axis=-1)
    kl = jnp.sum(kl * w) / n * tau * tau
    hw = hidden_weights.astype(jnp.float32)
    diff = jnp.mean(jnp.square(hidden.astype(jnp.float32) - t_hidden.astype(jnp.float32)), axis=-1)
    scale = jnp.mean(jnp.square(t_hidden.astype(jnp.float32)), axis=-1)
    hid = jnp.sum(diff / jnp.maximum(scale, 1e-6) * hw) / jnp.maximum(jnp.sum(hw), 1.0)
    total = setup.ce_weight * ce + setup.kl_weight * kl + setup.hidden_weight * hid
    return {"loss": total, "ce": ce, "kl": kl, "hidden": hid, "target_tokens": jnp.sum(w)}


def target_cross_entropy(hidden: jax.Array, receiver_params: dict, ids: jax.Array, weights: jax.Array, setup: Setup
                         ) -> tuple[jax.Array, jax.Array]:
    """Mean CE of predicting ids[:, t] from hidden[:, t-1] where weights[:, t]; returns (loss, n_tokens)."""
    h, tgt, w = hidden[:, :-1], ids[:, 1:], weights[:, 1:].astype(jnp.float32)
    k = setup.loss_positions
    if k and k < h.shape[1]:
        order = jnp.argsort(w <= 0, axis=1, stable=True)[:, :k]  # target positions first, in order
        h = jnp.take_along_axis(h, order[..., None], axis=1)
        tgt, w = jnp.take_along_axis(tgt, order, axis=1), jnp.take_along_axis(w, order, axis=1)
    logits = transformer.lm_head(jax.lax.stop_gradient(_cast(receiver_params, h.dtype)), h, config=setup.receiver)
    logp = jax.nn.log_softmax(logits, axis=-1)
    nll = -jnp.take_along_axis(logp, tgt[..., None], axis=-1)[..., 0]
    n = jnp.sum(w)
    return jnp.sum(nll * w) / jnp.maximum(n, 1.0), n


def continuation_logprob(hidden: jax.Array, receiver_params: dict, ids: jax.Array, weights: jax.Array, setup: Setup
                         ) -> tuple[jax.Array, jax.Array]:
    """([B] sum of the log-probabilities of each row's continuation tokens (weights > 0), [B] their count)."""
    h, tgt, w = hidden[:, :-1], ids[:, 1:], weights[:, 1:].astype(jnp.float32)
    logits = transformer.lm_head(jax.lax.stop_gradient(_cast(receiver_params, h.dtype)), h, config=setup.receiver)
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    tok = jnp.take_along_axis(logp, tgt[..., None], axis=-1)[..., 0]
    return jnp.sum(tok * w, axis=1), jnp.sum(w, axis=1)


def choice_scores(hidden: jax.Array, receiver_params: dict, ids: jax.Array, weights: jax.Array, setup: Setup
                  ) -> jax.Array:
    """[B] each row's mean log-probability of its continuation tokens (T1's length-normalised score of a choice)."""
    total, count = continuation_logprob(hidden, receiver_params, ids, weights, setup)
    return total / jnp.maximum(count, 1.0)


def choice_distill_losses(scores: jax.Array, teacher: jax.Array, valid: jax.Array, group: int, temperature: float
                          ) -> dict:
    """KL(teacher || student) between the two distributions over each question's choices (softmax of the scores at
    `temperature`, padding rows left out), averaged over questions; "agree": how often the student's top choice is
    the teacher's. scores, teacher, valid: [Q * group], a question's rows consecutive."""
    valid = valid.reshape(-1, group).astype(bool)
    s = jnp.where(valid, scores.reshape(-1, group) / temperature, -1e9)
    t = jnp.where(valid, jax.lax.stop_gradient(teacher.astype(jnp.float32)).reshape(-1, group) / temperature, -1e9)
    s_logp, t_logp = jax.nn.log_softmax(s, axis=-1), jax.nn.log_softmax(t, axis=-1)
    kl = jnp.sum(jnp.where(valid, jnp.exp(t_logp) * (t_logp - s_logp), 0.0), axis=-1)
    questions = jnp.any(valid, axis=-1).astype(jnp.float32)
    n = jnp.maximum(jnp.sum(questions), 1.0)
    agree = (jnp.argmax(s, axis=-1) == jnp.argmax(t, axis=-1)).astype(jnp.float32)
    loss = jnp.sum(kl * questions) / n * temperature * temperature
    return {"loss": loss, "kl": loss, "agree": jnp.sum(agree * questions) / n}


def loss_fn(adapter_params: dict, sharer_params: dict, receiver_params: dict,
            batch: Union[QABatch, SharedContextBatch], setup: Setup, *,
            train: bool = True, rng: Optional[jax.Array] = None, step=0):
    if setup.choice_group:
        if getattr(batch, "choice_teacher", None) is None:
            raise ValueError("choice distillation needs batches with choice_teacher (set data.choice_file)")
        hidden = receiver_hidden(adapter_params, sharer_params, receiver_params, batch, setup, train=train, rng=rng,
                                 step=step, group=setup.choice_group)
        g, t = setup.choice_group, setup.kl_temperature
        valid = batch.example_mask.astype(bool)
        scores = choice_scores(hidden, receiver_params, batch.receiver_ids, batch.loss_mask, setup)
        if not setup.choice_control_weight:
            out = choice_distill_losses(scores, batch.choice_teacher, valid, g, t)
            out["target_tokens"] = jnp.sum(batch.loss_mask.astype(jnp.float32) * valid[:, None])
            return out["loss"], out
        n = scores.shape[0] // 2   # [questions | the same questions, the sharer reading an unrelated one]
        own = batch._replace(**{f: getattr(batch, f)[:n] for f in ("receiver_ids", "receiver_mask",
                                                                  "receiver_ctx_ids", "receiver_ctx_mask")})
        alone = choice_scores(receiver_alone_hidden(receiver_params, own, setup, group=g), receiver_params,
                              own.receiver_ids, batch.loss_mask[:n], setup)
        out = choice_distill_losses(scores[:n], batch.choice_teacher[:n], valid[:n], g, t)
        control = choice_distill_losses(scores[n:], alone, valid[n:], g, t)
        out.update(loss=out["loss"] + setup.choice_control_weight * control["loss"], control_kl=control["kl"],
                   target_tokens=jnp.sum(batch.loss_mask.astype(jnp.float32) * valid[:, None]))
        return out["loss"], out
    hidden = receiver_hidden(adapter_params, sharer_params, receiver_params, batch, setup, train=train, rng=rng,
                             step=step)
    examples = batch.example_mask.astype(bool)[:, None]
    weights = batch.loss_mask.astype(bool) & examples
    if setup.distills:
        if getattr(batch, "teacher", None) is None:
            raise ValueError("distillation (kl_weight or hidden_weight > 0) needs teacher rows: set "
                             "data.teacher_context_len > 0")
        t_hidden = teacher_hidden(receiver_params, batch, setup)
        positions = jnp.arange(weights.shape[1])[None, :] >= setup.receiver_prefix
        hidden_weights = batch.receiver_mask.astype(bool) & positions & examples
        out = distill_losses(hidden, t_hidden, receiver_params, batch.receiver_ids, weights, hidden_weights, setup)
        return out["loss"], out
    loss, n = target_cross_entropy(hidden, receiver_params, batch.receiver_ids, weights, setup)
    return loss, {"loss": loss, "target_tokens": n}
