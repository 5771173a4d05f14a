import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from adapter_tiny_models import (FAMILIES, left_padded_batch, model_params, prefill_cache, question_logits,
                                 random_alignment, random_cache, tiny)

from lcf_jax.adapters.lcf import LCFConfig, apply_lcf, init_lcf, lcf_groups, lcf_param_axes
from lcf_jax.kernels.compress_translate import compress_translate_reference
from lcf_jax.models import layers as L
from lcf_jax.models import transformer as T


def _setup(s_fam="gemma3", r_fam="llama", extra_room=3):
    s, r = tiny(s_fam), tiny(r_fam)
    ps, pr = model_params(s, 0), model_params(r, 1)
    st, sm = left_padded_batch([7, 5], 8, 0)
    rt, rm = left_padded_batch([6, 4], 7, 1)
    sc = prefill_cache(ps, s, st, sm)
    rc = prefill_cache(pr, r, rt, rm, extra_room=extra_room)
    al = random_alignment(sm, rm, 0)
    al = jnp.concatenate([al, -jnp.ones((2, extra_room), jnp.int32)], axis=1)
    q = jnp.asarray([[5, 6, 7], [8, 9, 10]], jnp.int32)
    qpos = rc.positions[:, 6:7] + 1 + jnp.arange(3)[None]
    return s, r, pr, sc, rc, al, q, qpos


def _perturb(params, seed=3, scale=0.1):
    leaves, tdef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree.unflatten(tdef, [x + scale * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])


def test_fresh_lcf_is_exact_noop_and_disabled_gate_too():
    s, r, pr, sc, rc, al, q, qpos = _setup()
    base = question_logits(pr, r, rc, q, qpos)
    cfg = LCFConfig(rank=8)
    p = init_lcf(jax.random.key(0), cfg, s, r)
    fused = apply_lcf(p, sc, rc, al, cfg=cfg, sharer_cfg=s, receiver_cfg=r)
    np.testing.assert_array_equal(fused.keys, rc.keys)  # W_up = 0 at init
    # A trained-looking adapter with every layer disabled (enabled = 0) is an exact no-op.
    p = _perturb(p)
    cfg_off = LCFConfig(rank=8, disabled=tuple(range(r.num_layers)))
    fused = apply_lcf(p, sc, rc, al, cfg=cfg_off, sharer_cfg=s, receiver_cfg=r)
    np.testing.assert_array_equal(fused.keys, rc.keys)
    np.testing.assert_array_equal(fused.values, rc.values)
    np.testing.assert_array_equal(question_logits(pr, r, fused, q, qpos), base)
    # runtime enabled mask: zero for all layers also leaves logits unchanged
    fused = apply_lcf(p, sc, rc, al, cfg=cfg, sharer_cfg=s, receiver_cfg=r, enabled=jnp.zeros(r.num_layers))
    np.testing.assert_array_equal(question_logits(pr, r, fused, q, qpos), base)
    # enabled adapter changes the real tokens only
    fused = apply_lcf(p, sc, rc, al, cfg=cfg, sharer_cfg=s, receiver_cfg=r)
    diff = jnp.abs(fused.keys - rc.keys).max(axis=(0, 2, 4))  # [B, S]
    assert bool((diff[rc.mask] > 0).all()) and bool((diff[~rc.mask] == 0).all())
    assert not np.allclose(question_logits(pr, r, fused, q, qpos), base)


