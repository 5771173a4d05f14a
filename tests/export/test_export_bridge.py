"""transformers models + exported adapters (PyTorch) give what lcf_jax gives, on tiny random HF models:
LCF-X through `answer_with_lcfx` (prefix slots in the DynamicCache, explicit positions), LCF and C2C through
`fuse_caches` + `generate_with_cache`. Both directions, a Gemma3 model (sliding window) on each side."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from export_helpers import left_pad, np_, perturbed

from lcf_jax.adapters import c2c, lcf, lcfx
from lcf_jax.adapters.export_jax import export_adapter
from lcf_jax.models import convert, generate, transformer
from lcf_jax.models.cache import KVCache
from lcf_jax.torch import (SlidingWindowMismatchError, answer_with_lcfx, fuse_caches, generate_with_cache,
                           lcfx_extra, load_adapter, prefill)

WINDOW = 24


def _hf(family: str, seed: int):
    from transformers import AutoModelForCausalLM, Gemma3TextConfig, LlamaConfig
    common = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_attention_heads=4, num_key_value_heads=2,
                  head_dim=16, max_position_embeddings=256, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    if family == "llama":
        cfg = LlamaConfig(**common, num_hidden_layers=3, tie_word_embeddings=False, rope_theta=10000.0)
    else:
        cfg = Gemma3TextConfig(**common, num_hidden_layers=4, sliding_window=WINDOW, query_pre_attn_scalar=24,
                               layer_types=["sliding_attention", "full_attention"] * 2)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    config, params = convert.from_hf_model(model, name=f"tiny-hf-{family}")
    return model, config, jax.tree.map(jnp.asarray, params)


@pytest.fixture(scope="module")
def models():
    return {"llama": _hf("llama", 0), "gemma3": _hf("gemma3", 1)}


def _rows(seed, lengths, vocab=128):
    rng = np.random.default_rng(seed)
    return [list(rng.integers(3, vocab, size=n)) for n in lengths]


def _jax_prefill(params, cfg, ids, mask, room=0):
    b, t = ids.shape
    cache = KVCache.empty(cfg, b, t + room)
    logits, cache = transformer.forward_jit(params, jnp.asarray(ids, jnp.int32),
                                            transformer.positions_from_mask(jnp.asarray(mask)), cache, config=cfg,
                                            token_mask=jnp.asarray(mask))
    return logits, cache


def _jax_new_tokens(gen, i):
    return [int(x) for x in np.asarray(gen.tokens[i, :int(gen.lengths[i])])]


def _hf_new_tokens(seqs, t, i, n):
    return [int(x) for x in np_(seqs[i, t:t + n])]


@pytest.mark.parametrize("direction", ["llama->gemma3", "gemma3->llama"])
@pytest.mark.parametrize("variant", ["plain", "conditioned", "linear"])
def test_answer_with_lcfx_matches_the_jax_pipeline(tmp_path, models, direction, variant):
    sname, rname = direction.split("->")
    s_hf, s_cfg, s_params = models[sname]
    r_hf, r_cfg, r_params = models[rname]
    conditioned = variant == "conditioned"
    cfg = lcfx.LCFXConfig(rank=16, slots=4, pool_heads=1 if variant == "linear" else 2, conditioned=conditioned,
                          value_gate_init=1.0, key_init_std=0.5, linear=variant == "linear")
    p = perturbed(lcfx.init_lcfx(jax.random.key(0), cfg, s_cfg, r_cfg), 3, 0.1)
    ad = load_adapter(export_adapter(tmp_path / "a", p, cfg, s_cfg, r_cfg), sharer_model=s_hf, receiver_model=r_hf)
    # sharer contexts longer than the window (the sharer's sliding layers must still see the right tokens)
    s_ids, s_mask = left_pad(_rows(1, [30, 19, 26]))
    q_ids, q_mask = left_pad(_rows(2, [7, 9, 4]))
    new = 6
    # JAX: prefill sharer, encode, decode, prefill + greedy decode with extra_kv
    _, s_cache = _jax_prefill(s_params, s_cfg, s_ids, s_mask)
    r_cache = _jax_prefill(r_params, r_cfg, q_ids, q_mask)[1] if conditioned else None
    lat = lcfx.encode_message(p, s_cache, r_cache, cfg=cfg, sharer_cfg=s_cfg, receiver_cfg=r_cfg)
    extra = lcfx.decode_message(p, lat, cfg=cfg, receiver_cfg=r_cfg)
    logits_j = transformer.forward_jit(r_params, jnp.asarray(q_ids, jnp.int32),
                                       transformer.positions_from_mask(jnp.asarray(q_mask)), config=r_cfg,
                                       token_mask=jnp.asarray(q_mask), extra_kv=extra)[0][:, -1]
    gen = generate.generate(r_params, jnp.asarray(q_ids, jnp.int32), jnp.asarray(q_mask), jax.random.PRNGKey(0),
                            config=r_cfg, max_new_tokens=new, extra_kv=extra)
    # torch
    lat_t, extra_t = lcfx_extra(s_hf, r_hf, ad, torch.from_numpy(s_ids), torch.from_numpy(q_ids),
                                sharer_attention_mask=torch.from_numpy(s_mask),
                                receiver_attention_mask=torch.from_numpy(q_mask))
    np.testing.assert_allclose(np_(lat_t), np.asarray(lat), atol=1e-4, rtol=0)
    np.testing.assert_allclose(np_(extra_t.keys), np.asarray(extra.keys), atol=1e-4, rtol=0)
    out = answer_with_lcfx(s_hf, r_hf, ad, torch.from_numpy(s_ids), torch.from_numpy(q_ids), new,
                           sharer_attention_mask=torch.from_numpy(s_mask),
                           receiver_attention_mask=torch.from_numpy(q_mask),
                           output_scores=True, return_dict_in_generate=True)
    t = q_ids.shape[1]
    assert np.array_equal(np_(out.sequences[:, :t]), q_ids)
    np.testing.assert_allclose(np_(out.scores[0]), np.asarray(logits_j), atol=2e-4, rtol=0)
    for i in range(len(q_ids)):
        want = _jax_new_tokens(gen, i)
        assert _hf_new_tokens(out.sequences, t, i, len(want)) == want, f"row {i}"
    # the slots matter: without them the first-token logits differ
    base = transformer.forward_jit(r_params, jnp.asarray(q_ids, jnp.int32),
                                   transformer.positions_from_mask(jnp.asarray(q_mask)), config=r_cfg,
                                   token_mask=jnp.asarray(q_mask))[0][:, -1]
    assert float(jnp.abs(base - logits_j).max()) > 1e-2


def test_masked_slots_leave_the_receiver_unchanged(tmp_path, models):
    s_hf, s_cfg, _ = models["llama"]
    r_hf, r_cfg, _ = models["gemma3"]
    cfg = lcfx.LCFXConfig(rank=16, slots=4, pool_heads=2, value_gate_init=1.0, key_init_std=0.5)
    ad = load_adapter(export_adapter(tmp_path / "a", lcfx.init_lcfx(jax.random.key(0), cfg, s_cfg, r_cfg), cfg,
                                     s_cfg, r_cfg))
    s_ids, q_ids = torch.tensor(_rows(1, [12])), torch.tensor(_rows(2, [6]))
    off = answer_with_lcfx(s_hf, r_hf, ad, s_ids, q_ids, 5, slot_mask=torch.zeros(1, 4, dtype=torch.bool))
    plain = r_hf.generate(q_ids, attention_mask=torch.ones_like(q_ids), max_new_tokens=5, do_sample=False,
                          eos_token_id=2, pad_token_id=0)
    assert torch.equal(off, plain)


def test_lcfx_up_to_the_sliding_window_matches_and_beyond_is_refused(tmp_path, models):
    s_hf, s_cfg, s_params = models["llama"]
    r_hf, r_cfg, r_params = models["gemma3"]
    cfg = lcfx.LCFXConfig(rank=16, slots=4, pool_heads=2, value_gate_init=1.0, key_init_std=0.5)
    p = perturbed(lcfx.init_lcfx(jax.random.key(0), cfg, s_cfg, r_cfg), 3, 0.1)
    ad = load_adapter(export_adapter(tmp_path / "a", p, cfg, s_cfg, r_cfg))
    s_ids, q_ids = np.asarray(_rows(1, [12])), np.asarray(_rows(2, [10]))
    with pytest.raises(SlidingWindowMismatchError, match=f"sliding window \\({WINDOW}\\)"):
        answer_with_lcfx(s_hf, r_hf, ad, torch.from_numpy(s_ids), torch.from_numpy(q_ids), WINDOW)
    # slots + prompt + new tokens == window: the last query still sees every slot, as in lcf_jax
    new = WINDOW - 4 - q_ids.shape[1]
    out = answer_with_lcfx(s_hf, r_hf, ad, torch.from_numpy(s_ids), torch.from_numpy(q_ids), new, eos_token_id=None)
    _, s_cache = _jax_prefill(s_params, s_cfg, s_ids, np.ones_like(s_ids, bool))
    extra = lcfx.decode_message(p, lcfx.encode_message(p, s_cache, cfg=cfg, sharer_cfg=s_cfg, receiver_cfg=r_cfg),
                                cfg=cfg, receiver_cfg=r_cfg)
    import dataclasses
    gen = generate.generate(r_params, jnp.asarray(q_ids, jnp.int32), jnp.ones(q_ids.shape, bool),
                            jax.random.PRNGKey(0), config=dataclasses.replace(r_cfg, eos_token_ids=()),
                            max_new_tokens=new, extra_kv=extra)
    assert out.shape[1] == q_ids.shape[1] + new
    assert _hf_new_tokens(out, q_ids.shape[1], 0, new) == _jax_new_tokens(gen, 0)


@pytest.mark.parametrize("kind", ["lcf", "c2c"])
@pytest.mark.parametrize("direction", ["llama->gemma3", "gemma3->llama"])
def test_fused_cache_generation_matches_the_jax_pipeline(tmp_path, models, kind, direction):
    from export_helpers import random_alignment
    sname, rname = direction.split("->")
    s_hf, s_cfg, s_params = models[sname]
    r_hf, r_cfg, r_params = models[rname]
    if kind == "lcf":
        cfg = lcf.LCFConfig(rank=8, backend="reference")
        p = perturbed(lcf.init_lcf(jax.random.key(0), cfg, s_cfg, r_cfg), 4, 0.1)
    else:
        cfg = c2c.C2CConfig(hidden_dim=32, intermediate_dim=24, num_layers=3)
        p = perturbed(c2c.init_c2c(jax.random.key(0), cfg, s_cfg, r_cfg), 4, 0.02)
        p["key"]["gate_logit"] = jnp.ones_like(p["key"]["gate_logit"])
        p["value"]["gate_logit"] = jnp.ones_like(p["value"]["gate_logit"])
    ad = load_adapter(export_adapter(tmp_path / "a", p, cfg, s_cfg, r_cfg))
    s_ids, s_mask = left_pad(_rows(5, [14, 11]))
    c_ids, c_mask = left_pad(_rows(6, [12, 9]))           # the receiver's tokenisation of the same context
    q_ids, q_mask = left_pad(_rows(7, [3, 5]))
    new = 5
    _, s_cache = _jax_prefill(s_params, s_cfg, s_ids, s_mask)
    _, r_cache = _jax_prefill(r_params, r_cfg, c_ids, c_mask, room=q_ids.shape[1] + new)
    al = random_alignment(s_cache.mask, r_cache.mask, 8, drop=0.0)
    apply = lcf.apply_lcf if kind == "lcf" else c2c.apply_c2c
    fused = apply(p, s_cache, r_cache, al, cfg=cfg, sharer_cfg=s_cfg, receiver_cfg=r_cfg)
    gen = generate.generate(r_params, jnp.asarray(q_ids, jnp.int32), jnp.asarray(q_mask), jax.random.PRNGKey(0),
                            config=r_cfg, max_new_tokens=new, cache=fused)
    # torch
    s_kv, _ = prefill(s_hf, torch.from_numpy(s_ids), torch.from_numpy(s_mask))
    r_kv, _ = prefill(r_hf, torch.from_numpy(c_ids), torch.from_numpy(c_mask))
    t_ctx = c_ids.shape[1]
    al_t = torch.from_numpy(np.asarray(al)[:, :t_ctx].astype(np.int64))
    keys, _ = ad(s_kv, r_kv, al_t)
    real = c_mask[None, :, None, :, None]          # padding slots hold implementation-specific junk
    np.testing.assert_allclose(np.where(real, np_(keys), 0), np.where(real, np.asarray(fused.keys)[:, :, :, :t_ctx], 0),
                               atol=1e-4, rtol=0)
    cache = fuse_caches(ad, s_kv, r_kv, al_t, r_hf.config)
    out = generate_with_cache(r_hf, cache, torch.from_numpy(c_mask), torch.from_numpy(q_ids),
                              torch.from_numpy(q_mask), start_positions=torch.from_numpy(c_mask.sum(-1)),
                              max_new_tokens=new, do_sample=False, eos_token_id=2, pad_token_id=0)
    t = q_ids.shape[1]
    for i in range(len(q_ids)):
        want = _jax_new_tokens(gen, i)
        assert _hf_new_tokens(out, t, i, len(want)) == want, f"row {i}"


@pytest.mark.parametrize("direction", ["llama->gemma3", "gemma3->llama"])
@pytest.mark.parametrize("decoder,pooling,snap,conditioned", [
    ("embed", "attention", False, True), ("kv", "attention", False, True), ("embed", "window", False, True),
    ("kv", "window", False, True), ("embed", "window", True, True), ("embed", "window", True, False)])
def test_positioned_message_matches_the_jax_pipeline(tmp_path, models, direction, decoder, pooling, snap, conditioned):
    """The positioned message ([BOS | slots | prompt]) is a plain transformers cache: same first-token
    logits and greedy tokens as lcf_jax's `message_prefix` + `generate(cache=...)`. The third sharer row
    is shorter than the message, so window pooling leaves its last slot empty."""
    sname, rname = direction.split("->")
    s_hf, s_cfg, s_params = models[sname]
    r_hf, r_cfg, r_params = models[rname]
    cfg = lcfx.LCFXConfig(rank=16, slots=4, pool_heads=2, conditioned=conditioned, value_gate_init=1.0,
                          key_init_std=0.5, injection="positioned", decoder=decoder, embed_hidden=24, pooling=pooling,
                          locator_rank=8, snap=snap)
    p = perturbed(lcfx.calibrate_embed_decoder(lcfx.init_lcfx(jax.random.key(0), cfg, s_cfg, r_cfg), r_params,
                                               cfg=cfg, receiver_cfg=r_cfg), 3, 0.1)
    ad = load_adapter(export_adapter(tmp_path / "a", p, cfg, s_cfg, r_cfg), sharer_model=s_hf, receiver_model=r_hf)
    s_ids, s_mask = left_pad(_rows(1, [30, 19, 3]))
    q_ids, q_mask = left_pad(_rows(2, [7, 9, 4]))
    bos = np.ones((3, 1), np.int64)
    new = 6
    _, s_cache = _jax_prefill(s_params, s_cfg, s_ids, s_mask)
    full_ids, full_mask = np.concatenate([bos, q_ids], 1), np.concatenate([np.ones((3, 1), bool), q_mask], 1)
    r_cache = _jax_prefill(r_params, r_cfg, full_ids, full_mask)[1]
    lat = lcfx.encode_message(p, s_cache, r_cache, cfg=cfg, sharer_cfg=s_cfg, receiver_cfg=r_cfg)
    t = q_ids.shape[1]
    prefix = lcfx.message_prefix(p, lat, r_params, jnp.asarray(bos, jnp.int32), capacity=1 + 4 + t + new, cfg=cfg,
                                 receiver_cfg=r_cfg)
    gen = generate.generate(r_params, jnp.asarray(q_ids, jnp.int32), jnp.asarray(q_mask), jax.random.PRNGKey(0),
                            config=r_cfg, max_new_tokens=new, cache=prefix)
    start = jnp.max(jnp.where(prefix.mask, prefix.positions + 1, 0), axis=-1)[:, None]   # after the valid slots
    assert np.asarray(start)[:, 0].tolist() == ([5, 5, 4] if pooling == "window" else [5, 5, 5])
    first = transformer.forward_jit(r_params, jnp.asarray(q_ids, jnp.int32),
                                    transformer.positions_from_mask(jnp.asarray(q_mask)) + start, prefix, config=r_cfg,
                                    token_mask=jnp.asarray(q_mask))[0][:, -1]
    out = answer_with_lcfx(s_hf, r_hf, ad, torch.from_numpy(s_ids), torch.from_numpy(q_ids), new,
                           sharer_attention_mask=torch.from_numpy(s_mask), receiver_attention_mask=torch.from_numpy(q_mask),
                           prefix_ids=torch.from_numpy(bos), output_scores=True, return_dict_in_generate=True)
    np.testing.assert_allclose(np_(out.scores[0]), np.asarray(first), atol=2e-4, rtol=0)
    for i in range(len(q_ids)):
        want = _jax_new_tokens(gen, i)
        assert _hf_new_tokens(out.sequences, t, i, len(want)) == want, f"row {i}"
