"""Extra KV entries and per-token K/V deltas/replacements: semantics and gradient flow."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lcf_jax.models import transformer
from lcf_jax.models.cache import ExtraKV, KVCache
from lcf_jax.models.config import ModelConfig

CFG = ModelConfig(family="gemma3", vocab_size=64, hidden_size=32, intermediate_size=48, num_layers=2, num_heads=2,
                  num_kv_heads=1, head_dim=16, max_position_embeddings=128, layer_types=("sliding", "full"),
                  sliding_window=4, local_rope_theta=10000.0, rope_theta=1e6, qk_norm=True, sandwich_norm=True,
                  norm_plus_one=True, embed_scale=32 ** 0.5, activation="gelu_tanh", query_pre_attn_scalar=16)
PARAMS = transformer.init_params(CFG, jax.random.PRNGKey(0), scale=0.2)
TOKS = jnp.asarray(np.random.RandomState(0).randint(0, 64, (2, 10)))
POS = jnp.broadcast_to(jnp.arange(10), (2, 10))


def _extra(n, valid=True, seed=1):
    k = jax.random.normal(jax.random.PRNGKey(seed), (CFG.num_layers, 2, 1, n, 16))
    return ExtraKV(k, k * 0.5 + 1.0, jnp.full((2, n), valid))


def test_masked_extra_entries_change_nothing():
    base, _ = transformer.forward_jit(PARAMS, TOKS, POS, config=CFG)
    out, _ = transformer.forward_jit(PARAMS, TOKS, POS, config=CFG, extra_kv=_extra(5, valid=False))
    np.testing.assert_allclose(np.asarray(out), np.asarray(base), atol=1e-5)  # summation order only


def test_extra_entries_equal_a_prefix_of_tokens_without_rope():
    """Attending to extra entries = attending to a prefix whose keys are given as-is and that every
    query may see. Check against a direct computation on layer 0: one extra slot changes logits."""
    out, _ = transformer.forward_jit(PARAMS, TOKS, POS, config=CFG, extra_kv=_extra(3))
    base, _ = transformer.forward_jit(PARAMS, TOKS, POS, config=CFG)
    assert np.abs(np.asarray(out) - np.asarray(base)).max() > 1e-3


def test_extra_entries_are_seen_beyond_the_sliding_window():
    # Only layer 0 (sliding, window 4) gets live extra entries; the last query is far past the window
    # of every early token yet must still see the extra slots: its output must change.
    ex = _extra(2)
    ex = ex._replace(values=ex.values.at[1].set(0.0), keys=ex.keys.at[1].set(-1e4))
    out, _ = transformer.forward_jit(PARAMS, TOKS, POS, config=CFG, extra_kv=ex)
    base, _ = transformer.forward_jit(PARAMS, TOKS, POS, config=CFG)
    assert np.abs(np.asarray(out[:, -1]) - np.asarray(base[:, -1])).max() > 1e-4


def test_gradients_flow_into_extra_entries_and_deltas():
    ex = _extra(3)

    def loss_extra(k, v):
        logits, _ = transformer.forward(PARAMS, TOKS, POS, config=CFG, extra_kv=ExtraKV(k, v, ex.mask))
        return jnp.mean(logits ** 2)

    gk, gv = jax.grad(loss_extra, argnums=(0, 1))(ex.keys, ex.values)
    assert float(jnp.abs(gk).sum()) > 0 and float(jnp.abs(gv).sum()) > 0

    def loss_delta(dk, dv):
        logits, _ = transformer.forward(PARAMS, TOKS, POS, config=CFG, kv_delta=(dk, dv))
        return jnp.mean(logits ** 2)

    z = jnp.zeros((CFG.num_layers, 2, 1, 10, 16))
    gk, gv = jax.grad(loss_delta, argnums=(0, 1))(z, z)
    assert float(jnp.abs(gk).sum()) > 0 and float(jnp.abs(gv).sum()) > 0


def test_zero_delta_and_identity_replacement_change_nothing():
    base, cache = transformer.forward_jit(PARAMS, TOKS, POS, config=CFG)
    z = jnp.zeros_like(cache.keys)
    out, _ = transformer.forward_jit(PARAMS, TOKS, POS, config=CFG, kv_delta=(z, z))
    np.testing.assert_allclose(np.asarray(out), np.asarray(base), atol=1e-6)
    # Continue from a cache whose K/V were replaced by themselves (the fused-cache path) vs not.
    big = KVCache.empty(CFG, 2, 12)
    _, big = transformer.forward_jit(PARAMS, TOKS, POS, big, config=CFG)
    nxt = jnp.asarray([[5, 6], [7, 8]])
    npos = jnp.asarray([[10, 11], [10, 11]])
    a, _ = transformer.forward_jit(PARAMS, nxt, npos, big, config=CFG)
    b, _ = transformer.forward_jit(PARAMS, nxt, npos, big.replace_kv(big.keys, big.values), config=CFG)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    c, _ = transformer.forward_jit(PARAMS, nxt, npos, big.add_kv_delta(jnp.ones_like(big.keys), 0 * big.values),
                                   config=CFG)
    assert np.abs(np.asarray(c) - np.asarray(a)).max() > 1e-4


def test_gradients_flow_through_replaced_cache():
    _, cache = transformer.forward_jit(PARAMS, TOKS, POS, KVCache.empty(CFG, 2, 12), config=CFG)

    def loss(scale):
        c = cache.replace_kv(cache.keys * scale, cache.values * scale)
        logits, _ = transformer.forward(PARAMS, jnp.asarray([[1], [2]]), jnp.asarray([[10], [10]]), c, config=CFG)
        return jnp.sum(logits ** 2)

    assert abs(float(jax.grad(loss)(1.0))) > 0


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match="extra KV"):
        transformer.forward(PARAMS, TOKS, POS, config=CFG,
                            extra_kv=ExtraKV(jnp.zeros((1, 2, 1, 3, 16)), jnp.zeros((1, 2, 1, 3, 16)),
                                             jnp.ones((2, 3), bool)))
    with pytest.raises(ValueError, match="replacement"):
        KVCache.empty(CFG, 2, 4).replace_kv(jnp.zeros((1,)), jnp.zeros((1,)))
    with pytest.raises(ValueError, match="positions shape"):
        transformer.forward(PARAMS, TOKS, POS[:, :3], config=CFG)


def _padded_prompt(t, seed):
    """Two left-padded rows of t tokens (the second with 37 pads) and their mask."""
    toks = jnp.asarray(np.random.RandomState(seed).randint(0, 64, (2, t)))
    mask = jnp.ones((2, t), bool).at[1, :37].set(False)
    return toks, mask


@pytest.mark.parametrize("with_extra", [False, True])
def test_causal_blocks_match_full_attention(with_extra):
    """A 200-token prefill (4 query blocks of 64) into a cache with room for 150 more, left padding,
    the sliding layer, extra KV; then a second 150-token call that fills the cache exactly (index > 0,
    so its blocks keep no slack). Valid positions must match full attention, and so must the caches."""
    cfg = dataclasses.replace(CFG, max_position_embeddings=512, sliding_window=48)
    extra = _extra(3) if with_extra else None
    toks, mask = _padded_prompt(200, 3)
    more, more_mask = _padded_prompt(150, 4)
    more_mask = more_mask.at[1].set(True)
    results = []
    for blocks in (False, True):
        cache = KVCache.empty(cfg, 2, 350)
        logits, cache = transformer.forward_jit(PARAMS, toks, transformer.positions_from_mask(mask), cache,
                                                config=cfg, token_mask=mask, extra_kv=extra, causal_blocks=blocks)
        start = jnp.sum(mask, axis=1, keepdims=True)
        logits2, cache = transformer.forward_jit(PARAMS, more, transformer.positions_from_mask(more_mask) + start,
                                                 cache, config=cfg, token_mask=more_mask, extra_kv=extra,
                                                 causal_blocks=blocks)
        results.append((logits, logits2, cache))
    (a1, a2, ac), (b1, b2, bc) = results
    valid = np.asarray(mask)
    np.testing.assert_allclose(np.asarray(b1)[valid], np.asarray(a1)[valid], atol=2e-5)
    np.testing.assert_allclose(np.asarray(b2), np.asarray(a2), atol=2e-5)
    cache_valid = np.asarray(ac.mask)
    for x, y in ((ac.keys, bc.keys), (ac.values, bc.values)):
        np.testing.assert_allclose(np.asarray(y).transpose(0, 1, 3, 2, 4)[:, cache_valid],
                                   np.asarray(x).transpose(0, 1, 3, 2, 4)[:, cache_valid], atol=2e-5)


def test_causal_blocks_skip_work():
    """The blocked prefill compiles to fewer attention FLOPs than full attention (so the skip is real)."""
    cfg = dataclasses.replace(CFG, max_position_embeddings=512)
    toks, mask = _padded_prompt(256, 5)
    pos = transformer.positions_from_mask(mask)
    flops = [transformer.forward_jit.lower(PARAMS, toks, pos, None, config=cfg, token_mask=mask,
                                           causal_blocks=b).compile().cost_analysis()["flops"] for b in (False, True)]
    assert flops[1] < 0.9 * flops[0], flops
