"""Window pooling: the message is the m consecutive translated tokens that the receiver's question
scores highest."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from adapter_tiny_models import model_params, tiny

from lcf_jax.adapters import lcfx
from lcf_jax.models import transformer as T


def _brute_force(scores, mask, m):
    """Reference: enumerate every window of m valid tokens (in order), take the first with the most mass."""
    idx = np.nonzero(mask)[0]
    n = len(idx)
    p = np.exp(scores[idx] - scores[idx].max())
    p /= p.sum()
    best = max(range(max(n - m, 0) + 1), key=lambda s: (p[s:s + m].sum(), -s))
    take = idx[best:best + m]
    return list(take), min(m, n)


@pytest.mark.parametrize("seed", range(6))
def test_window_slots_match_a_brute_force_search(seed):
    rng = np.random.RandomState(seed)
    b, s, m = 5, 12, 4
    scores = rng.randn(b, s).astype(np.float32) * 3
    mask = np.zeros((b, s), bool)
    mask[0] = True                        # full row
    mask[1, 5:] = True                    # left padded
    mask[2, :7] = True                    # right padded
    mask[3, [2, 4, 9]] = True             # fewer valid tokens than slots, scattered
    mask[4, 1:11] = rng.rand(10) > 0.3
    index, valid = lcfx.window_slots(jnp.asarray(scores), jnp.asarray(mask), m)
    index, valid = np.asarray(index), np.asarray(valid)
    for i in range(b):
        want, n_valid = _brute_force(scores[i], mask[i], m)
        assert valid[i].sum() == n_valid
        assert list(index[i][valid[i]]) == want, f"row {i}"


def _setup(family_s="llama", family_r="gemma3", **kw):
    s, r = tiny(family_s), tiny(family_r)
    cfg = lcfx.LCFXConfig(**{"rank": 16, "slots": 3, "pool_heads": 2, "conditioned": True, "pooling": "window",
                             "locator_rank": 8, "injection": "positioned", "decoder": "embed", "embed_hidden": 24, **kw})
    return cfg, s, r


def _cache(params, cfg, ids, mask):
    _, c = T.forward(params, jnp.asarray(ids), T.positions_from_mask(jnp.asarray(mask)), None, config=cfg,
                     token_mask=jnp.asarray(mask))
    return c


def test_the_window_message_is_the_chosen_tokens_own_latents_and_zero_past_the_end():
    cfg, s, r = _setup()
    ps, pr = model_params(s, 0), model_params(r, 1)
    p = lcfx.init_lcfx(jax.random.key(0), cfg, s, r)
    p = {**p, "loc_wb": jax.random.normal(jax.random.key(3), p["loc_wb"].shape)}
    rng = np.random.RandomState(0)
    ids = rng.randint(3, 60, (2, 8))
    mask = np.ones((2, 8), bool)
    mask[1, :6] = False                                   # row 1 holds 2 tokens, fewer than the 3 slots
    s_cache = _cache(ps, s, ids, mask)
    r_cache = _cache(pr, r, rng.randint(3, 60, (2, 5)), np.ones((2, 5), bool))
    lat = lcfx.encode_message(p, s_cache, r_cache, cfg=cfg, sharer_cfg=s, receiver_cfg=r)
    z = lcfx.token_latents(p, s_cache, cfg=cfg, sharer_cfg=s, receiver_cfg=r)
    c = lcfx.receiver_summary(p, r_cache, cfg=cfg, sharer_cfg=s, receiver_cfg=r)
    index, valid = lcfx.window_slots(lcfx.token_scores(p, z, c, cfg=cfg), s_cache.mask, 3)
    per_token = lcfx.token_messages(p, z, cfg=cfg)
    for i in range(2):
        for j in range(3):
            if valid[i, j]:
                np.testing.assert_allclose(lat[i, j], per_token[i, index[i, j]], atol=1e-5)
            else:
                assert not np.any(np.asarray(lat[i, j]))
    assert np.asarray(valid).sum(1).tolist() == [3, 2]
    # an all-zero slot is an absent one: the receiver's cache holds only the two real slots of row 1
    bos = jnp.ones((2, 1), jnp.int32)
    prefix = lcfx.message_prefix(p, lat, pr, bos, capacity=8, cfg=cfg, receiver_cfg=r)
    assert np.asarray(prefix.mask)[:, :4].tolist() == [[True] * 4, [True, True, True, False]]


def test_the_chosen_window_follows_the_scores():
    """Scores that single out one token put it inside the window (the locator decides what is sent)."""
    cfg, s, r = _setup(slots=2)
    b, n = 1, 9
    for hot in (0, 4, 8):
        scores = jnp.zeros((b, n)).at[0, hot].set(10.0)
        index, valid = lcfx.window_slots(scores, jnp.ones((b, n), bool), 2)
        assert hot in np.asarray(index)[0].tolist() and bool(np.asarray(valid).all())


def test_an_unconditioned_window_reads_the_passage_alone_and_starts_at_its_first_tokens():
    """No receiver summary, no locator query/key: the scores are the prior z . w_b. Untrained (w_b = 0) every
    window holds the same mass and the message is the passage's first m tokens; a trained prior moves it."""
    cfg, s, r = _setup(conditioned=False)
    ps = model_params(s, 0)
    p = lcfx.init_lcfx(jax.random.key(0), cfg, s, r)
    assert "loc_wb" in p and not {"loc_wq", "loc_wk", "cond_w", "cond_b", "cond_norm"} & set(p)
    ids = np.random.RandomState(0).randint(3, 60, (2, 8))
    mask = np.ones((2, 8), bool)
    mask[1, :2] = False                                   # left padding: row 1's first token is slot 2
    s_cache = _cache(ps, s, ids, mask)
    z = lcfx.token_latents(p, s_cache, cfg=cfg, sharer_cfg=s, receiver_cfg=r)
    per_token = lcfx.token_messages(p, z, cfg=cfg)
    lat = lcfx.encode_message(p, s_cache, None, cfg=cfg, sharer_cfg=s, receiver_cfg=r)
    np.testing.assert_allclose(lat[0], per_token[0, :3], atol=1e-5)
    np.testing.assert_allclose(lat[1], per_token[1, 2:5], atol=1e-5)
    trained = {**p, "loc_wb": jax.random.normal(jax.random.key(3), p["loc_wb"].shape)}
    scores = lcfx.token_scores(trained, z, None, cfg=cfg)
    np.testing.assert_allclose(scores, z @ trained["loc_wb"], atol=1e-5)
    index, valid = lcfx.window_slots(scores, s_cache.mask, 3)
    moved = lcfx.encode_message(trained, s_cache, None, cfg=cfg, sharer_cfg=s, receiver_cfg=r)
    for i in range(2):
        np.testing.assert_allclose(moved[i], lcfx.token_messages(trained, z, cfg=cfg)[i, np.asarray(index[i])], atol=1e-5)


