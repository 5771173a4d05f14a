"""Stage 1 of an LCF-X adapter with the embed decoder: translate each sharer token into the input vector
the receiver gives the same text.

Why. The ladder shows the receiver keeps all it learns from a passage when it prefills the passage's
own input vectors at real positions (R2 = R1), and nothing when fed a translation that is merely close
in squared error. So the translation is trained against the receiver's own vocabulary, densely: every
passage token is a supervised example (a 256-token passage gives 256), and no receiver forward is needed.

Target. Sharer token s covers characters [a_s, b_s) of the passage; its piece is the text from the end
of the previous token to b_s (leading whitespace included, so " Paris" maps to the receiver's "▁Paris").
The target is the receiver's first token of that piece, as the receiver embeds it (embedding times
embed_scale). For SmolLM2 -> Gemma3 nearly every piece is exactly one receiver token (both split digits one by
one), so a one-to-one translation loses almost nothing; `weight` leaves out whitespace-only pieces.

Loss, per token, over the path the message takes (`lcfx.token_latents` -> `token_messages` ->
`decode_embeddings`):
  * relative squared error ||e - t||^2 / ||t||^2 against the target vector t, and
  * a contrastive cross-entropy over the batch's targets (cosine logits / `temperature`; every token in
    the batch with the same target id counts as the answer), so that near-synonyms are kept apart.
Trained: enc_*, pool_wv, pool_wo, out_norm, dec_e_*. The sharer runs only up to its last used layer
(`transformer.first_layers`).
"""
from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lcf_jax.adapters import lcfx
from lcf_jax.adapters.align import tokenize_with_offsets
from lcf_jax.data.batches import SharerRows, TokenTargetBatch
from lcf_jax.data.pipeline import positions_from_mask
from lcf_jax.models import transformer
from lcf_jax.train import stage
from lcf_jax.train.objective import Setup
from lcf_jax.train.phase import Phase

TRAINED_KEYS = ("enc_w", "enc_b", "enc_norm", "pool_wv", "pool_wo", "out_norm",
                "dec_e_norm", "dec_e_w1", "dec_e_b1", "dec_e_w2", "dec_e_b2", "dec_e_scale")


def token_targets(text: str, sharer_tok, receiver_tok, max_len: int) -> tuple[list[int], list[int], list[bool]]:
    """(sharer ids, receiver target id per sharer token, weight) of one passage, at most max_len tokens."""
    ids, offsets = tokenize_with_offsets(sharer_tok, text)
    ids, offsets = ids[:max_len], offsets[:max_len]
    pieces, prev = [], 0
    for a, b in offsets:
        pieces.append(text[prev:b] if b > a else "")
        prev = max(prev, b)
    r_ids = receiver_tok(pieces, add_special_tokens=False)["input_ids"] if pieces else []
    targets = [int(r[0]) if r else 0 for r in r_ids]
    weight = [bool(p.strip()) and bool(r) for p, r in zip(pieces, r_ids)]
    return ids, targets, weight


class TokenBatches(stage.ShuffledRows):
    """Right-padded batches of passages with per-token receiver targets; all passages tokenised once.
    Deterministic in (seed, position); `position` is the whole state."""

    def __init__(self, passages: Sequence[str], sharer_tok, receiver_tok, *, max_len: int, batch_size: int,
                 seed: int = 0, pad_id: int = 0):
        passages = list(dict.fromkeys(p for p in passages if p.strip()))
        if not passages:
            raise ValueError("token translation got no passages (check data.train_sets)")
        n, L = len(passages), int(max_len)
        self.ids = np.full((n, L), pad_id, np.int32)
        self.targets = np.zeros((n, L), np.int32)
        self.mask = np.zeros((n, L), bool)
        self.weight = np.zeros((n, L), bool)
        for i, p in enumerate(passages):
            ids, tg, w = token_targets(p, sharer_tok, receiver_tok, L)
            k = len(ids)
            self.ids[i, :k], self.targets[i, :k], self.mask[i, :k], self.weight[i, :k] = ids, tg, True, w
        self.num_rows, self.batch_size, self.seed, self.position = n, int(batch_size), int(seed), 0

    def __next__(self) -> TokenTargetBatch:
        rows = self.next_rows()
        mask = self.mask[rows]
        return TokenTargetBatch(SharerRows(self.ids[rows], mask, positions_from_mask(mask)), self.targets[rows],
                                self.weight[rows] & mask)


def sharer_prefix_model(sharer_params: dict, setup: Setup):
    """(params, config) of the sharer cut after the last layer the adapter reads."""
    su, _, _ = lcfx.used_layers(setup.adapter, setup.sharer, setup.receiver)
    return transformer.first_layers(sharer_params, setup.sharer, max(su) + 1)


def sharer_tokens(adapter_params: dict, cut_params: dict, cut_cfg, rows: SharerRows, setup: Setup) -> jax.Array:
    """Per-token message latents [B, S, r] of the passages in `rows` (a one-token slot each)."""
    _, cache = transformer.forward(jax.lax.stop_gradient(cut_params), rows.ids, rows.positions,
                                   None, config=cut_cfg, token_mask=rows.mask, last_logits_only=True)
    z = lcfx.token_latents(adapter_params, cache, cfg=setup.adapter, sharer_cfg=cut_cfg, receiver_cfg=setup.receiver)
    return lcfx.token_messages(adapter_params, z, cfg=setup.adapter)


