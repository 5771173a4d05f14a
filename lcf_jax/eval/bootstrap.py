"""Paired bootstrap intervals for per-question scores (F1, EM, accuracy) of two methods on the same rows."""
from __future__ import annotations

from typing import Sequence

import numpy as np


def mean_interval(scores: Sequence[float], *, n_boot: int = 10_000, seed: int = 0, level: float = 0.95):
    """(mean, low, high): the percentile bootstrap interval of the mean of per-row scores."""
    x = np.asarray(scores, np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"scores must be a non-empty 1-D sequence, got shape {x.shape}")
    idx = np.random.default_rng(seed).integers(0, x.size, (n_boot, x.size))
    means = x[idx].mean(axis=1)
    a = (1 - level) / 2
    return float(x.mean()), float(np.quantile(means, a)), float(np.quantile(means, 1 - a))


def paired_difference(a: Sequence[float], b: Sequence[float], *, n_boot: int = 10_000, seed: int = 0,
                      level: float = 0.95):
    """(mean(a - b), low, high): a paired bootstrap over rows (both methods resampled together), so the
    interval reflects the per-question difference, not the spread of either method alone."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired scores need the same rows: {a.shape} against {b.shape}")
    return mean_interval(a - b, n_boot=n_boot, seed=seed, level=level)


def excludes_zero(interval) -> bool:
    _, low, high = interval
    return low > 0 or high < 0


def format_interval(iv) -> str:
    """A (mean, low, high) interval as "mean [low, high]", one decimal (how every table prints one)."""
    m, lo, hi = iv
    return f"{m:.1f} [{lo:.1f}, {hi:.1f}]"
