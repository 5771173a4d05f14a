"""Latent-alignment pre-training of an LCF-X adapter (stage 1, before the QA objective).

Why. The QA loss alone gives a weak signal: a few answer tokens per example, reached only through
the pooling, the decoder and the whole frozen receiver. In the first recipe's 450-step run the
adapter learned the answer FORMAT but carried no information (LCF-X scored the same as its
unrelated-passage control). What the decoder has to learn first is a vocabulary-free translation:
a slot that holds a sharer token must look, to the receiver, like the receiver's own K/V of that
text. That part has a dense, cheap target when both models read the SAME passage:

  for every receiver token u of a passage, aligned (`adapters/align.py`) to sharer token a(u),
      decode(token_message(z[a(u)]))  ~  the receiver's own (un-rotated key, value) of u, per layer,

where `lcfx.token_messages` is exactly the slot latent the pooling produces when its attention is
all on one token. Keys are compared un-rotated: extra entries are position-free, so a translated
token reads to the receiver like its own token at position 0. The loss is the squared error over
the mean square of the target, per receiver layer, averaged over layers and over K and V (so layers
with large values do not dominate). No receiver backward pass is needed: a step costs two frozen
forwards plus a small adapter, about a third of a QA step.

Trained here: the encoder (enc_*), the slot value path (pool_wv, pool_wo, out_norm) and the decoder
(dec_*, v_gate, which starts at 1 so W_v gets gradients). The pooling queries/keys and the
conditioning are untouched; stage 2 (the QA loss, `objective.py`) trains everything from here.
Passages come from the QA training sets' sharer contexts (qa_train/: a training split).
"""
from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lcf_jax.adapters import lcfx
from lcf_jax.adapters.align import tokenize_pair
from lcf_jax.data.batches import PassagePairBatch, SharerRows
from lcf_jax.data.pipeline import pad_id, positions_from_mask
from lcf_jax.models import transformer
from lcf_jax.train import objective, stage
from lcf_jax.train.objective import Setup
from lcf_jax.train.phase import Phase

TRAINED_KEYS = ("enc_w", "enc_b", "enc_norm", "pool_wv", "pool_wo", "out_norm",
                "dec_norm", "dec_wk", "dec_bk", "dec_wv", "dec_bv", "v_gate")


class PassagePairs(stage.ShuffledRows):
    """Left-padded batches of passages in both tokenizations, with the receiver -> sharer slot map.

    Deterministic in (seed, position): the state is one integer, checkpointed like the QA iterator's.
    """

    def __init__(self, passages: Sequence[str], sharer_tok, receiver_tok, *, max_len: int, batch_size: int,
                 seed: int = 0):
        passages = list(dict.fromkeys(p for p in passages if p.strip()))  # unique, order kept
        if not passages:
            raise ValueError("latent-alignment pre-training got no passages (check data.train_sets)")
        self.passages, self.sharer_tok, self.receiver_tok = passages, sharer_tok, receiver_tok
        self.max_len, self.batch_size, self.seed = int(max_len), int(batch_size), int(seed)
        self.s_pad, self.r_pad = pad_id(sharer_tok), pad_id(receiver_tok)
        self.num_rows, self.position = len(passages), 0

    def __next__(self) -> PassagePairBatch:
        b, L = self.batch_size, self.max_len
        rows = self.next_rows()
        s_ids, r_ids = np.full((b, L), self.s_pad, np.int32), np.full((b, L), self.r_pad, np.int32)
        s_mask, r_mask = np.zeros((b, L), bool), np.zeros((b, L), bool)
        alignment, weight = np.full((b, L), -1, np.int32), np.zeros((b, L), bool)
        for i, row in enumerate(rows):
            s, r, align, w = tokenize_pair(self.passages[row], self.sharer_tok, self.receiver_tok, L)
            ns, nr = len(s), len(r)
            s_ids[i, L - ns:], s_mask[i, L - ns:] = s, True
            r_ids[i, L - nr:], r_mask[i, L - nr:] = r, True
            alignment[i, L - nr:] = (L - ns) + align   # receiver slot -> sharer cache slot
            weight[i, L - nr:] = w
        return PassagePairBatch(SharerRows(s_ids, s_mask, positions_from_mask(s_mask)), r_ids, r_mask, alignment,
                                weight)


