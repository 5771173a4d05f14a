import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from adapter_tiny_models import (left_padded_batch, model_params, prefill_cache, question_logits, random_alignment,
                                 random_cache, random_like, tiny)

from lcf_jax.adapters.lcf import LCFConfig, apply_lcf, init_lcf, lcf_groups
from lcf_jax.kernels.compress_translate import compress_translate_reference
from lcf_jax.models import layers as L


def setup_pair(s_fam="gemma3", r_fam="llama", extra_room=3):
    """Real prefilled caches of two tiny random models, an alignment, and question tokens."""
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


def perturb(params, seed=3, scale=0.1):
    return jax.tree.map(lambda a, b: a + b, params, random_like(params, seed, scale))


def jit_apply(cfg, s, r):
    return jax.jit(functools.partial(apply_lcf, cfg=cfg, sharer_cfg=s, receiver_cfg=r))


def test_fresh_lcf_is_exact_noop_and_disabled_gate_too():
    s, r, pr, sc, rc, al, q, qpos = setup_pair()
    base = question_logits(pr, r, rc, q, qpos)
    cfg = LCFConfig(rank=8)
    p = init_lcf(jax.random.key(0), cfg, s, r)
    apply = jit_apply(cfg, s, r)
    fused = apply(p, sc, rc, al)
    np.testing.assert_array_equal(fused.keys, rc.keys)  # W_up = 0 at init
    np.testing.assert_array_equal(fused.values, rc.values)
    # A trained-looking adapter with every layer disabled (enabled = 0) is an exact no-op.
    p = perturb(p)
    cfg_off = LCFConfig(rank=8, disabled=tuple(range(r.num_layers)))
    fused = jit_apply(cfg_off, s, r)(p, sc, rc, al)
    np.testing.assert_array_equal(fused.keys, rc.keys)
    np.testing.assert_array_equal(fused.values, rc.values)
    np.testing.assert_array_equal(question_logits(pr, r, fused, q, qpos), base)
    # runtime enabled mask: zero for every layer also leaves the logits unchanged
    fused = apply(p, sc, rc, al, enabled=jnp.zeros(r.num_layers))
    np.testing.assert_array_equal(question_logits(pr, r, fused, q, qpos), base)
    # an enabled adapter changes the real tokens only
    fused = apply(p, sc, rc, al, enabled=jnp.ones(r.num_layers))
    diff = jnp.abs(fused.keys - rc.keys).max(axis=(0, 2, 4))  # [B, S]
    valid = np.asarray(rc.mask) & (np.asarray(al) >= 0)
    assert bool((diff[valid] > 0).all()) and bool((diff[~valid] == 0).all())
    assert not np.allclose(question_logits(pr, r, fused, q, qpos), base)


