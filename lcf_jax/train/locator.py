"""Stage 2 of a window-pooled LCF-X adapter: learn where in the passage the receiver's question points.

Window pooling (`adapter.lcfx.pooling="window"`) sends the m consecutive translated tokens that hold the
most mass of softmax(token_scores), the scores reading the receiver's summary of its own prompt. Here the
scores learn to put that mass on the answer: the target of a training row is the set of sharer tokens
overlapping the first (case-insensitive) occurrence of a reference answer in its passage, and the loss is
    -log sum_{t in answer} softmax(scores)_t.
Rows whose answer is not in the passage are skipped. Trained: the receiver summary (cond_*) and the
scores (loc_*); the translation (stage 1) is fixed. An unconditioned adapter trains only its prior
(loc_wb) and never runs the receiver. Each model runs only up to the last layer it is
read at. Logged: `window_recall` (the chosen window holds the whole answer) and `top1_in_answer`.
"""
from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lcf_jax.adapters import lcfx
from lcf_jax.adapters.align import tokenize_with_offsets
from lcf_jax.data.batches import LocatorBatch, SharerRows
from lcf_jax.data.pipeline import positions_from_mask
from lcf_jax.models import transformer
from lcf_jax.train import stage
from lcf_jax.train.objective import Setup
from lcf_jax.train.phase import Phase
from lcf_jax.train.token_translation import sharer_prefix_model

TRAINED_KEYS = ("cond_w", "cond_b", "cond_norm", "loc_wq", "loc_wk", "loc_wb")


def answer_tokens(passage: str, answers: Sequence[str], offsets) -> np.ndarray:
    """bool [T]: the tokens (by character offsets) overlapping the first occurrence of a reference answer
    in the passage (case-insensitive); all False when none occurs."""
    low = passage.lower()
    out = np.zeros(len(offsets), bool)
    for a in answers:
        a = a.strip().lower()
        i = low.find(a) if a else -1
        if i >= 0:
            j = i + len(a)
            for t, (s, e) in enumerate(offsets):
                out[t] = e > s and s < j and e > i
            return out
    return out


class LocatorBatches(stage.ShuffledRows):
    """Right-padded (passage, prompt, answer-token) batches of the rows whose answer is in the passage;
    all rows tokenised once. Deterministic in (seed, position)."""

    def __init__(self, examples: Sequence[dict], sharer_tok, receiver_tok, *, max_len: int, max_prompt_len: int,
                 prompt_template: str, batch_size: int, seed: int = 0, sharer_pad: int = 0, receiver_pad: int = 0):
        rows = []
        for e in examples:
            ids, off = tokenize_with_offsets(sharer_tok, e["sharer_context"])
            ids, off = ids[:max_len], off[:max_len]
            span = answer_tokens(e["sharer_context"], e["answers"], off)
            if span.any():
                prompt = receiver_tok(prompt_template.format(question=e["question"]))["input_ids"]
                rows.append((ids, span, prompt[-max_prompt_len:] if len(prompt) > max_prompt_len else prompt))
        if not rows:
            raise ValueError("the locator stage found no training row whose answer occurs in its passage")
        n = len(rows)
        self.ids = np.full((n, max_len), sharer_pad, np.int32)
        self.mask = np.zeros((n, max_len), bool)
        self.span = np.zeros((n, max_len), bool)
        self.prompt = np.full((n, max_prompt_len), receiver_pad, np.int32)
        self.prompt_mask = np.zeros((n, max_prompt_len), bool)
        for i, (ids, span, prompt) in enumerate(rows):
            self.ids[i, :len(ids)], self.mask[i, :len(ids)], self.span[i, :len(ids)] = ids, True, span
            self.prompt[i, :len(prompt)], self.prompt_mask[i, :len(prompt)] = prompt, True
        self.num_rows, self.batch_size, self.seed, self.position = n, int(batch_size), int(seed), 0

    def __next__(self) -> LocatorBatch:
        rows = self.next_rows()
        mask, prompt_mask = self.mask[rows], self.prompt_mask[rows]
        return LocatorBatch(SharerRows(self.ids[rows], mask, positions_from_mask(mask)), self.span[rows],
                            self.prompt[rows], prompt_mask, positions_from_mask(prompt_mask))


