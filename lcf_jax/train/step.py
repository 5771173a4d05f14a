"""The pure train step and its sharded, donated jit.

`update` is the one step every phase takes (pre-training stages and the main stage, `phase.py`); the main
stage's `train_step(state, frozen, batch) -> (state, metrics)` is `update` on `objective.loss_fn`: frozen =
(sharer_params, receiver_params) is an input, never a trainable; only `state.params` (the adapter) reaches
the optimizer.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from lcf_jax.train import objective, sharding
from lcf_jax.train.objective import Setup


class TrainState(NamedTuple):
    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array


def init_state(params: Any, optimizer: optax.GradientTransformation, seed: int) -> TrainState:
    return TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params), jax.random.PRNGKey(seed))


class NonFiniteLossError(FloatingPointError):
    pass


def guarded_update(optimizer: optax.GradientTransformation, grads, opt_state, params, loss):
    """(params, opt_state, finite) after one update; a non-finite loss or gradient leaves both untouched (the
    caller raises with the step number). Every training step, main stage and pre-training stages, uses it."""
    updates, new_opt = optimizer.update(grads, opt_state, params)
    new_params = optax.apply_updates(params, updates)
    finite = jnp.isfinite(loss) & jnp.isfinite(optax.tree.norm(grads))
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)  # noqa: E731
    return keep(new_params, params), keep(new_opt, opt_state), finite


def split(params: dict, trained: Optional[tuple[str, ...]]) -> tuple[dict, dict]:
    """(the parameters a step differentiates, the ones it holds fixed)."""
    if trained is None:
        return params, {}
    return {k: params[k] for k in trained}, {k: v for k, v in params.items() if k not in trained}


def update(state: TrainState, frozen, batch, *, loss: Callable, optimizer: optax.GradientTransformation,
           trained: Optional[tuple[str, ...]] = None) -> tuple[TrainState, dict]:
    """The one training step of every phase (`phase.py`): the value and gradient of
    loss(params, frozen, batch, rng=, step=) -> (loss, aux) on the `trained` parameters (None: all), then the
    guarded AdamW update."""
    rng, sub = jax.random.split(state.rng)
    diff, fixed = split(state.params, trained)
    (_, aux), grads = jax.value_and_grad(
        lambda d: loss({**fixed, **d} if fixed else d, frozen, batch, rng=sub, step=state.step), has_aux=True)(diff)
    new, opt_state, finite = guarded_update(optimizer, grads, state.opt_state, diff, aux["loss"])
    params = {**fixed, **new} if fixed else new
    metrics = {**aux, "grad_norm": optax.tree.norm(grads), "finite": finite}
    return TrainState(state.step + 1, params, opt_state, rng), metrics


def main_loss(params: Any, frozen: tuple, batch, *, setup: Setup, rng=None, step=0):
    """The main stage's loss (`objective.loss_fn`) in the form `update` takes."""
    return objective.loss_fn(params, frozen[0], frozen[1], batch, setup, train=True, rng=rng, step=step)


def train_step(state: TrainState, frozen: tuple, batch, *, setup: Setup,
               optimizer: optax.GradientTransformation) -> tuple[TrainState, dict]:
    return update(state, frozen, batch, loss=functools.partial(main_loss, setup=setup), optimizer=optimizer)


def metric_names(setup: Setup) -> list[str]:
    """The metrics of a main-stage step."""
    return ["loss", "target_tokens", "grad_norm", "finite"] + (["ce", "kl", "hidden"] if setup.distills else [])


def eval_step(params: Any, frozen: tuple, batch, *, setup: Setup) -> dict:
    _, aux = objective.loss_fn(params, frozen[0], frozen[1], batch, setup, train=False)
    return aux


def jit_train_step(setup: Setup, optimizer, mesh, state_shardings, frozen_shardings, batch_shardings):
    step = functools.partial(train_step, setup=setup, optimizer=optimizer)
    return jax.jit(step, in_shardings=(state_shardings, frozen_shardings, batch_shardings),
                   out_shardings=(state_shardings, sharding.replicated(dict.fromkeys(metric_names(setup), 0), mesh)),
                   donate_argnums=(0,))


def jit_eval_step(setup: Setup, params_shardings, frozen_shardings, batch_shardings):
    return jax.jit(functools.partial(eval_step, setup=setup),
                   in_shardings=(params_shardings, frozen_shardings, batch_shardings))