def alignment_loss(adapter_params: dict, sharer_params: dict, receiver_params: dict, batch: PassagePairBatch,
                   setup: Setup):
    """Relative squared error of translated sharer tokens against the receiver's own K/V (see module doc)."""
    cfg, s_cfg, r_cfg = setup.adapter, setup.sharer, setup.receiver
    frozen_s, frozen_r = jax.lax.stop_gradient(sharer_params), jax.lax.stop_gradient(receiver_params)
    s_cache = objective.sharer_cache(frozen_s, batch.sharer, setup)
    r_mask = batch.receiver_mask
    _, r_cache = transformer.forward(frozen_r, batch.receiver_ids, transformer.positions_from_mask(r_mask), None,
                                     config=r_cfg, token_mask=r_mask, last_logits_only=True)
    _, ru, _ = lcfx.used_layers(cfg, s_cfg, r_cfg)
    target = jax.lax.stop_gradient(lcfx.unrotated_kv(r_cache, r_cfg, ru).astype(jnp.float32))  # [n, B, T, 2F]

    z = lcfx.token_latents(adapter_params, s_cache, cfg=cfg, sharer_cfg=s_cfg, receiver_cfg=r_cfg)
    lat = lcfx.token_messages(adapter_params, z, cfg=cfg)                                    # [B, S, r]
    picked = jnp.take_along_axis(lat, jnp.maximum(batch.alignment, 0)[..., None], axis=1)  # [B, T, r]
    k, v = lcfx.decode_layers(adapter_params, picked, cfg=cfg, receiver_cfg=r_cfg)          # [n, B, H, T, D]
    n, b, h, t, d = k.shape
    flat = lambda x: x.transpose(0, 1, 3, 2, 4).reshape(n, b, t, h * d)  # noqa: E731  (same layout as target)
    w = (batch.align_weight & (batch.alignment >= 0) & r_mask).astype(jnp.float32)[None, :, :, None]
    f = h * d

    def rel(pred, tgt):  # per layer, then averaged
        err = jnp.sum(w * (pred - tgt) ** 2, axis=(1, 2, 3))
        return err / jnp.maximum(jnp.sum(w * tgt ** 2, axis=(1, 2, 3)), 1e-9)

    rel_k, rel_v = rel(flat(k), target[..., :f]), rel(flat(v), target[..., f:])
    loss = 0.5 * (jnp.mean(rel_k) + jnp.mean(rel_v))
    return loss, {"loss": loss, "rel_err_k": jnp.mean(rel_k), "rel_err_v": jnp.mean(rel_v),
                  "tokens": jnp.sum(w)}


def start_params(params: dict) -> dict:
    """Stage-1 starting point: the adapter's own init with the value gates opened (v_gate = 1), so
    the value projection receives gradients from the first step."""
    return {**params, "v_gate": jnp.ones_like(params["v_gate"])}


def make_phase(frozen: tuple, batches, setup: Setup, *, steps: int, lr: float, warmup_steps: int = 20,
               log_offset: int = 0) -> Phase:
    """The alignment stage as a `Phase` (start it from `start_params`)."""
    if setup.kind != "lcfx":
        raise ValueError(f"latent-alignment pre-training is for LCF-X adapters, not {setup.kind!r}")
    loss = functools.partial(alignment_loss, setup=setup)
    return stage.make_phase("latent_align", TRAINED_KEYS, lambda p, fr, batch: loss(p, fr[0], fr[1], batch), frozen,
                            batches, steps=steps, lr=lr, warmup_steps=warmup_steps, hint="lower pretrain.lr",
                            log_offset=log_offset)


def pretrain(params: dict, frozen: tuple, batches, setup: Setup, *, steps: int, lr: float, warmup_steps: int = 20,
             log=None, log_every: int = 10) -> dict:
    """Runs `steps` alignment steps from `params` (see `start_params`) without checkpoints; returns the full
    adapter params. `log(step, metrics)` receives float metrics every `log_every` steps. Raises
    FloatingPointError on a non-finite loss, naming the step."""
    return stage.run(make_phase(frozen, batches, setup, steps=steps, lr=lr, warmup_steps=warmup_steps), params,
                     log=log, log_every=log_every)


def evaluate_alignment(params: dict, frozen: tuple, batches, setup: Setup, n_batches: int = 2) -> dict:
    """Mean alignment metrics of `params` over the next n_batches (no update)."""
    fn = jax.jit(functools.partial(alignment_loss, setup=setup))
    rows = [jax.device_get(fn(params, frozen[0], frozen[1], next(batches))[1])
            for _ in range(n_batches)]
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


