"""A phase of training and the one loop every phase runs through.

A run is a list of phases: the pre-training stages an LCF-X recipe asks for (token translation, locator,
latent alignment), then the main stage. Each phase is a loss on a feed, trained for `steps` with its own
optimizer, on all of the adapter's parameters or on a subset (`trained`). They all take the same step
(`step.update`: one guarded AdamW update, a non-finite loss or gradient leaves the state untouched) and the same loop
(`run`: log, NaN check naming the phase and step, evaluation, checkpoint), so a pre-training stage resumes
from its own mid-stage checkpoint exactly as the main stage does.
"""
from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import optax

from lcf_jax.train.step import NonFiniteLossError, TrainState, split, update


@dataclasses.dataclass(frozen=True)
class Phase:
    """One stretch of training.

    loss(params, frozen, batch, *, rng, step) -> (loss, aux): aux holds "loss" and float metrics.
    feed: an iterator of batches with state()/restore() (its state is checkpointed with the phase).
    trained: the adapter parameters this phase updates (None: all of them; the optimizer may still freeze some).
    log_kind, log_prefix, log_offset: how its rows appear in metrics.jsonl (kind, metric-name prefix, step
    offset), so that the stages of one recipe draw as one curve.
    hint: the fix a non-finite loss message names.
    """
    name: str
    steps: int
    loss: Callable
    optimizer: optax.GradientTransformation
    feed: Any
    frozen: Any
    trained: Optional[tuple[str, ...]] = None
    log_kind: str = "train"
    log_prefix: str = ""
    log_offset: int = 0
    hint: str = "lower train.lr, keep train.clip_norm > 0, or use train.compute_dtype=float32"
    schedule: Optional[Callable] = None   # the learning rate by step, logged when given


def init_state(phase: Phase, params: dict, seed: int) -> TrainState:
    """Step 0 of a phase from `params` (the whole adapter, copied: the step donates its state); its optimizer
    state covers `phase.trained`."""
    params = jax.tree.map(jnp.array, params)
    return TrainState(jnp.zeros((), jnp.int32), params, phase.optimizer.init(split(params, phase.trained)[0]),
                      jax.random.PRNGKey(seed))


def jit_step(phase: Phase):
    """The phase's step (`step.update` on its loss), jitted with its state donated. The main stage jits the same
    `update` with the run's shardings (`step.jit_train_step`)."""
    return jax.jit(functools.partial(update, loss=phase.loss, optimizer=phase.optimizer, trained=phase.trained),
                   donate_argnums=(0,))


def run(phase: Phase, state: TrainState, step_fn, *, log=None, log_every: int = 10, put: Callable = lambda b: b,
        frozen=None, evaluate=None, eval_every: int = 0, checkpoint=None, ckpt_every: int = 0,
        end: Optional[int] = None, progress=None, max_seconds: float = 0.0) -> tuple[TrainState, dict]:
    """Steps `state` to `end` (default phase.steps). Every `log_every` steps (and the last) the metrics go to
    `log(step, kind, values)` and a non-finite loss raises NonFiniteLossError naming the phase and the step.
    `evaluate(params, step) -> dict` runs every `eval_every` steps and at `end` (a stop before the phase's end too);
    `checkpoint(step, state, metrics)` runs every `ckpt_every` steps, after an evaluation and at `end`.
    max_seconds > 0: the first step that ends that long after this call (compiles included) is the last; it is
    logged, evaluated and checkpointed as an end is, so a rerun resumes after it. Returns (state, the last logged
    metrics)."""
    frozen = phase.frozen if frozen is None else frozen
    end = phase.steps if end is None else min(end, phase.steps)
    last: dict = {}
    t0, tokens = time.perf_counter(), 0.0
    for i in range(int(state.step) + 1, end + 1):
        state, m = step_fn(state, frozen, put(next(phase.feed)))
        out_of_time = False
        if max_seconds > 0:
            jax.block_until_ready(state.step)   # dispatch returns before the work is done: wait, then read the clock
            out_of_time = time.perf_counter() - t0 >= max_seconds
        if i % log_every == 0 or i == end or out_of_time:
            m = {k: float(v) for k, v in jax.device_get(m).items()}
            m = {"loss": m.pop("loss"), **m}   # the loss first, wherever the metrics are printed
            if not m.pop("finite"):
                where = "" if phase.name == "main" else f"{phase.name}: "
                raise NonFiniteLossError(f"{where}non-finite loss or gradient at step {i} (loss={m['loss']}); the "
                                         f"update was skipped. Fix: {phase.hint}")
            seconds = time.perf_counter() - t0
            last = dict(m, seconds=seconds)
            if "target_tokens" in m:   # supervised tokens per second, the throughput the benchmarks compare
                tokens += m.pop("target_tokens") * log_every
                last = dict(m, target_tokens_per_s=tokens / max(seconds, 1e-9), seconds=seconds)
            if phase.schedule is not None:
                last["lr"] = float(phase.schedule(i))
            if log is not None:
                log(phase.log_offset + i, phase.log_kind, {phase.log_prefix + k: v for k, v in last.items()})
        if progress is not None:
            progress(i, last)
        metrics = None
        if evaluate is not None and (i % eval_every == 0 or i == end or out_of_time):
            metrics = evaluate(state.params, i)
            if log is not None:
                log(i, "eval", metrics)
        if checkpoint is not None and (i % ckpt_every == 0 or i == end or metrics is not None or out_of_time):
            checkpoint(i, state, metrics)
        if out_of_time:
            break
    return state, last
