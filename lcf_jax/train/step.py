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

from lcf_jax.data.batches import map_rows
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


def micro_batches(batch, accum: int):
    """The batch's rows cut into `accum` micro-batches stacked on a new leading axis (for `lax.scan`). Micro-batch
    j holds rows j, j + accum, j + 2 * accum, ...: every data-parallel shard's contiguous block of rows gives each
    micro-batch its share, so no micro-batch lives on a few devices."""
    def cut(x, axis):
        rows = x.shape[axis]
        if rows % accum:
            raise ValueError(f"train.grad_accum_steps={accum} must divide the batch's {rows} rows")
        x = x.reshape(x.shape[:axis] + (rows // accum, accum) + x.shape[axis + 1:])
        return jnp.moveaxis(x, axis + 1, 0)
    return map_rows(cut, batch)


def accumulated_value_and_grad(loss_of: Callable, diff, batch, rng, accum: int):
    """((loss, aux), grads) of the whole batch from `accum` micro-batches, one at a time (`lax.scan`: the
    activations of one micro-batch alive at once). Each micro-batch's gradient and metrics are weighted by its
    share of the supervised tokens (aux["target_tokens"]), so a loss that is a mean over those tokens gets the
    full batch's value and gradient to float rounding; target_tokens is summed."""
    grad_fn = jax.value_and_grad(loss_of, has_aux=True)

    def body(carry, xs):
        g_sum, aux_sum = carry
        mb, key = xs
        (_, aux), g = grad_fn(diff, mb, key)
        n = aux["target_tokens"].astype(jnp.float32)
        g_sum = jax.tree.map(lambda a, b: a + n * b, g_sum, g)
        aux_sum = {k: aux_sum[k] + (aux[k] if k == "target_tokens" else n * aux[k]) for k in aux_sum}
        return (g_sum, aux_sum), None

    keys = jax.random.split(rng, accum)
    mbs = micro_batches(batch, accum)
    _, aux_shape = jax.eval_shape(grad_fn, diff, jax.tree.map(lambda x: x[0], mbs), keys[0])[0]
    zeros = (jax.tree.map(jnp.zeros_like, diff), {k: jnp.zeros(v.shape, jnp.float32) for k, v in aux_shape.items()})
    (g_sum, aux_sum), _ = jax.lax.scan(body, zeros, (mbs, keys))
    total = jnp.maximum(aux_sum["target_tokens"], 1.0)
    grads = jax.tree.map(lambda g: (g / total).astype(g.dtype), g_sum)
    aux = {k: v if k == "target_tokens" else v / total for k, v in aux_sum.items()}
    return (aux["loss"], aux), grads


def update(state: TrainState, frozen, batch, *, loss: Callable, optimizer: optax.GradientTransformation,
           trained: Optional[tuple[str, ...]] = None, accum: int = 1) -> tuple[TrainState, dict]:
    """The one training step of every phase (`phase.py`): the value and gradient of
    loss(params, frozen, batch, rng=, step=) -> (loss, aux) on the `trained` parameters (None: all), then the
    guarded AdamW update. accum > 1: the gradient is accumulated over that many micro-batches
    (`accumulated_value_and_grad`; the loss's aux must count its supervised tokens as "target_tokens")."""
    rng, sub = jax.random.split(state.rng)
    diff, fixed = split(state.params, trained)

    def loss_of(d, b, key):
        return loss({**fixed, **d} if fixed else d, frozen, b, rng=key, step=state.step)
    if accum > 1:
        (_, aux), grads = accumulated_value_and_grad(loss_of, diff, batch, sub, accum)
    else:
        (_, aux), grads = jax.value_and_grad(loss_of, has_aux=True)(diff, batch, sub)
    new, opt_state, finite = guarded_update(optimizer, grads, state.opt_state, diff, aux["loss"])
    params = {**fixed, **new} if fixed else new
    metrics = {**aux, "grad_norm": optax.tree.norm(grads), "finite": finite}
    return TrainState(state.step + 1, params, opt_state, rng), metrics


def main_loss(params: Any, frozen: tuple, batch, *, setup: Setup, rng=None, step=0):
    """The main stage's loss (`objective.loss_fn`) in the form `update` takes."""
    return objective.loss_fn(params, frozen[0], frozen[1], batch, setup, train=True, rng=rng, step=step)


def train_step(state: TrainState, frozen: tuple, batch, *, setup: Setup,
               optimizer: optax.GradientTransformation, accum: int = 1) -> tuple[TrainState, dict]:
    return update(state, frozen, batch, loss=functools.partial(main_loss, setup=setup), optimizer=optimizer,
                  accum=accum)


def metric_names(setup: Setup) -> list[str]:
    """The metrics of a main-stage step."""
    extra = (["kl", "agree"] + (["control_kl"] if setup.choice_control_weight else []) if setup.choice_group
             else ["ce", "kl", "hidden"] if setup.distills else [])
    return ["loss", "target_tokens", "grad_norm", "finite"] + extra


def eval_step(params: Any, frozen: tuple, batch, *, setup: Setup) -> dict:
    _, aux = objective.loss_fn(params, frozen[0], frozen[1], batch, setup, train=False)
    return aux


def jit_train_step(setup: Setup, optimizer, mesh, state_shardings, frozen_shardings, batch_shardings,
                   accum: int = 1):
    step = functools.partial(train_step, setup=setup, optimizer=optimizer, accum=accum)
    return jax.jit(step, in_shardings=(state_shardings, frozen_shardings, batch_shardings),
                   out_shardings=(state_shardings, sharding.replicated(dict.fromkeys(metric_names(setup), 0), mesh)),
                   donate_argnums=(0,))


def jit_eval_step(setup: Setup, params_shardings, frozen_shardings, batch_shardings):
    return jax.jit(functools.partial(eval_step, setup=setup),
                   in_shardings=(params_shardings, frozen_shardings, batch_shardings))