def translation_loss(adapter_params: dict, cut_params: dict, receiver_embed: jax.Array, batch: TokenTargetBatch,
                     setup: Setup, *, cut_cfg, temperature: float = 0.05):
    lat = sharer_tokens(adapter_params, cut_params, cut_cfg, batch.sharer, setup)
    e = lcfx.decode_embeddings(adapter_params, lat, cfg=setup.adapter)                     # [B, S, D]
    table = jax.lax.stop_gradient(receiver_embed).astype(jnp.float32) * setup.receiver.embed_scale
    t = jnp.take(table, batch.targets, axis=0)                                             # [B, S, D]
    w = batch.weight.astype(jnp.float32)
    n = jnp.maximum(jnp.sum(w), 1.0)
    rel = jnp.sum(jnp.sum((e - t) ** 2, -1) * w) / jnp.maximum(jnp.sum(jnp.sum(t * t, -1) * w), 1e-9)
    d = e.shape[-1]
    ef, tf, ids, wf = e.reshape(-1, d), t.reshape(-1, d), batch.targets.reshape(-1), w.reshape(-1)
    unit = lambda x: x * jax.lax.rsqrt(jnp.sum(x * x, -1, keepdims=True) + 1e-9)  # noqa: E731
    logits = (unit(ef) @ unit(tf).T) / temperature
    logits = jnp.where(wf[None, :] > 0, logits, -1e9)
    same = (ids[:, None] == ids[None, :]) & (wf[None, :] > 0)
    ce = jax.nn.logsumexp(logits, -1) - jax.nn.logsumexp(jnp.where(same, logits, -1e9), -1)
    ce = jnp.sum(ce * wf) / n
    hit = same[jnp.arange(len(ids)), jnp.argmax(logits, -1)]
    acc = jnp.sum(hit * wf) / n
    return rel + ce, {"loss": rel + ce, "rel_err": rel, "contrastive": ce, "batch_top1": acc, "tokens": jnp.sum(w)}


# The config fields a translation's weights depend on: two adapters that agree on these (and on the model
# pair) translate every token the same way, whatever their pooling.
TRANSLATION_FIELDS = ("rank", "sharer_layers", "activation", "eps", "linear", "decoder", "embed_hidden")


def load_translation(params: dict, directory: str, setup: Setup) -> dict:
    """`params` with the token translation (TRAINED_KEYS) of the exported LCF-X adapter in `directory`."""
    from lcf_jax.adapters.export_jax import import_adapter
    kind, acfg, loaded = import_adapter(directory)
    if kind != "lcfx":
        raise ValueError(f"pretrain.translation_from={directory!r} holds a {kind} adapter, not an LCF-X one")
    differ = [f"{f}={getattr(acfg, f)!r} (this run: {getattr(setup.adapter, f)!r})" for f in TRANSLATION_FIELDS
              if getattr(acfg, f) != getattr(setup.adapter, f)]
    if differ:
        raise ValueError(f"pretrain.translation_from={directory!r} translates differently: {', '.join(differ)}; "
                         "set adapter.lcfx.* to match")
    out = dict(params)
    for k in TRAINED_KEYS:
        if tuple(loaded[k].shape) != tuple(params[k].shape):
            raise ValueError(f"pretrain.translation_from={directory!r}: {k} has shape {tuple(loaded[k].shape)}, this "
                             f"run needs {tuple(params[k].shape)} (was it exported for another model pair?)")
        out[k] = jnp.asarray(loaded[k], params[k].dtype)
    return out


def make_phase(frozen: tuple, batches, setup: Setup, *, steps: int, lr: float, warmup_steps: int = 20) -> Phase:
    """The token translation as a `Phase`: frozen = (sharer, receiver) params, of which it keeps the sharer up to
    its last used layer and the receiver's embedding."""
    if setup.kind != "lcfx" or setup.adapter.decoder != "embed":
        raise ValueError("the token-translation stage trains an LCF-X adapter with adapter.lcfx.decoder='embed'")
    cut_params, cut_cfg = sharer_prefix_model(frozen[0], setup)
    return stage.make_phase("translation", TRAINED_KEYS, functools.partial(stage_loss, setup=setup, cut_cfg=cut_cfg),
                            (cut_params, jnp.asarray(frozen[1]["embed"])), batches, steps=steps, lr=lr,
                            warmup_steps=warmup_steps, hint="lower pretrain.lr")


def pretrain(params: dict, frozen: tuple, batches, setup: Setup, *, steps: int, lr: float, warmup_steps: int = 20,
             log=None, log_every: int = 10) -> dict:
    """`steps` Adam steps of the token translation without checkpoints; returns the full adapter params."""
    return stage.run(make_phase(frozen, batches, setup, steps=steps, lr=lr, warmup_steps=warmup_steps), params,
                     log=log, log_every=log_every)


def stage_loss(params: dict, frozen: tuple, batch: TokenTargetBatch, *, setup: Setup, cut_cfg):
    """`translation_loss` in a stage's form: frozen = (the cut sharer's params, the receiver's embedding)."""
    return translation_loss(params, frozen[0], frozen[1], batch, setup, cut_cfg=cut_cfg)