# ------------------------------------------------------------------------------------------------
# Closed form (LCFXConfig.linear): reduced-rank ridge regression
# ------------------------------------------------------------------------------------------------
def collect_pairs(frozen: tuple, batches, setup: Setup, n_batches: int) -> tuple[np.ndarray, np.ndarray]:
    """(X [N, Fs], Y [N, Fr]) float32 over the weighted aligned tokens of n_batches: per receiver token,
    the aligned sharer token's un-rotated K/V of every used sharer layer, and the receiver's own
    un-rotated K/V of every used receiver layer (layer-major, [k | v] per layer)."""
    cfg, s_cfg, r_cfg = setup.adapter, setup.sharer, setup.receiver
    su, ru, _ = lcfx.used_layers(cfg, s_cfg, r_cfg)

    @jax.jit
    def feats(batch):
        s_cache = objective.sharer_cache(frozen[0], batch.sharer, setup)
        r_mask = batch.receiver_mask
        _, r_cache = transformer.forward(frozen[1], batch.receiver_ids, transformer.positions_from_mask(r_mask),
                                         None, config=r_cfg, token_mask=r_mask, last_logits_only=True)
        x = lcfx.unrotated_kv(s_cache, s_cfg, su)                                    # [n, B, S, F]
        x = jnp.take_along_axis(x, jnp.maximum(batch.alignment, 0)[None, :, :, None], axis=2)
        y = lcfx.unrotated_kv(r_cache, r_cfg, ru)
        flat = lambda a: a.transpose(1, 2, 0, 3).reshape(a.shape[1], a.shape[2], -1)  # noqa: E731
        return flat(x), flat(y)

    xs, ys = [], []
    for _ in range(n_batches):
        b = next(batches)
        x, y = feats(b)
        w = b.align_weight & (b.alignment >= 0) & b.receiver_mask
        xs.append(np.asarray(x, np.float32)[w])
        ys.append(np.asarray(y, np.float32)[w])
    return np.concatenate(xs), np.concatenate(ys)


def _block_rel_err(pred: np.ndarray, target: np.ndarray, n_layers: int) -> tuple[float, float]:
    """Mean over layers of sum((pred - target)^2) / sum(target^2), for keys and for values."""
    f = target.shape[1] // n_layers // 2
    e = ((pred - target) ** 2).reshape(len(target), n_layers, 2, f).sum(axis=(0, 3))
    m = (target ** 2).reshape(len(target), n_layers, 2, f).sum(axis=(0, 3))
    r = e / np.maximum(m, 1e-12)
    return float(r[:, 0].mean()), float(r[:, 1].mean())


def _top_right_vectors(a: np.ndarray, k: int, seed: int = 0, power_iters: int = 3) -> np.ndarray:
    """[a.shape[1], k]: the top-k right singular vectors of `a` (randomized range finder + power iterations)."""
    rng = np.random.RandomState(seed)
    k_over = min(k + 32, min(a.shape))
    z = a.T @ (a @ rng.standard_normal((a.shape[1], k_over)).astype(a.dtype))
    for _ in range(power_iters):
        z, _ = np.linalg.qr(z)
        z = a.T @ (a @ z)
    q, _ = np.linalg.qr(z)                                   # [p, k_over], spans the top right vectors
    _, _, vt = np.linalg.svd(a @ q, full_matrices=False)
    return (q @ vt.T)[:, :k]


