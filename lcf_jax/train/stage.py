"""What every pre-training stage shares: a deterministic row order, and its form as a `phase.Phase` (AdamW
steps on a subset of the adapter's parameters) that runs through the main loop's step, NaN guard and
checkpoints (latent alignment, token translation, locator)."""
from __future__ import annotations

from typing import Callable, Sequence

import jax
import numpy as np

from lcf_jax.train import optim, phase
from lcf_jax.train.feed import PositionIterator
from lcf_jax.train.phase import Phase


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


def make_phase(name: str, trained_keys: Sequence[str], loss_fn: Callable, frozen, batches, *, steps: int, lr: float,
               warmup_steps: int = 20, hint: str = "lower its lr", log_prefix: str = "", log_offset: int = 0) -> Phase:
    """A pre-training stage as a `Phase`: AdamW steps on params[trained_keys] of
    loss_fn(params, frozen, batch) -> (loss, aux), logged as kind "pretrain"."""
    optimizer = optim.make_optimizer(lr, min(warmup_steps, max(steps // 10, 1)), steps)
    return Phase(name, steps, lambda p, fr, batch, **_: loss_fn(p, fr, batch), optimizer, batches, frozen,
                 tuple(trained_keys), log_kind="pretrain", log_prefix=log_prefix, log_offset=log_offset, hint=hint)


def run(stage: Phase, params: dict, *, log=None, log_every: int = 10, seed: int = 0) -> dict:
    """Runs a stage from `params` without checkpoints (tests, benchmarks, a caller that keeps only the result),
    through the loop every phase takes (`phase.run`); returns the full params. `log(step, metrics)` gets float
    metrics every `log_every` steps; a non-finite loss raises NonFiniteLossError naming the stage and step."""
    def write(step, kind, values):   # the stage's own view: its steps from 1, its metric names unprefixed
        log(step - stage.log_offset, {k.removeprefix(stage.log_prefix): v for k, v in values.items()})

    state, _ = phase.run(stage, phase.init_state(stage, params, seed), phase.jit_step(stage),
                         log=None if log is None else write,
                         log_every=log_every)
    return jax.device_get(state.params)
