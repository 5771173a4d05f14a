import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from adapter_tiny_models import random_alignment, random_cache, random_like, tiny

from lcf_jax.adapters.lcf import LCFConfig, apply_lcf, init_lcf, lcf_groups
from lcf_jax.adapters.prune import format_report, prune_lcf, singular_values
from lcf_jax.adapters.size import adapter_param_count


@pytest.fixture(scope="module")
def trained():
    s, r = tiny("qwen2"), tiny("gemma3")  # 4 -> 4 layers
    cfg = LCFConfig(rank=8)
    p = init_lcf(jax.random.key(0), cfg, s, r)
    p = jax.tree.map(lambda a, b: a + b, p, random_like(p, 1, 0.3))
    g = p["r8"]
    g["gate_logit"] = jnp.array([2.0, -4.0, 1.0, 0.5])          # layer 1 gate ~0.018
    w = np.array(g["w_down"])
    w[0, :, 2:] *= 1e-3                                            # layer 0 nearly rank 2
    g["w_down"] = jnp.asarray(w)
    sc = random_cache(s, [5, 3], 6, 0)
    rc = random_cache(r, [4, 6], 7, 1)
    al = random_alignment(sc.mask, rc.mask, 2)
    return s, r, cfg, p, sc, rc, al


def _apply(p, cfg, s, r, sc, rc, al):
    return jax.jit(functools.partial(apply_lcf, cfg=cfg, sharer_cfg=s, receiver_cfg=r))(p, sc, rc, al)


def test_nothing_cut_preserves_outputs(trained):
    s, r, cfg, p, sc, rc, al = trained
    ref = _apply(p, cfg, s, r, sc, rc, al)
    for kw in ({}, {"gate_threshold": 0.001}, {"energy": 1.0}, {"target_rank": 8}):
        p2, cfg2, rep = prune_lcf(p, cfg, s, r, **kw)
        assert rep["params_after"] == rep["params_before"] and cfg2.layers == (0, 1, 2, 3)
        out = _apply(p2, cfg2, s, r, sc, rc, al)
        np.testing.assert_array_equal(out.keys, ref.keys)
        np.testing.assert_array_equal(out.values, ref.values)


def test_gate_threshold_drops_layers(trained):
    s, r, cfg, p, sc, rc, al = trained
    ref = _apply(p, cfg, s, r, sc, rc, al)
    p2, cfg2, rep = prune_lcf(p, cfg, s, r, gate_threshold=0.1)
    assert rep["dropped_layers"] == (1,) and cfg2.layers == (0, 2, 3) and cfg2.ranks == (8, 8, 8)
    assert rep["params_after"] < rep["params_before"] and rep["mb_after"] < rep["mb_before"]
    assert rep["params_after"] == adapter_param_count(cfg2, s, r) == rep["params_before"] * 3 // 4
    out = _apply(p2, cfg2, s, r, sc, rc, al)
    np.testing.assert_array_equal(out.keys[1], rc.keys[1])      # dropped layer: untouched
    for l in (0, 2, 3):                                          # kept layers: bit-identical
        np.testing.assert_array_equal(out.keys[l], ref.keys[l])
    assert "dropped [1]" in format_report(rep)
    p3, cfg3, rep3 = prune_lcf(p, cfg, s, r, gate_threshold=1.0)   # everything dropped
    assert cfg3.layers == () and p3 == {} and rep3["params_after"] == 0
    out = _apply(p3, cfg3, s, r, sc, rc, al)
    np.testing.assert_array_equal(out.keys, rc.keys)


@pytest.mark.parametrize("method", ["svd", "units"])
def test_rank_cut_shrinks_and_regroups(trained, method):
    s, r, cfg, p, sc, rc, al = trained
    p2, cfg2, rep = prune_lcf(p, cfg, s, r, energy=0.99, method=method)
    assert cfg2.ranks[0] <= 3 and max(cfg2.ranks) <= 8 and len(set(cfg2.ranks)) >= 2
    assert rep["params_after"] < rep["params_before"]
    assert set(p2) == {g.name for g in lcf_groups(cfg2, s, r)} and len(p2) >= 2
    out = _apply(p2, cfg2, s, r, sc, rc, al)
    assert out.keys.shape == rc.keys.shape and bool(jnp.isfinite(out.keys).all())
    # layers whose rank was kept are bit-identical
    ref = _apply(p, cfg, s, r, sc, rc, al)
    for l, k in zip(cfg2.layers, cfg2.ranks):
        if k == 8:
            np.testing.assert_array_equal(out.keys[l], ref.keys[l])


def test_svd_refactor_is_best_rank_k_of_the_product(trained):
    s, r, cfg, p, sc, rc, al = trained
    p2, cfg2, _ = prune_lcf(p, cfg, s, r, target_rank=3, method="svd")
    assert cfg2.ranks == (3, 3, 3, 3) and set(p2) == {"r3"}
    for j in range(4):
        lp = {k: np.asarray(v[j], np.float64) for k, v in p["r8"].items()}
        m = (lp["w_down"] * lp["norm"]) @ lp["w_up"]
        m2 = np.asarray(p2["r3"]["w_down"][j], np.float64) @ np.asarray(p2["r3"]["w_up"][j], np.float64)
        sv = singular_values(lp)
        assert np.linalg.norm(m - m2) == pytest.approx(np.sqrt(np.sum(sv[3:] ** 2)), rel=1e-3)
