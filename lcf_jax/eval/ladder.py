"""The ladder: where between "the receiver reads the passage" and LCF-X the passage's information is lost.

Each rung feeds the receiver a different stand-in for the passage, then the same prompt
`Question: …\\nAnswer:` (greedy, answers cut at the first newline), and is scored per question, so any
two rungs compare with a paired bootstrap:

  R0 alone      nothing
  R1 reads      the receiver reads `Context: {passage}\\n` itself (its ordinary cache)
  R2 own K/V    the receiver's own K/V of that text, keys un-rotated, placed by the message convention
                (`lcfx.positioned_kv_prefix`): what the convention alone loses
  R3 self-pool  the receiver as its own sharer, pooled by a trained adapter (compression without
                translation). Built for window pooling: the receiver reads, as text, the passage excerpt the
                adapter's window selects (by R2 = R1, the same as its own K/V of the excerpt, positioned)
  R4 per token  the sharer's cache translated token by token through the trained adapter (each token a
                slot of its own: translation without pooling)
  R5 LCF-X      the message (pooled slots), followed by its control: the same adapter fed an unrelated
                passage of the same length (what the adapter teaches without carrying information)
"""
from __future__ import annotations

import functools
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lcf_jax.adapters import lcfx
from lcf_jax.adapters import common as C
from lcf_jax.comm import lcfx_channel
from lcf_jax.comm.agents import Agent, generate_answers, pad_rows, prefill_cache
from lcf_jax.comm.protocols import PROMPTS, QATask, Session
from lcf_jax.eval import metrics
from lcf_jax.eval.bootstrap import mean_interval, paired_difference
from lcf_jax.eval.tables import Table
from lcf_jax.models import transformer
from lcf_jax.models.cache import ExtraKV
from lcf_jax.models.layers import invert_rope

LADDER_SETS = {"squad": "dev", "nq_openbook": "dev"}
READ_TEMPLATE = "Context: {context}\n"


@functools.partial(jax.jit, static_argnames=("config",))
def _read_cache(params, tokens, mask, *, config):
    """The receiver's ordinary cache of right-padded rows [prefix | text] (positions 0, 1, ...)."""
    b, t = tokens.shape
    positions = jnp.broadcast_to(jnp.arange(t), (b, t))
    _, cache = transformer.forward(params, tokens, positions, None, config=config, token_mask=mask, hidden_only=True)
    return cache