def receiver_prefix_model(receiver_params: dict, setup: Setup):
    """(params, config) of the receiver cut after the last layer the conditioning reads (its first layer
    for an unconditioned adapter, which never runs it)."""
    _, _, cu = lcfx.used_layers(setup.adapter, setup.sharer, setup.receiver)
    return transformer.first_layers(receiver_params, setup.receiver, max(cu, default=0) + 1)


def locator_loss(adapter_params: dict, cut: tuple, batch: LocatorBatch, setup: Setup, *, cfgs: tuple):
    (s_params, r_params), (s_cfg, r_cfg) = cut, cfgs
    cfg = setup.adapter
    _, s_cache = transformer.forward(s_params, batch.sharer.ids, batch.sharer.positions, None, config=s_cfg,
                                     token_mask=batch.sharer.mask, last_logits_only=True)
    s_cache = jax.lax.stop_gradient(s_cache)
    z = jax.lax.stop_gradient(lcfx.token_latents(adapter_params, s_cache, cfg=cfg, sharer_cfg=s_cfg, receiver_cfg=r_cfg))
    c = None
    if cfg.conditioned:
        _, r_cache = transformer.forward(r_params, batch.prompt_ids, batch.prompt_positions, None, config=r_cfg,
                                         token_mask=batch.prompt_mask, last_logits_only=True)
        c = lcfx.receiver_summary(adapter_params, jax.lax.stop_gradient(r_cache), cfg=cfg, sharer_cfg=s_cfg,
                                  receiver_cfg=r_cfg)
    scores = lcfx.token_scores(adapter_params, z, c, cfg=cfg)
    valid, span = batch.sharer.mask, batch.answer_mask & batch.sharer.mask
    logp = jax.nn.log_softmax(jnp.where(valid, scores, -1e30), axis=-1)
    loss = -jnp.mean(jax.nn.logsumexp(jnp.where(span, logp, -1e30), axis=-1))
    index, ok = lcfx.window_slots(scores, valid, cfg.slots)
    in_window = jnp.zeros_like(span).at[jnp.arange(span.shape[0])[:, None], index].max(ok)
    recall = jnp.mean(jnp.all(~span | in_window, axis=-1).astype(jnp.float32))
    top1 = jnp.mean(jnp.take_along_axis(span, jnp.argmax(logp, -1)[:, None], axis=1)[:, 0].astype(jnp.float32))
    return loss, {"loss": loss, "window_recall": recall, "top1_in_answer": top1}


def make_phase(params: dict, frozen: tuple, batches, setup: Setup, *, steps: int, lr: float, warmup_steps: int = 20,
               log_offset: int = 0) -> Phase:
    """The locator as a `Phase` (its metrics logged as locator_*): frozen = (sharer, receiver) params, each kept up
    to the last layer it is read at. `params` say which locator weights exist (an unconditioned adapter has the
    prior loc_wb alone)."""
    if setup.kind != "lcfx" or setup.adapter.pooling != "window":
        raise ValueError("the locator stage trains an LCF-X adapter with adapter.lcfx.pooling='window'")
    (s_params, s_cfg), (r_params, r_cfg) = sharer_prefix_model(frozen[0], setup), receiver_prefix_model(frozen[1], setup)
    loss = functools.partial(locator_loss, setup=setup, cfgs=(s_cfg, r_cfg))
    trained = tuple(k for k in TRAINED_KEYS if k in params)
    return stage.make_phase("locator", trained, lambda p, cut, batch: loss(p, cut, batch), (s_params, r_params), batches,
                            steps=steps, lr=lr, warmup_steps=warmup_steps, hint="lower pretrain.locator_lr",
                            log_prefix="locator_", log_offset=log_offset)


def pretrain(params: dict, frozen: tuple, batches, setup: Setup, *, steps: int, lr: float, warmup_steps: int = 20,
             log=None, log_every: int = 10) -> dict:
    """`steps` Adam steps of the locator without checkpoints; returns the full adapter params."""
    return stage.run(make_phase(params, frozen, batches, setup, steps=steps, lr=lr, warmup_steps=warmup_steps), params,
                     log=log, log_every=log_every)