def test_lcf_matches_per_token_reference():
    """apply_lcf == compress_translate_reference on hand-gathered tokens: the layer map, the gather by
    alignment, and RoPE tables from the SOURCE sharer layer / the receiver layer at their positions."""
    s, r = tiny("gemma3"), tiny("llama")  # gemma3 alternates 10k/1M RoPE bases across layers
    sc = random_cache(s, [5, 3], 6, 0)
    rc = random_cache(r, [4, 6], 7, 1)
    al = np.asarray(random_alignment(sc.mask, rc.mask, 2))
    cfg = LCFConfig(rank=8, layer_map="proportional", gate_init=1.0)
    p = perturb(init_lcf(jax.random.key(1), cfg, s, r))
    out = jit_apply(cfg, s, r)(p, sc, rc, jnp.asarray(al))
    (g,) = lcf_groups(cfg, s, r)
    assert g.sharer_layers == (0, 2, 3) and g.receiver_layers == (0, 1, 2)  # proportional 4 -> 3
    ref = jax.jit(compress_translate_reference)
    b_idx, t_idx = np.nonzero(al >= 0)
    a_idx = al[b_idx, t_idx]
    spos, rpos = np.asarray(sc.positions)[b_idx, a_idx], np.asarray(rc.positions)[b_idx, t_idx]
    for j, (rl, sl) in enumerate(zip(g.receiver_layers, g.sharer_layers)):
        scos, ssin = L.rope_cos_sin(jnp.asarray(spos), s.head_dim, s.layer_rope_theta(sl), s.layer_rope_scale(sl))
        rcos, rsin = L.rope_cos_sin(jnp.asarray(rpos), r.head_dim, r.layer_rope_theta(rl), r.layer_rope_scale(rl))
        lp = {k: v[j] for k, v in p[g.name].items()}
        lp["gate"] = jax.nn.sigmoid(lp.pop("gate_logit"))
        sk = np.asarray(sc.keys)[sl][b_idx, :, a_idx]
        sv = np.asarray(sc.values)[sl][b_idx, :, a_idx]
        rk = np.asarray(rc.keys)[rl][b_idx, :, t_idx]
        rv = np.asarray(rc.values)[rl][b_idx, :, t_idx]
        ko, vo = ref(sk, sv, scos, ssin, rk, rv, rcos, rsin, lp)
        np.testing.assert_allclose(np.asarray(out.keys)[rl][b_idx, :, t_idx], ko, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(np.asarray(out.values)[rl][b_idx, :, t_idx], vo, rtol=1e-5, atol=1e-5)
        assert not np.allclose(ko, rk)
    # padding slots untouched
    pad = al < 0
    tok = lambda x: np.asarray(x).transpose(1, 3, 0, 2, 4)  # noqa: E731  [B, S, L, H, D]
    np.testing.assert_array_equal(tok(out.keys)[pad], tok(rc.keys)[pad])


def test_gradients_reach_adapter_params_only():
    s, r, pr, sc, rc, al, q, qpos = setup_pair("qwen3", "gemma3")
    cfg = LCFConfig(rank=8)
    p = perturb(init_lcf(jax.random.key(0), cfg, s, r))

    @jax.jit
    def loss(adapter):  # the frozen receiver params and both caches are closed over, not differentiated
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
    p = jax.eval_shape(lambda k: init_lcf(k, cfg, s, r), jax.random.key(0))
    p = random_like(p, 0)
    with pytest.raises(ValueError, match="alignment has shape"):
        apply_lcf(p, sc, rc, jnp.zeros((1, 5), jnp.int32), cfg=cfg, sharer_cfg=s, receiver_cfg=r)
    with pytest.raises(ValueError, match="receiver cache keys"):
        apply_lcf(p, sc, sc, jnp.zeros((1, 4), jnp.int32), cfg=cfg, sharer_cfg=s, receiver_cfg=r)
    p2 = random_like(jax.eval_shape(lambda k: init_lcf(k, LCFConfig(rank=2), s, r), jax.random.key(0)), 0)
    with pytest.raises(ValueError, match="the config implies"):
        apply_lcf(p2, sc, rc, jnp.zeros((1, 4), jnp.int32), cfg=cfg, sharer_cfg=s, receiver_cfg=r)
    with pytest.raises(ValueError, match="no sharer source"):
        init_lcf(jax.random.key(0), LCFConfig(layer_map="last_aligned_strict", layers=(0,)), tiny("qwen3"), tiny("qwen2"))
    with pytest.raises(ValueError, match="layer_map"):
        LCFConfig(layer_map="nope")


def test_separate_kv_ablation_keeps_keys_and_values_apart():
    """joint_kv=False: keys are translated from sharer keys only and values from values only, at
    (almost) the joint adapter's parameter count; it is an ablation, so export and pruning refuse it."""
    from lcf_jax.adapters import export_format, prune, size

    s, r, pr, sc, rc, al, q, qpos = setup_pair()
    cfg = LCFConfig(rank=8, joint_kv=False)
    p = init_lcf(jax.random.key(0), cfg, s, r)
    apply = jit_apply(cfg, s, r)
    fused = apply(p, sc, rc, al)
    np.testing.assert_array_equal(fused.keys, rc.keys)  # fresh: an exact no-op, like the joint adapter
    p = perturb(p)
    fused = apply(p, sc, rc, al)
    other_values = sc._replace(values=sc.values + 1.0)
    fused_v = apply(p, other_values, rc, al)
    np.testing.assert_array_equal(fused_v.keys, fused.keys)  # keys never see the sharer's values
    assert float(jnp.abs(fused_v.values - fused.values).max()) > 1e-4
    other_keys = sc._replace(keys=sc.keys + 1.0)
    fused_k = apply(p, other_keys, rc, al)
    np.testing.assert_array_equal(fused_k.values, fused.values)  # values never see the sharer's keys
    assert float(jnp.abs(fused_k.keys - fused.keys).max()) > 1e-4

    joint, n = LCFConfig(rank=8), len(lcf_groups(cfg, s, r)[0].receiver_layers)
    assert size.adapter_param_count(cfg, s, r) == size.adapter_param_count(joint, s, r) + 2 * 8 * n
    with pytest.raises(export_format.AdapterFormatError, match="joint_kv"):
        export_format.normalize_config("lcf", cfg)
    with pytest.raises(ValueError, match="joint"):
        prune.prune_lcf(p, cfg, s, r, target_rank=4)
