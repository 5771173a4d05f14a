"""What every pre-training stage shares: a deterministic row order, and Adam steps on a subset of the
adapter's parameters with a non-finite guard (latent alignment, token translation, locator)."""
from __future__ import annotations

import time
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lcf_jax.train import optim
from lcf_jax.train.feed import PositionIterator
from lcf_jax.train.step import guarded_update


def shuffled_rows(seed: int, position: int, batch_size: int, n: int) -> list[int]:
    """Rows of batch `position`: one permutation of the n rows per epoch, deterministic in (seed, epoch)."""
    start = position * batch_size
    orders: dict[int, np.ndarray] = {}
    rows = []
    for i in range(batch_size):
        epoch = (start + i) // n
        if epoch not in orders:
            orders[epoch] = np.random.RandomState([seed, epoch]).permutation(n)
        rows.append(int(orders[epoch][(start + i) % n]))
    return rows


class ShuffledRows(PositionIterator):
    """A stage's rows served `batch_size` at a time in the order of `shuffled_rows`; like the QA feed, its whole
    state is one integer (`position`). Subclasses set `num_rows`, `batch_size` and `seed`."""
    num_rows: int
    batch_size: int
    seed: int

    def __len__(self) -> int:
        return self.num_rows

    def next_rows(self) -> list[int]:
        rows = shuffled_rows(self.seed, self.position, self.batch_size, self.num_rows)
        self.position += 1
        return rows


def make_step(loss_fn: Callable, optimizer):
    """(trained, opt_state, fixed, frozen, batch) -> (trained, opt_state, metrics): one Adam step on `trained`
    of loss_fn({**fixed, **trained}, frozen, batch) -> (loss, aux); a non-finite loss or gradient keeps the
    old state and reports finite=False."""
    def step(trained, opt_state, fixed, frozen, batch):
        (_, aux), grads = jax.value_and_grad(lambda tr: loss_fn({**fixed, **tr}, frozen, batch), has_aux=True)(trained)
        trained, opt_state, finite = guarded_update(optimizer, grads, opt_state, trained, aux["loss"])
        return trained, opt_state, {**aux, "finite": finite}
    return step


def run(params: dict, trained_keys: Sequence[str], loss_fn: Callable, frozen, batches, *, steps: int, lr: float,
        warmup_steps: int = 20, log=None, log_every: int = 10, name: str = "stage", hint: str = "lower its lr") -> dict:
    """`steps` Adam steps on params[trained_keys]; returns the full params. `log(step, metrics)` gets float
    metrics every `log_every` steps; a non-finite loss raises FloatingPointError naming the stage and step."""
    optimizer = optim.make_optimizer(lr, min(warmup_steps, max(steps // 10, 1)), steps)
    trained = {k: jnp.array(params[k]) for k in trained_keys}  # a copy: the step donates its buffers
    fixed = {k: v for k, v in params.items() if k not in trained_keys}
    opt_state = optimizer.init(trained)
    step_fn = jax.jit(make_step(loss_fn, optimizer), donate_argnums=(0, 1))
    t0 = time.perf_counter()
    for step in range(1, steps + 1):
        batch = {k: jnp.asarray(v) for k, v in next(batches).items()}
        trained, opt_state, m = step_fn(trained, opt_state, fixed, frozen, batch)
        if step % log_every == 0 or step == steps:
            m = {k: float(v) for k, v in jax.device_get(m).items()}
            if not m.pop("finite"):
                raise FloatingPointError(f"{name}: non-finite loss at step {step} (loss={m['loss']}); {hint}")
            m["seconds"] = time.perf_counter() - t0
            if log is not None:
                log(step, m)
    return {**fixed, **jax.device_get(trained)}