def test_window_pooling_is_validated():
    with pytest.raises(ValueError, match="no linear variant"):
        lcfx.LCFXConfig(pooling="window", linear=True, pool_heads=1)
    with pytest.raises(ValueError, match="pooling must be one of"):
        lcfx.LCFXConfig(pooling="mean", conditioned=True)
    cfg, s, r = _setup()
    names = set(lcfx.init_lcfx(jax.random.key(0), cfg, s, r))
    assert {"loc_wq", "loc_wk", "loc_wb"} <= names and not names & {"queries", "pool_wk", "cond_shift"}


def test_snapping_returns_the_nearest_input_vector_exactly():
    r = tiny("gemma3")
    pr = model_params(r, 1)
    ids = jnp.asarray([[5, 9, 33], [60, 2, 17]])
    exact = T.embed_tokens(pr, ids, config=r)
    noisy = exact + 0.05 * jax.random.normal(jax.random.key(0), exact.shape) * jnp.std(exact)
    for chunk in (4, 512):   # chunks that do not divide the 6 rows; a chunk larger than the rows
        got = lcfx.snap_to_vocabulary(noisy, pr, r, chunk=chunk)
        np.testing.assert_allclose(np.asarray(got), np.asarray(exact), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="snap needs decoder='embed'"):
        lcfx.LCFXConfig(snap=True)
