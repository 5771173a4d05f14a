"""The positioned message convention: slots as a prefix of the receiver's cache after its BOS."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from adapter_tiny_models import model_params, tiny

from lcf_jax.adapters.lcfx import LCFXConfig, init_lcfx, message_prefix, positioned_kv_prefix
from lcf_jax.adapters import common as C
from lcf_jax.models import transformer as T
from lcf_jax.models.layers import invert_rope


def _unrotated(cache, cfg, start, n):
    """Un-rotated keys and values of cache slots [start, start + n): [L, B, H, n, D]."""
    k = cache.keys[:, :, :, start:start + n]
    cos, sin = C.layer_rope_tables(cache.positions[:, start:start + n], cfg, range(cfg.num_layers))
    k = jax.vmap(lambda x, c, s: invert_rope(x.transpose(0, 2, 1, 3), c, s).transpose(0, 2, 1, 3))(k, cos, sin)
    return k, cache.values[:, :, :, start:start + n]


@pytest.mark.parametrize("family", ["gemma3", "llama"])
def test_own_kv_through_the_convention_equals_reading(family):
    """R2 of the ladder on a tiny model: the receiver's own passage K/V, un-rotated and placed by the
    positioned convention, give the same logits as reading the passage (sliding layers included)."""
    r = tiny(family)
    pr = model_params(r, 1)
    rng = np.random.RandomState(0)
    ctx = jnp.asarray(rng.randint(3, 60, (2, 9)), jnp.int32)
    prompt = jnp.asarray(rng.randint(3, 60, (2, 5)), jnp.int32)
    bos = jnp.ones((2, 1), jnp.int32)
    full = jnp.concatenate([bos, ctx, prompt], axis=1)
    want, _ = T.forward(pr, full, jnp.broadcast_to(jnp.arange(15), (2, 15)), None, config=r)
    _, read = T.forward(pr, full[:, :10], jnp.broadcast_to(jnp.arange(10), (2, 10)), None, config=r)
    k, v = _unrotated(read, r, 1, 9)
    prefix = positioned_kv_prefix(k, v, pr, bos, capacity=15, receiver_cfg=r)
    got, _ = T.forward(pr, prompt, jnp.broadcast_to(jnp.arange(10, 15), (2, 5)), prefix, config=r)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want[:, 10:]), atol=1e-4, rtol=1e-4)
    # the convention's own positions matter: the same entries as position-free extras do not reproduce it
    moved = positioned_kv_prefix(k[:, :, :, ::-1], v[:, :, :, ::-1], pr, bos, capacity=15, receiver_cfg=r)
    other, _ = T.forward(pr, prompt, jnp.broadcast_to(jnp.arange(10, 15), (2, 5)), moved, config=r)
    assert np.abs(np.asarray(other) - np.asarray(want[:, 10:])).max() > 1e-3


@pytest.mark.parametrize("decoder", ["kv", "embed"])
def test_message_prefix_shapes_positions_and_gradients(decoder):
    s, r = tiny("llama"), tiny("gemma3")
    pr = model_params(r, 1)
    cfg = LCFXConfig(rank=16, slots=4, pool_heads=2, injection="positioned", decoder=decoder, embed_hidden=32)
    p = init_lcfx(jax.random.key(0), cfg, s, r)
    lat = jax.random.normal(jax.random.key(1), (2, 4, 16))
    bos = jnp.ones((2, 1), jnp.int32)
    cache = message_prefix(p, lat, pr, bos, capacity=12, cfg=cfg, receiver_cfg=r)
    assert int(cache.index) == 5
    np.testing.assert_array_equal(np.asarray(cache.positions[0, :5]), np.arange(5))
    assert bool(cache.mask[:, :5].all()) and not bool(cache.mask[:, 5:].any())

    def loss(p_):
        c = message_prefix(p_, lat, pr, bos, capacity=8, cfg=cfg, receiver_cfg=r)
        q = jnp.asarray([[5, 6, 7]] * 2, jnp.int32)
        logits, _ = T.forward(pr, q, jnp.broadcast_to(jnp.arange(5, 8), (2, 3)), c, config=r)
        return jnp.mean(logits ** 2)

    g = jax.grad(loss)(p)
    name = "v_gate" if decoder == "kv" else "dec_e_w2"
    assert float(jnp.abs(g[name]).max()) > 0


def test_embed_decoder_needs_positioned():
    with pytest.raises(ValueError, match="positioned"):
        LCFXConfig(decoder="embed")
