import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from adapter_tiny_models import left_padded_batch, model_params, prefill_cache, question_logits, random_cache, random_like, tiny

from lcf_jax.adapters.lcfx import (LCFXConfig, decode_message, dequantize_message, encode_message, init_lcfx,
                                   message_nbytes, quantize_message, split_params)


def _pair(s_fam="llama", r_fam="gemma3"):
    s, r = tiny(s_fam), tiny(r_fam)
    ps, pr = model_params(s, 0), model_params(r, 1)
    st, sm = left_padded_batch([7, 4], 8, 0)       # the sharer's own context
    rt, rm = left_padded_batch([5, 6], 6, 1)       # the receiver's (different) context
    sc = prefill_cache(ps, s, st, sm)
    rc = prefill_cache(pr, r, rt, rm, extra_room=3)
    q = jnp.asarray([[5, 6, 7], [8, 9, 10]], jnp.int32)
    qpos = rc.positions[:, 5:6] + 1 + jnp.arange(3)[None]
    return s, r, pr, sc, rc, q, qpos


def _roundtrip(cfg, s, r):
    @jax.jit
    def f(params, sc, rc, slot_mask):
        lat = encode_message(params, sc, rc if cfg.conditioned else None, cfg=cfg, sharer_cfg=s, receiver_cfg=r)
        return lat, decode_message(params, lat, cfg=cfg, receiver_cfg=r, slot_mask=slot_mask)
    return f


def test_masked_slots_leave_logits_unchanged_and_fresh_init_is_near_noop():
    s, r, pr, sc, rc, q, qpos = _pair()
    cfg = LCFXConfig(rank=16, slots=4, pool_heads=2)
    p = init_lcfx(jax.random.key(0), cfg, s, r)
    base = question_logits(pr, r, rc, q, qpos)
    f = _roundtrip(cfg, s, r)
    # trained-looking params, all slots masked out -> the receiver's own attention, unchanged logits
    pt = jax.tree.map(lambda a, b: a + b, p, random_like(p, 3, 0.3))
    lat, extra = f(pt, sc, rc, jnp.zeros((2, 4), bool))
    assert lat.shape == (2, 4, 16)
    assert extra.keys.shape == (r.num_layers, 2, r.num_kv_heads, 4, r.head_dim) == extra.values.shape
    np.testing.assert_allclose(question_logits(pr, r, rc, q, qpos, extra_kv=extra), base, rtol=0, atol=1e-6)
    # the receiver decodes with its decoder params only
    enc_p, dec_p = split_params(pt)
    assert set(enc_p).isdisjoint(dec_p) and set(enc_p) | set(dec_p) == set(pt)
    extra_d = decode_message(dec_p, lat, cfg=cfg, receiver_cfg=r, slot_mask=jnp.zeros((2, 4), bool))
    np.testing.assert_allclose(extra_d.keys, extra.keys, rtol=1e-5, atol=1e-6)
    # the same message with slots visible changes the logits
    _, extra_on = f(pt, sc, rc, jnp.ones((2, 4), bool))
    assert not np.allclose(question_logits(pr, r, rc, q, qpos, extra_kv=extra_on), base, atol=1e-3)
    # fresh init: values are exactly zero (v_gate = 0); the logits move only by the softmax renormalisation
    _, extra0 = f(p, sc, rc, jnp.ones((2, 4), bool))
    assert float(jnp.abs(extra0.values).max()) == 0.0
    l0 = question_logits(pr, r, rc, q, qpos, extra_kv=extra0)
    assert float(jnp.abs(l0 - base).max()) < 0.5 * float(jnp.abs(base).max())


def test_encoder_ignores_padding_and_empty_rows_give_zero_latents():
    s, r = tiny("qwen2"), tiny("qwen3")
    cfg = LCFXConfig(rank=8, slots=3, pool_heads=2, sharer_layers=(1, 3))
    p = random_like(jax.eval_shape(lambda k: init_lcfx(k, cfg, s, r), jax.random.key(0)), 0, 0.3)
    sc = random_cache(s, [4, 0], 6, 0)
    enc = jax.jit(functools.partial(encode_message, cfg=cfg, sharer_cfg=s, receiver_cfg=r))
    lat = enc(p, sc)
    assert lat.shape == (2, 3, 8) and lat.dtype == jnp.float32
    np.testing.assert_array_equal(lat[1], 0.0)
    assert float(jnp.abs(lat[0]).max()) > 0
    # K/V in padded slots (and in unused sharer layers) do not matter
    noise = jnp.where(sc.mask[None, :, None, :, None], 0.0, 100.0)
    unused = jnp.zeros((s.num_layers, 1, 1, 1, 1)).at[jnp.array([0, 2])].set(50.0)
    sc2 = sc._replace(keys=sc.keys + noise + unused, values=sc.values + noise - unused)
    np.testing.assert_allclose(enc(p, sc2), lat, rtol=1e-5, atol=1e-5)


