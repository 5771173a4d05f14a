"""The pure train step and its sharded, donated jit.

`train_step(state, frozen, batch) -> (state, metrics)`: frozen = (sharer_params, receiver_params) is an
input, never a trainable; only `state.params` (the adapter) reaches the optimizer.
"""
from __future__ import annotations

import functools
from typing import Any, NamedTuple

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


def train_step(state: TrainState, frozen: tuple, batch: dict, *, setup: Setup,
               optimizer: optax.GradientTransformation) -> tuple[TrainState, dict]:
    rng, sub = jax.random.split(state.rng)
    grad_fn = jax.value_and_grad(objective.loss_fn, has_aux=True)
    (_, aux), grads = grad_fn(state.params, frozen[0], frozen[1], batch, setup, train=True, rng=sub, step=state.step)
    params, opt_state, finite = guarded_update(optimizer, grads, state.opt_state, state.params, aux["loss"])
    new_state = TrainState(state.step + 1, params, opt_state, rng)
    metrics = {**aux, "grad_norm": optax.tree.norm(grads), "finite": finite}
    return new_state, metrics


def eval_step(params: Any, frozen: tuple, batch: dict, *, setup: Setup) -> dict:
    _, aux = objective.loss_fn(params, frozen[0], frozen[1], batch, setup, train=False)
    return aux


def jit_train_step(setup: Setup, optimizer, mesh, state_shardings, frozen_shardings, batch_shardings):
    step = functools.partial(train_step, setup=setup, optimizer=optimizer)
    keys = ["loss", "target_tokens", "grad_norm", "finite"] + (["ce", "kl", "hidden"] if setup.distills else [])
    return jax.jit(step, in_shardings=(state_shardings, frozen_shardings, batch_shardings),
                   out_shardings=(state_shardings, sharding.replicated(dict.fromkeys(keys, 0), mesh)),
                   donate_argnums=(0,))


def jit_eval_step(setup: Setup, params_shardings, frozen_shardings, batch_shardings):
    return jax.jit(functools.partial(eval_step, setup=setup),
                   in_shardings=(params_shardings, frozen_shardings, batch_shardings))
