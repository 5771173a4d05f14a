"""Optax: AdamW with linear warmup + cosine decay and global-norm clipping (adapter params only)."""
from __future__ import annotations

from typing import Mapping, Optional

import jax
import jax.numpy as jnp
import optax


def make_schedule(lr: float, warmup_steps: int, total_steps: int, end_factor: float = 0.1) -> optax.Schedule:
    warmup_steps = max(0, min(warmup_steps, total_steps - 1))
    return optax.warmup_cosine_decay_schedule(init_value=0.0 if warmup_steps else lr, peak_value=lr,
                                              warmup_steps=warmup_steps, decay_steps=max(total_steps, 1),
                                              end_value=lr * end_factor)


def make_optimizer(lr: float, warmup_steps: int, total_steps: int, weight_decay: float = 0.01,
                   clip_norm: float = 1.0, b1: float = 0.9, b2: float = 0.999,
                   frozen: Optional[Mapping[str, bool]] = None) -> optax.GradientTransformation:
    """`frozen`: top-level adapter parameter name -> whether it gets no update (e.g. a translation fitted
    in closed form while the pooling trains). Its update is zeroed after AdamW (weight decay included);
    the state stays params-shaped, so the optimizer state shards exactly like an unfrozen one."""
    chain = [optax.clip_by_global_norm(clip_norm)] if clip_norm and clip_norm > 0 else []
    chain.append(optax.adamw(make_schedule(lr, warmup_steps, total_steps), b1=b1, b2=b2, weight_decay=weight_decay))
    tx = optax.chain(*chain)
    if not frozen or not any(frozen.values()):
        return tx
    names = frozenset(k for k, v in frozen.items() if v)

    def zero_frozen(updates, state, params=None):
        del params
        return {k: (jax.tree.map(jnp.zeros_like, u) if k in names else u) for k, u in updates.items()}, state

    return optax.chain(tx, optax.GradientTransformation(lambda params: optax.EmptyState(), zero_frozen))
