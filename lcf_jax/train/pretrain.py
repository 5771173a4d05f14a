"""What a fresh LCF-X run does before its main stage, by `pretrain.method`:

  "sgd"          latent alignment (`latent_align`): translated tokens against the receiver's own K/V;
  "closed_form"  the same target solved as one reduced-rank ridge regression (no loop);
  "tokens"       the token translation (`token_translation`, or one loaded from pretrain.translation_from),
                 then, for window pooling, the locator (`locator`).

`pretraining` returns the starting params and the phases (`phase.Phase`) the training loop runs from them with
its own step, NaN guard and checkpoints.
"""
from __future__ import annotations

import time
from typing import Optional, Sequence

from lcf_jax.data.pipeline import pad_id
from lcf_jax.train import latent_align, locator, token_translation
from lcf_jax.train.objective import Setup
from lcf_jax.train.phase import Phase


def passages_of(examples: Sequence[dict]) -> list[str]:
    return [e["sharer_context"] for e in examples]


def pretraining(cfg, params: dict, frozen: tuple, setup: Setup, tokenizers: Optional[tuple], train_examples,
                log=None) -> tuple[dict, list[Phase]]:
    """What a fresh LCF-X run does before its main stage: (the starting params, the pre-training phases to run
    from them through the main loop). Fits without a loop (closed form, pretrain.translation_from) happen here;
    `log(step, kind, values)` records them."""
    p = cfg.pretrain
    if p.steps <= 0 and not (p.method == "tokens" and p.translation_from):
        return params, []
    if tokenizers is None or train_examples is None:
        raise ValueError("pretrain.steps > 0 needs data.task='qa' (the passages of data.train_sets)")
    if p.method == "tokens":
        return _token_stages(cfg, params, frozen, setup, tokenizers, train_examples)
    batches = latent_align.PassagePairs(passages_of(train_examples), *tokenizers,
                                        max_len=p.max_len or cfg.data.max_sharer_len, batch_size=p.batch_size,
                                        seed=cfg.data.seed)
    if p.method == "closed_form":
        t0 = time.perf_counter()
        x, y = latent_align.collect_pairs(frozen, batches, setup, p.steps)
        params, report = latent_align.fit_closed_form(params, x, y, setup)
        if log is not None:
            k, v = report["heldout_rel_err_kv"]
            k0, v0 = report["heldout_rel_err_kv_of_the_mean"]
            log(p.steps, "pretrain", {"rel_err_k": k, "rel_err_v": v, "rel_err_k_of_the_mean": k0,
                                      "rel_err_v_of_the_mean": v0, "tokens": float(report["tokens"]),
                                      "ridge": report["ridge"], "seconds": time.perf_counter() - t0})
        return params, []
    return latent_align.start_params(params), [latent_align.make_phase(frozen, batches, setup, steps=p.steps, lr=p.lr)]


def _token_stages(cfg, params: dict, frozen: tuple, setup: Setup, tokenizers: tuple, train_examples
                  ) -> tuple[dict, list[Phase]]:
    """method "tokens": the token translation (or one loaded from pretrain.translation_from), then (window
    pooling) the locator, whose steps are logged after the translation's."""
    p, d = cfg.pretrain, cfg.data
    s_tok, r_tok = tokenizers
    phases: list[Phase] = []
    if p.translation_from:
        params = token_translation.load_translation(params, p.translation_from, setup)
    else:
        batches = token_translation.TokenBatches(passages_of(train_examples), s_tok, r_tok,
                                                 max_len=p.max_len or d.max_sharer_len, batch_size=p.batch_size,
                                                 seed=d.seed, pad_id=pad_id(s_tok))
        phases.append(token_translation.make_phase(frozen, batches, setup, steps=p.steps, lr=p.lr))
    if p.locator_steps > 0:
        rows = locator.LocatorBatches(train_examples, s_tok, r_tok, max_len=d.max_sharer_len,
                                      max_prompt_len=d.max_prompt_len, prompt_template=d.prompt_template,
                                      batch_size=p.locator_batch_size, seed=d.seed, sharer_pad=pad_id(s_tok),
                                      receiver_pad=pad_id(r_tok))
        phases.append(locator.make_phase(params, frozen, rows, setup, steps=p.locator_steps, lr=p.locator_lr,
                                         log_offset=sum(ph.steps for ph in phases)))
    return params, phases