def test_conditioned_variant():
    s, r = tiny("gemma3"), tiny("llama")
    cfg = LCFXConfig(rank=8, slots=2, pool_heads=2, conditioned=True, cond_layers=(0, 2))
    cfg_u = LCFXConfig(rank=8, slots=2, pool_heads=2)
    p = init_lcfx(jax.random.key(0), cfg, s, r)
    assert {"cond_w", "cond_b", "cond_norm", "cond_shift"} <= set(p)
    assert p["cond_w"].shape == (2, 2 * r.kv_width, 8) and p["cond_shift"].shape == (8, 2, 8)
    sc = random_cache(s, [4, 5], 6, 0)
    rc1, rc2 = random_cache(r, [3, 5], 5, 1), random_cache(r, [3, 5], 5, 2)
    enc = jax.jit(functools.partial(encode_message, cfg=cfg, sharer_cfg=s, receiver_cfg=r))
    enc_u = jax.jit(functools.partial(encode_message, cfg=cfg_u, sharer_cfg=s, receiver_cfg=r))
    pu = {k: v for k, v in p.items() if not k.startswith("cond_")}
    # zero-init W_shift: a fresh conditioned encoder equals the unconditioned one
    np.testing.assert_allclose(enc(p, sc, rc1), enc_u(pu, sc), rtol=1e-6, atol=1e-6)
    p2 = dict(p, cond_shift=p["cond_shift"] + random_like(p["cond_shift"], 1, 0.5))
    assert not np.allclose(enc(p2, sc, rc1), enc(p2, sc, rc2), atol=1e-4)  # depends on the receiver's cache
    with pytest.raises(ValueError, match="needs receiver_cache"):
        encode_message(p, sc, cfg=cfg, sharer_cfg=s, receiver_cfg=r)


def test_gradients_reach_every_lcfx_param(conditioned=True):  # the conditioned variant has every param
    s, r, pr, sc, rc, q, qpos = _pair("qwen3", "qwen2")
    cfg = LCFXConfig(rank=8, slots=3, pool_heads=2, conditioned=conditioned, receiver_layers=(1, 3))
    p = init_lcfx(jax.random.key(0), cfg, s, r)
    p = jax.tree.map(lambda a, b: a + b, p, random_like(p, 2, 0.2))

    @jax.jit
    def loss(params):  # frozen receiver weights and caches closed over
        lat = encode_message(params, sc, rc if conditioned else None, cfg=cfg, sharer_cfg=s, receiver_cfg=r)
        extra = decode_message(params, lat, cfg=cfg, receiver_cfg=r)
        logits = question_logits(pr, r, rc, q, qpos, extra_kv=extra)
        return jax.nn.logsumexp(logits, -1).mean() - logits[..., 3].mean()

    g = jax.grad(loss)(p)
    assert jax.tree.structure(g) == jax.tree.structure(p)
    for path, x in jax.tree_util.tree_leaves_with_path(g):
        assert bool(jnp.isfinite(x).all()) and float(jnp.abs(x).max()) > 0, jax.tree_util.keystr(path)
    extra = decode_message(p, jnp.ones((2, 3, 8)), cfg=cfg, receiver_cfg=r)
    for l in (0, 2):  # layers outside receiver_layers get zero entries
        assert float(jnp.abs(extra.keys[l]).max()) == 0.0 and float(jnp.abs(extra.values[l]).max()) == 0.0


def test_quantize_roundtrip_bounds_and_sizes():
    x = jax.random.normal(jax.random.key(0), (2, 16, 64)) * jnp.linspace(0.01, 10, 16)[None, :, None]
    x = x.at[1, 3].set(0.0)  # an all-zero slot
    assert message_nbytes(x) == 2 * 16 * 64 * 4
    q16, s16 = quantize_message(x, "float16")
    assert q16.dtype == jnp.float16 and s16 is None and message_nbytes((q16, s16)) == 2 * 16 * 64 * 2
    err16 = jnp.abs(dequantize_message(q16) - x)
    assert bool((err16 <= jnp.abs(x) * 2.0 ** -11 + 1e-7).all())
    q8, s8 = quantize_message(x, "int8")
    assert q8.dtype == jnp.int8 and s8.shape == (2, 16, 1)
    assert message_nbytes((q8, s8)) == 2 * 16 * 64 + 2 * 16 * 4
    d8 = dequantize_message(q8, s8)
    assert bool((jnp.abs(d8 - x) <= s8 / 2 * (1 + 1e-5) + 1e-8).all())
    np.testing.assert_array_equal(d8[1, 3], 0.0)
    rel = jnp.linalg.norm(d8 - x) / jnp.linalg.norm(x)
    assert float(rel) < 0.01
    with pytest.raises(ValueError, match="needs its scale"):
        dequantize_message(q8)
    with pytest.raises(ValueError, match="message dtype"):
        quantize_message(x, "int4")