def fit_closed_form(params: dict, x: np.ndarray, y: np.ndarray, setup: Setup, *,
                    ridges: Sequence[float] = (1e-3, 1e-2, 1e-1), holdout: float = 0.1,
                    target_dims: int = 1024) -> tuple[dict, dict]:
    """Stage 1 in closed form for a linear LCF-X: a rank-r linear translation of aligned tokens.

    Each receiver (layer, K or V) block of y is scaled by 1/rms so that, as in `alignment_loss`, every
    block counts the same. The centred, scaled targets are first reduced to their top `target_dims`
    principal directions P (a cheap solve; the rank-r answer lives in a far smaller space), then
    ridge regression W = (XᵀX + λI)⁻¹Xᵀ(Y P) on centred data (λ relative to the mean diagonal of XᵀX,
    picked among `ridges` on a held-out tail of the tokens), then the rank-r reduction: U = the top r
    right singular vectors of the fitted X W. Written into the adapter: enc_w = W U (per sharer
    layer), enc_b = -mean(x) W U, pool_wv = pool_wo = I (a one-token slot is its token's latent),
    dec_w = (P U)ᵀ / scale per receiver layer, dec_b = mean(y), v_gate = 1. The pooling queries, keys
    and conditioning are left for stage 2.
    Returns (params, report) with held-out relative errors (per block, as in training) of the rank-r
    fit and of predicting the mean.
    """
    import scipy.linalg

    cfg, s_cfg, r_cfg = setup.adapter, setup.sharer, setup.receiver
    if not cfg.linear:
        raise ValueError("the closed-form latent alignment needs adapter.lcfx.linear=True (no norm or activation "
                         "on the latent path)")
    su, ru, _ = lcfx.used_layers(cfg, s_cfg, r_cfg)
    r, n_r, f = cfg.rank, len(ru), r_cfg.kv_width
    if x.shape[1] != len(su) * 2 * s_cfg.kv_width or y.shape[1] != n_r * 2 * f:
        raise ValueError(f"token pairs of shape {x.shape}, {y.shape} do not match this adapter's layers")
    n = len(x)
    n_fit = int(n * (1 - holdout))
    if n_fit <= r or n - n_fit < 1:
        raise ValueError(f"{n} aligned tokens are too few for a rank-{r} closed-form fit")
    x, y = x.astype(np.float32, copy=False), y.astype(np.float32, copy=False)
    mx, my = x[:n_fit].mean(0), y[:n_fit].mean(0)
    scale = 1.0 / np.sqrt(np.maximum(np.einsum("nf,nf->f", y[:n_fit], y[:n_fit]).reshape(n_r * 2, f).sum(1)
                                     / (n_fit * f), 1e-12))
    scale = np.repeat(scale, f).astype(np.float32)                       # [Fr]
    xc = x - mx                                                          # the caller's arrays stay untouched
    yc = (y - my) * scale
    proj = _top_right_vectors(yc[:n_fit], min(target_dims, yc.shape[1]))   # [Fr, P]
    yp = yc @ proj
    gram = xc[:n_fit].T @ xc[:n_fit]
    xty = xc[:n_fit].T @ yp[:n_fit]
    diag = float(np.mean(np.diag(gram)))
    best = None
    for lam in ridges:
        w = scipy.linalg.cho_solve(scipy.linalg.cho_factor(gram + lam * diag * np.eye(len(gram), dtype=gram.dtype)), xty)
        err = float(np.mean((xc[n_fit:] @ w - yp[n_fit:]) ** 2))
        if best is None or err < best[0]:
            best = (err, lam, w)
    _, lam, w = best
    u = _top_right_vectors(xc[:n_fit] @ w, r)                            # [P, r]
    a = (w @ u).astype(np.float32)                                       # [Fs, r]
    dec = ((proj @ u).T / scale[None, :]).astype(np.float32)             # [r, Fr]
    held = y[n_fit:]
    report = {"tokens": n, "ridge": lam, "rank": r, "target_dims": proj.shape[1],
              "heldout_rel_err_kv": _block_rel_err((xc[n_fit:] @ a) @ dec + my, held, n_r),
              "heldout_rel_err_kv_of_the_mean": _block_rel_err(np.broadcast_to(my, held.shape), held, n_r)}
    dec = dec.reshape(r, n_r, 2, f)
    my_blocks = my.reshape(n_r, 2, f)
    out = dict(params)
    out["enc_w"] = a.reshape(len(su), 2 * s_cfg.kv_width, r)
    out["enc_b"] = -(mx @ a)
    out["pool_wv"] = np.eye(r, dtype=np.float32)
    out["pool_wo"] = np.eye(r, dtype=np.float32)
    out["dec_wk"] = dec[:, :, 0].transpose(1, 0, 2)
    out["dec_wv"] = dec[:, :, 1].transpose(1, 0, 2)
    out["dec_bk"] = my_blocks[:, 0]
    out["dec_bv"] = my_blocks[:, 1]
    out["v_gate"] = np.ones((n_r,), np.float32)
    return {k: jnp.asarray(v, params[k].dtype) for k, v in out.items()}, report
