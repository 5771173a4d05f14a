"""LCF-X latent-alignment pre-training (stage 1) on tiny models with local offset tokenizers."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lcf_jax.adapters import lcfx
from lcf_jax.adapters.align import tokenize_pair
from lcf_jax.models import registry
from lcf_jax.models.cache import KVCache
from lcf_jax.train import config as config_lib
from lcf_jax.train import latent_align, loop, run_setup
from lcf_jax.train.objective import Setup
from tests.offset_tok import OffsetTok

TEXTS = ["The 3 cats sat on 12 mats.", "Ünïcode  spaces\tand digits 2026 here", "a b c d e f g h i j k l m"]


def _setup(**kw):
    s, r = registry.TINY_CONFIGS["tiny-llama"], registry.TINY_CONFIGS["tiny-gemma3"]
    cfg = lcfx.LCFXConfig(**{"rank": 16, "slots": 4, "pool_heads": 2, **kw})
    return Setup("lcfx", cfg, s, r), (registry.load_any("tiny-llama")[1], registry.load_any("tiny-gemma3")[1])


def test_tokenize_pair_cuts_both_sides_at_the_same_character():
    text = "one two three four five six"
    # sharer: BOS + 2-character chunks, cut after 4 chunks = "one two " -> receiver words "one", " two"
    s_ids, r_ids, align, weight = tokenize_pair(text, OffsetTok("chars"), OffsetTok("words"), max_len=5)
    assert len(s_ids) == 5 and len(r_ids) == 2
    assert align.tolist() == [2, 4] and weight.all()   # last sharer chunk overlapping each word
    # the other way round the receiver's BOS has no counterpart and is not regressed
    s_ids, r_ids, align, weight = tokenize_pair(text, OffsetTok("words"), OffsetTok("chars"), max_len=3)
    assert len(s_ids) == 3 and not weight[0] and weight[1:].all()
    assert align.tolist() == [0, 0, 1]   # BOS -> first token; "on", "e " -> "one", " two"


def test_passage_batches_map_each_receiver_slot_to_the_sharer_slot_covering_it():
    s_tok, r_tok = OffsetTok("words"), OffsetTok("chars")
    feed = latent_align.PassagePairs(TEXTS + TEXTS[:1], s_tok, r_tok, max_len=24, batch_size=2, seed=1)
    assert len(feed.passages) == 3             # duplicates dropped
    b = next(feed)
    L = 24
    for i in range(2):
        s_slots = np.nonzero(b.sharer.mask[i])[0]
        r_slots = np.nonzero(b.receiver_mask[i])[0]
        assert s_slots[-1] == r_slots[-1] == L - 1           # left-padded
        al = b.alignment[i]
        assert (al[b.receiver_mask[i]] >= s_slots[0]).all() and (al[~b.receiver_mask[i]] == -1).all()
        assert b.sharer.positions[i, s_slots[0]] == 0
    state = feed.state()
    again = next(feed)
    feed.restore(state)
    np.testing.assert_array_equal(next(feed).receiver_ids, again.receiver_ids)


def test_token_messages_are_the_slot_latents_of_one_hot_pooling():
    setup, (ps, pr) = _setup()
    p = lcfx.init_lcfx(jax.random.key(0), setup.adapter, setup.sharer, setup.receiver)
    L, Hs, Ds = setup.sharer.num_layers, setup.sharer.num_kv_heads, setup.sharer.head_dim
    key = jax.random.key(1)
    mask = jnp.zeros((2, 5), bool).at[:, 3].set(True)   # one valid token: every slot attends only to it
    cache = KVCache(keys=jax.random.normal(key, (L, 2, Hs, 5, Ds)),
                    values=jax.random.normal(jax.random.fold_in(key, 1), (L, 2, Hs, 5, Ds)),
                    positions=jnp.broadcast_to(jnp.arange(5), (2, 5)), mask=mask, index=jnp.asarray(5))
    kw = dict(cfg=setup.adapter, sharer_cfg=setup.sharer, receiver_cfg=setup.receiver)
    lat = lcfx.encode_message(p, cache, **kw)
    tok = lcfx.token_messages(p, lcfx.token_latents(p, cache, **kw), cfg=setup.adapter)
    np.testing.assert_allclose(lat, jnp.broadcast_to(tok[:, 3:4], lat.shape), rtol=1e-5, atol=1e-5)


def test_pretraining_lowers_the_alignment_error_and_trains_only_the_translation_path():
    setup, frozen = _setup()
    frozen = jax.tree.map(jnp.asarray, frozen)
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho".split()
    rng = np.random.RandomState(0)
    passages = [" ".join(rng.choice(words, 12)) for _ in range(40)]
    p0 = latent_align.start_params(lcfx.init_lcfx(jax.random.key(0), setup.adapter, setup.sharer, setup.receiver))

    def feed():
        return latent_align.PassagePairs(passages, OffsetTok("words"), OffsetTok("chars"), max_len=32, batch_size=4)
    before = latent_align.evaluate_alignment(p0, frozen, feed(), setup, n_batches=3)
    rows = []
    p1 = latent_align.pretrain(p0, frozen, feed(), setup, steps=60, lr=1e-2, log=lambda s, m: rows.append(m),
                               log_every=20)
    after = latent_align.evaluate_alignment(p1, frozen, feed(), setup, n_batches=3)
    assert len(rows) == 3 and before["tokens"] > 0
    assert after["loss"] < 0.7 * before["loss"], (before, after)
    for k in p0:
        changed = not np.array_equal(np.asarray(p0[k]), np.asarray(p1[k]))
        assert changed == (k in latent_align.TRAINED_KEYS), k


def _cfg(tmp_path, *extra):
    return config_lib.parse_argv(["--config=configs/tiny.py", f"--config.train.workdir={tmp_path / 'run'}",
                                  "--config.train.async_checkpoint=False", *extra])


def test_pretraining_needs_qa_passages_and_an_lcfx_adapter(tmp_path):
    with pytest.raises(ValueError, match="data.task='qa'"):
        loop.train(_cfg(tmp_path, "--config.pretrain.steps=2"))
    with pytest.raises(ValueError, match="LCF-X latent-alignment"):
        loop.train(_cfg(tmp_path, "--config.pretrain.steps=2", "--config.adapter.kind='lcf'"))


def test_a_run_starts_from_an_exported_adapter_and_rejects_another_shape(tmp_path):
    from lcf_jax.adapters.export_jax import export_adapter
    cfg = _cfg(tmp_path, "--config.train.steps=1")
    b = run_setup.build(cfg)
    setup = b.setup
    start = jax.tree.map(lambda x: x + 0.5, b.params)
    export_adapter(tmp_path / "start", start, setup.adapter, setup.sharer, setup.receiver)
    got, phases = run_setup.starting_point(_cfg(tmp_path, f"--config.train.init_adapter='{tmp_path / 'start'}'"), b,
                                           None, None)
    assert phases == []   # an exported adapter is the starting point: no pre-training
    jax.tree.map(lambda a, e: np.testing.assert_array_equal(np.asarray(a), np.asarray(e)), got, start)
    with pytest.raises(ValueError, match="set config.adapter"):
        run_setup.starting_point(_cfg(tmp_path, f"--config.train.init_adapter='{tmp_path / 'start'}'",
                                 "--config.adapter.lcfx.rank=32"), b, None, None)


def test_tokenize_pair_keeping_the_end_cuts_at_a_token_boundary_and_keeps_the_bos():
    text = "one two three four five six"
    s_ids, r_ids, align, weight = tokenize_pair(text, OffsetTok("words"), OffsetTok("chars"), max_len=3, keep="end")
    assert s_ids == OffsetTok("words")(text)["input_ids"][-2:]     # " five", " six"
    full = OffsetTok("chars")(" five six", return_offsets_mapping=True)
    assert r_ids == [1] + full["input_ids"][-2:]                    # BOS kept, then the last chunks "si", "x"
    assert weight.tolist() == [False, True, True] and align.tolist() == [0, 1, 1]


def test_closed_form_fit_is_what_the_adapter_computes_and_beats_the_mean():
    setup, frozen = _setup(linear=True, pool_heads=1)
    frozen = jax.tree.map(jnp.asarray, frozen)
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho".split()
    rng = np.random.RandomState(0)
    passages = [" ".join(rng.choice(words, 12)) for _ in range(40)]

    def feed():
        return latent_align.PassagePairs(passages, OffsetTok("words"), OffsetTok("chars"), max_len=32, batch_size=4)
    x, y = latent_align.collect_pairs(frozen, feed(), setup, n_batches=8)
    p0 = lcfx.init_lcfx(jax.random.key(0), setup.adapter, setup.sharer, setup.receiver)
    p1, report = latent_align.fit_closed_form(p0, x, y, setup, target_dims=64)
    k, v = report["heldout_rel_err_kv"]
    k0, v0 = report["heldout_rel_err_kv_of_the_mean"]
    assert k < k0 and v < v0, report
    # the adapter's own forward (per-token latents -> one-token slots -> decoder) gives the fitted map
    batch = jax.tree.map(jnp.asarray, next(feed()))
    kw = dict(cfg=setup.adapter, sharer_cfg=setup.sharer, receiver_cfg=setup.receiver)
    from lcf_jax.train import objective
    z = lcfx.token_latents(p1, objective.sharer_cache(frozen[0], batch.sharer, setup), **kw)
    lat = jnp.take_along_axis(lcfx.token_messages(p1, z, cfg=setup.adapter), jnp.maximum(batch.alignment, 0)[..., None], 1)
    kk, vv = lcfx.decode_layers(p1, lat, cfg=setup.adapter, receiver_cfg=setup.receiver)   # [n, B, H, T, D]
    n, b, h, t, d = kk.shape
    pred = jnp.concatenate([kk.transpose(1, 3, 0, 2, 4).reshape(b, t, n, h * d),
                            vv.transpose(1, 3, 0, 2, 4).reshape(b, t, n, h * d)], -1).reshape(b, t, -1)
    w = np.asarray(batch.align_weight & (batch.alignment >= 0) & batch.receiver_mask)
    a = np.asarray(p1["enc_w"]).reshape(-1, setup.adapter.rank)
    want = (x[: w.sum()] @ a + np.asarray(p1["enc_b"])) @ np.concatenate(
        [np.concatenate([np.asarray(p1["dec_wk"][i]), np.asarray(p1["dec_wv"][i])], -1) for i in range(n)], -1) + \
        np.concatenate([np.concatenate([np.asarray(p1["dec_bk"][i]), np.asarray(p1["dec_bv"][i])]) for i in range(n)])
    np.testing.assert_allclose(np.asarray(pred)[w], want, rtol=1e-3, atol=1e-3)


def test_closed_form_needs_the_linear_latent_path():
    setup, frozen = _setup()
    p0 = lcfx.init_lcfx(jax.random.key(0), setup.adapter, setup.sharer, setup.receiver)
    with pytest.raises(ValueError, match="linear=True"):
        latent_align.fit_closed_form(p0, np.zeros((10, 4)), np.zeros((10, 4)), setup)