def own_kv_answers(receiver: Agent, contexts: Sequence[str], prompt_rows: Sequence[Sequence[int]], *,
                   max_new_tokens: int, positioned: bool = True) -> list[str]:
    """R2: the receiver's own K/V of `Context: {passage}` (and a newline) through `lcfx.positioned_kv_prefix`
    (positioned=False: as position-free extra KV, the first LCF-X convention, for comparison)."""
    pre = lcfx_channel.special_prefix(receiver)
    p = len(pre)
    texts = [receiver.encode(READ_TEMPLATE.format(context=c), special=False) for c in contexts]
    n = -(-max(len(x) for x in texts) // 32) * 32
    tokens = np.full((len(texts), p + n), receiver.config.pad_token_id, np.int32)
    mask = np.zeros((len(texts), p + n), bool)
    for i, x in enumerate(texts):
        tokens[i, :p + len(x)] = pre + x
        mask[i, :p + len(x)] = True
    cache = _read_cache(receiver.params, jnp.asarray(tokens), jnp.asarray(mask), config=receiver.config)
    cfg = receiver.config
    k = cache.keys[:, :, :, p:]
    cos, sin = C.layer_rope_tables(cache.positions[:, p:], cfg, range(cfg.num_layers))
    k = jax.vmap(lambda x, c, s: invert_rope(x.transpose(0, 2, 1, 3), c, s).transpose(0, 2, 1, 3))(k, cos, sin)
    if not positioned:
        extra = ExtraKV(k, cache.values[:, :, :, p:], jnp.asarray(mask[:, p:]))
        return generate_answers(receiver, prompt_rows, max_new_tokens=max_new_tokens, extra_kv=extra)
    rest = [list(r[p:]) for r in prompt_rows]
    width = pad_rows(rest, cfg.pad_token_id, 32)[0].shape[1]
    prefix = lcfx.positioned_kv_prefix(k, cache.values[:, :, :, p:], receiver.params,
                                       jnp.broadcast_to(jnp.asarray(pre, jnp.int32), (len(texts), p)),
                                       capacity=p + n + width + max_new_tokens, receiver_cfg=cfg,
                                       slot_mask=jnp.asarray(mask[:, p:]))
    return generate_answers(receiver, rest, max_new_tokens=max_new_tokens, cache=prefix)


@functools.partial(jax.jit, static_argnames=("cfg", "sharer_cfg", "receiver_cfg"))
def _token_messages(params, sharer_cache, *, cfg, sharer_cfg, receiver_cfg):
    z = lcfx.token_latents(params, sharer_cache, cfg=cfg, sharer_cfg=sharer_cfg, receiver_cfg=receiver_cfg)
    return lcfx.token_messages(params, z, cfg=cfg)


def per_token_answers(sharer: Agent, receiver: Agent, adapter, sharer_rows, prompt_rows, *,
                      max_new_tokens: int) -> list[str]:
    """R4: every sharer token becomes a slot of its own (its latent as a one-token pooling gives it)."""
    cfg, params = adapter
    s_tok, s_mask = pad_rows(sharer_rows, sharer.config.pad_token_id, 64)
    s_cache = prefill_cache(sharer.params, jnp.asarray(s_tok), jnp.asarray(s_mask), config=sharer.config)
    lat = _token_messages(params, s_cache, cfg=cfg, sharer_cfg=sharer.config, receiver_cfg=receiver.config)
    return lcfx_channel.answer_positioned(receiver, params, cfg, lat, prompt_rows, max_new_tokens=max_new_tokens,
                                          slot_mask=s_mask)


@functools.partial(jax.jit, static_argnames=("cfg", "sharer_cfg", "receiver_cfg"))
def _window(params, sharer_cache, receiver_cache, *, cfg, sharer_cfg, receiver_cfg):
    z = lcfx.token_latents(params, sharer_cache, cfg=cfg, sharer_cfg=sharer_cfg, receiver_cfg=receiver_cfg)
    c = lcfx.receiver_summary(params, receiver_cache, cfg=cfg, sharer_cfg=sharer_cfg, receiver_cfg=receiver_cfg)
    return lcfx.window_slots(lcfx.token_scores(params, z, c, cfg=cfg), sharer_cache.mask, cfg.slots)


def window_excerpts(sharer: Agent, receiver: Agent, adapter, sharer_rows, prompt_rows) -> list[str]:
    """The text of the tokens a window-pooled adapter sends, for each row: the sharer tokens at the chosen
    cache slots, decoded (what the message holds, before translation)."""
    cfg, params = adapter
    if getattr(cfg, "pooling", "attention") != "window":
        raise ValueError("rung R3 reads the excerpt a window-pooled adapter selects; this adapter pools by attention")
    s_tok, s_mask = pad_rows(sharer_rows, sharer.config.pad_token_id, 64)
    r_tok, r_mask = pad_rows(prompt_rows, receiver.config.pad_token_id, 32)
    s_cache = prefill_cache(sharer.params, jnp.asarray(s_tok), jnp.asarray(s_mask), config=sharer.config)
    r_cache = prefill_cache(receiver.params, jnp.asarray(r_tok), jnp.asarray(r_mask), config=receiver.config)
    index, valid = jax.device_get(_window(params, s_cache, r_cache, cfg=cfg, sharer_cfg=sharer.config,
                                          receiver_cfg=receiver.config))
    out = []
    for i in range(len(sharer_rows)):
        slots = index[i][valid[i]]
        out.append(sharer.decode(s_tok[i, slots].tolist()) if len(slots) else "")
    return out


def rung_answers(session: Session, rung: str, tasks: Sequence[QATask]) -> list[str]:
    """Answers of one rung for every task (batched as the session batches)."""
    out: list[str] = []
    for i in range(0, len(tasks), session.batch_size):
        ch = list(tasks[i:i + session.batch_size])
        if rung == "R0":
            out += [r.answer for r in session.alone(ch)]
        elif rung == "R1":
            ctx = [session.truncate_text(session.receiver, t.sharer_context, session.max_context_tokens) for t in ch]
            rows = [session.receiver.encode(READ_TEMPLATE.format(context=c) + PROMPTS["question"].format(question=t.question))
                    for c, t in zip(ctx, ch)]
            out += generate_answers(session.receiver, rows, max_new_tokens=session.max_new_tokens)
        elif rung in ("R2", "R2 extra"):
            ctx = [session.truncate_text(session.receiver, t.sharer_context, session.max_context_tokens) for t in ch]
            out += own_kv_answers(session.receiver, ctx, session.question_rows(ch), max_new_tokens=session.max_new_tokens,
                                  positioned=rung == "R2")
        elif rung == "R3":
            excerpts = window_excerpts(session.sharer, session.receiver, session.lcfx_adapter(),
                                       session.sharer_rows([t.sharer_context for t in ch]), session.question_rows(ch))
            rows = [session.receiver.encode(READ_TEMPLATE.format(context=e.strip()) + PROMPTS["question"].format(
                question=t.question)) for e, t in zip(excerpts, ch)]
            out += generate_answers(session.receiver, rows, max_new_tokens=session.max_new_tokens)
        elif rung == "R4":
            out += per_token_answers(session.sharer, session.receiver, session.lcfx_adapter(),
                                     session.sharer_rows([t.sharer_context for t in ch]), session.question_rows(ch),
                                     max_new_tokens=session.max_new_tokens)
        else:
            raise ValueError(f"unknown rung {rung!r}")
    return out


def _scores(answers: Sequence[str], tasks: Sequence[QATask]) -> dict[str, list[float]]:
    return {"f1": [100.0 * metrics.f1(a, t.answers) for a, t in zip(answers, tasks)],
            "em": [100.0 * metrics.exact_match(a, t.answers) for a, t in zip(answers, tasks)]}


RUNGS = ("R0", "R1", "R2", "R2 extra", "R3", "R4", "R5", "R5 control")


def run_ladder(session: Session, tasks_by_set: dict[str, list[QATask]], *, rungs: Sequence[str] = RUNGS,
               log=print) -> dict:
    """Per-set, per-rung answers and per-question F1/EM. R4 needs a positioned adapter, R5 any adapter."""
    unknown = sorted(set(rungs) - set(RUNGS))
    if unknown:
        raise ValueError(f"unknown ladder rungs {unknown}; known: {list(RUNGS)}")
    if any(r in ("R3", "R4", "R5", "R5 control") for r in rungs) and not session.adapter:
        raise ValueError("ladder rungs R3/R4/R5 need an LCF-X adapter")
    if "R3" in rungs and getattr(session.adapter[0], "pooling", "attention") != "window":
        raise ValueError("rung R3 reads the excerpt a window-pooled adapter selects; this adapter pools by attention: "
                         "leave R3 out")
    if "R4" in rungs and session.adapter[0].injection != "positioned":
        raise ValueError("rung R4 feeds every token through the positioned convention; this adapter is position-free "
                         "(injection='extra'): leave R4 out")
    results: dict = {}
    for name, tasks in tasks_by_set.items():
        results[name] = {}
        for rung in rungs:
            if rung == "R5":
                answers = [r.answer for r in session.lcfx(tasks)]
            elif rung == "R5 control":
                answers = [r.answer for r in session.lcfx_control(tasks)]
            else:
                answers = rung_answers(session, rung, tasks)
            results[name][rung] = {"answers": answers, **_scores(answers, tasks)}
            log(f"ladder {name} {rung}: F1 {np.mean(results[name][rung]['f1']):.1f} (n={len(tasks)})")
    return results


RUNG_LABELS = {"R0": "R0 alone", "R1": "R1 reads the passage", "R2": "R2 own K/V, positioned convention",
               "R2 extra": "R2' own K/V, position-free extra KV (first convention)",
               "R3": "R3 the selected excerpt, read as text (compression without translation)",
               "R4": "R4 per-token translation (every token)", "R5": "R5 LCF-X", "R5 control": "R5 control (unrelated passage)"}


def keep_earlier_rungs(results: dict, earlier: dict, n_by_set: dict[str, int]) -> dict:
    """Adds to `results` (set -> rung -> per-question row) the rungs of an earlier ladder run that this one did not
    run. Both read the first questions of each set in file order, so an earlier run on at least n questions holds
    this run's n as its first n rows; a shorter one is skipped."""
    for name, n in n_by_set.items():
        for rung, row in earlier.get(name, {}).items():
            if rung not in results.setdefault(name, {}) and len(row["f1"]) >= n:
                results[name][rung] = {k: (v[:n] if isinstance(v, list) else v) for k, v in row.items()}
    return results


def _fmt(iv) -> str:
    m, lo, hi = iv
    return f"{m:.1f} [{lo:.1f}, {hi:.1f}]"


def ladder_table(results: dict, settings: dict, notes: Optional[list[str]] = None) -> Table:
    """Rows: rungs; per set F1 and EM with 95% bootstrap intervals, ΔF1 against R0 and (R5) against its
    control, both paired."""
    sets = list(results)
    cols = ["rung"] + [f"{s} {c}" for s in sets for c in ("F1", "EM", "ΔF1 vs R0", "ΔF1 vs control")]
    rows = []
    for rung in RUNG_LABELS:
        if not any(rung in results[s] for s in sets):
            continue
        row = [RUNG_LABELS[rung]]
        for s in sets:
            r = results[s].get(rung)
            if r is None:
                row += [None] * 4
                continue
            row += [_fmt(mean_interval(r["f1"])), _fmt(mean_interval(r["em"])),
                    _fmt(paired_difference(r["f1"], results[s]["R0"]["f1"])) if rung != "R0" and "R0" in results[s]
                    else None,
                    _fmt(paired_difference(r["f1"], results[s]["R5 control"]["f1"]))
                    if rung == "R5" and "R5 control" in results[s] else None]
        rows.append(row)
    return Table("Ladder: where the passage's information is lost", cols, rows, list(notes or []), settings)
