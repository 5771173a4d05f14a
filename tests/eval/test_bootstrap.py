import numpy as np
import pytest

from lcf_jax.eval.bootstrap import excludes_zero, mean_interval, paired_difference


def test_paired_interval_sees_a_consistent_small_gain_that_unpaired_spread_hides():
    rng = np.random.default_rng(0)
    base = rng.uniform(0, 100, 300)               # questions differ a lot in difficulty
    better = base + rng.normal(2.0, 1.0, 300)     # the same questions, each a little better
    d = paired_difference(better, base)
    assert excludes_zero(d) and 1.7 < d[0] < 2.3
    _, lo_a, hi_a = mean_interval(better)
    _, lo_b, hi_b = mean_interval(base)
    assert lo_a < hi_b and lo_b < hi_a            # the two intervals alone overlap


def test_no_difference_gives_an_interval_around_zero():
    x = np.random.default_rng(1).uniform(0, 1, 200)
    y = x[np.random.default_rng(2).permutation(200)]
    d = paired_difference(x, y)
    assert d[1] < 0 < d[2] and not excludes_zero(d)


def test_shapes_checked():
    with pytest.raises(ValueError, match="same rows"):
        paired_difference([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="non-empty"):
        mean_interval([])