def test_lcf_matches_per_token_reference():
    """apply_lcf == per-layer compress_translate_reference on hand-gathered tokens (layer map, gather,
    per-layer RoPE tables of the SOURCE sharer layer / receiver layer)."""
    s, r = tiny("gemma3"), tiny("qwen2")  # receiver deeper? qwen2 4 layers, gemma3 4 layers -> use proportional too
    sc = random_cache(s, [5, 3], 6, 0)
    rc = random_cache(r, [4, 6], 7, 1)
    al = random_alignment(sc.mask, rc.mask, 2)
    cfg = LCFConfig(rank=8, zero_init_up=False, layer_map="proportional", gate_init=1.0)
    p = _perturb(init_lcf(jax.random.key(1), cfg, s, r))
    out = apply_lcf(p, sc, rc, al, cfg=cfg, sharer_cfg=s, receiver_cfg=r)
    (g,) = lcf_groups(cfg, s, r)
    for j, (rl, sl) in enumerate(zip(g.receiver_layers, g.sharer_layers)):
        for b in range(2):
            for t in range(7):
                a = int(al[b, t])
                if a < 0:
                    np.testing.assert_array_equal(out.keys[rl, b, :, t], rc.keys[rl, b, :, t])
                    continue
                scos, ssin = L.rope_cos_sin(sc.positions[b, a][None], s.head_dim, s.layer_rope_theta(sl),
                                            s.layer_rope_scale(sl))
                rcos, rsin = L.rope_cos_sin(rc.positions[b, t][None], r.head_dim, r.layer_rope_theta(rl),
                                            r.layer_rope_scale(rl))
                lp = {k: v[j] for k, v in p[g.name].items()}
                lp["gate"] = jax.nn.sigmoid(lp.pop("gate_logit"))
                ko, vo = compress_translate_reference(sc.keys[sl, b, :, a][None], sc.values[sl, b, :, a][None],
                                                      scos, ssin, rc.keys[rl, b, :, t][None],
                                                      rc.values[rl, b, :, t][None], rcos, rsin, lp)
                np.testing.assert_allclose(out.keys[rl, b, :, t], ko[0], rtol=1e-5, atol=1e-5)
                np.testing.assert_allclose(out.values[rl, b, :, t], vo[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("s_fam", FAMILIES)
def test_shapes_every_family_pair(s_fam):
    for r_fam in FAMILIES:
        s, r = tiny(s_fam), tiny(r_fam)
        sc = random_cache(s, [5, 3], 6, 0)
        rc = random_cache(r, [4, 6], 7, 1)
        al = random_alignment(sc.mask, rc.mask, 2)
        cfg = LCFConfig(rank=4, zero_init_up=False)
        p = init_lcf(jax.random.key(0), cfg, s, r)
        axes = lcf_param_axes(cfg, s, r)
        assert jax.tree.structure(axes, is_leaf=lambda x: isinstance(x, tuple)) == jax.tree.structure(p)
        for leaf, ax in zip(jax.tree.leaves(p), jax.tree.leaves(axes, is_leaf=lambda x: isinstance(x, tuple))):
            assert leaf.ndim == len(ax) and ax[0] == "layers"
        out = apply_lcf(p, sc, rc, al, cfg=cfg, sharer_cfg=s, receiver_cfg=r)
        assert out.keys.shape == rc.keys.shape and out.values.shape == rc.values.shape
        assert out.keys.dtype == rc.keys.dtype
        assert bool(jnp.isfinite(out.keys).all())


def test_gradients_reach_adapter_params_only():
    s, r, pr, sc, rc, al, q, qpos = _setup("qwen3", "gemma3")
    cfg = LCFConfig(rank=8, zero_init_up=False)
    p = init_lcf(jax.random.key(0), cfg, s, r)

    @jax.jit
    def loss(adapter):  # frozen models (pr, caches) are closed over, not differentiated
        fused = apply_lcf(adapter, sc, rc, al, cfg=cfg, sharer_cfg=s, receiver_cfg=r)
        logits = question_logits(pr, r, fused, q, qpos)
        return jax.nn.logsumexp(logits, -1).mean() - logits[..., 7].mean()

    grads = jax.grad(loss)(p)
    assert jax.tree.structure(grads) == jax.tree.structure(p)
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
        assert bool(jnp.isfinite(g).all()), path
        assert float(jnp.abs(g).max()) > 0, f"zero gradient for {jax.tree_util.keystr(path)}"


def test_entry_checks():
    s, r = tiny("llama"), tiny("qwen3")
    sc = random_cache(s, [3], 4, 0)
    rc = random_cache(r, [3], 4, 1)
    cfg = LCFConfig(rank=4)
    p = init_lcf(jax.random.key(0), cfg, s, r)
    with pytest.raises(ValueError, match="alignment has shape"):
        apply_lcf(p, sc, rc, jnp.zeros((1, 5), jnp.int32), cfg=cfg, sharer_cfg=s, receiver_cfg=r)
    with pytest.raises(ValueError, match="receiver cache keys"):
        apply_lcf(p, sc, sc, jnp.zeros((1, 4), jnp.int32), cfg=cfg, sharer_cfg=s, receiver_cfg=r)
    with pytest.raises(ValueError, match="the config implies"):
        apply_lcf(init_lcf(jax.random.key(0), LCFConfig(rank=2), s, r), sc, rc, jnp.zeros((1, 4), jnp.int32),
                  cfg=cfg, sharer_cfg=s, receiver_cfg=r)
    with pytest.raises(ValueError, match="no sharer source"):
        init_lcf(jax.random.key(0), LCFConfig(layer_map="last_aligned_strict", layers=(0,)), tiny("qwen3"), tiny("qwen2"))
