"""Optax: AdamW with linear warmup + cosine decay and global-norm clipping (adapter params only)."""
from __future__ import annotations

import optax


def make_schedule(lr: float, warmup_steps: int, total_steps: int, end_factor: float = 0.1) -> optax.Schedule:
    warmup_steps = max(0, min(warmup_steps, total_steps - 1))
    return optax.warmup_cosine_decay_schedule(init_value=0.0 if warmup_steps else lr, peak_value=lr,
                                              warmup_steps=warmup_steps, decay_steps=max(total_steps, 1),
                                              end_value=lr * end_factor)


def make_optimizer(lr: float, warmup_steps: int, total_steps: int, weight_decay: float = 0.01,
                   clip_norm: float = 1.0, b1: float = 0.9, b2: float = 0.999) -> optax.GradientTransformation:
    chain = [optax.clip_by_global_norm(clip_norm)] if clip_norm and clip_norm > 0 else []
    chain.append(optax.adamw(make_schedule(lr, warmup_steps, total_steps), b1=b1, b2=b2, weight_decay=weight_decay))
    return optax.chain(*chain)
