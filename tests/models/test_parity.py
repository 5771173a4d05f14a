"""Parity of the JAX ports with transformers PyTorch (float32) on tiny random models of each family."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from lcf_jax.models import convert, generate, transformer
from tests.models.hf_tiny import FAMILIES, tiny_hf_model

TOL = 1e-4


@pytest.fixture(scope="module", params=FAMILIES)
def pair(request):
    hf = tiny_hf_model(request.param)
    config, params = convert.from_hf_model(hf)
    return hf, config, jax.tree.map(jnp.asarray, params)


def _tokens(b, t, seed=0):
    return np.random.RandomState(seed).randint(3, 128, (b, t)).astype(np.int32)


def test_logits_and_every_layer_kv_match(pair):
    hf, config, params = pair
    toks = _tokens(2, 20)
    with torch.no_grad():
        out = hf(torch.tensor(toks, dtype=torch.long), use_cache=True)
    pos = jnp.broadcast_to(jnp.arange(20), (2, 20))
    logits, cache = transformer.forward_jit(params, jnp.asarray(toks), pos, config=config)
    np.testing.assert_allclose(np.asarray(logits), out.logits.numpy(), atol=TOL, rtol=0)
    for i, layer in enumerate(out.past_key_values.layers):
        kept = layer.keys.shape[2]  # Gemma3's sliding layers keep only the last window-1 tokens
        np.testing.assert_allclose(np.asarray(cache.keys[i])[:, :, -kept:], layer.keys.numpy(), atol=TOL, rtol=0)
        np.testing.assert_allclose(np.asarray(cache.values[i])[:, :, -kept:], layer.values.numpy(), atol=TOL, rtol=0)


def test_cached_decode_equals_full_forward(pair):
    _, config, params = pair
    toks = jnp.asarray(_tokens(2, 20, seed=1))
    pos = jnp.broadcast_to(jnp.arange(20), (2, 20))
    full, _ = transformer.forward_jit(params, toks, pos, config=config)
    from lcf_jax.models.cache import KVCache
    cache = KVCache.empty(config, 2, 20)
    logits, cache = transformer.forward_jit(params, toks[:, :12], pos[:, :12], cache, config=config)
    steps = [logits]
    for i in range(12, 20):
        logits, cache = transformer.forward_jit(params, toks[:, i:i + 1], pos[:, i:i + 1], cache, config=config)
        steps.append(logits)
    np.testing.assert_allclose(np.asarray(jnp.concatenate(steps, axis=1)), np.asarray(full), atol=TOL, rtol=0)


def test_twenty_greedy_tokens_identical(pair):
    hf, config, params = pair
    prompt = _tokens(1, 9, seed=2)
    with torch.no_grad():
        ref = hf.generate(torch.tensor(prompt, dtype=torch.long), attention_mask=torch.ones_like(torch.tensor(prompt)),
                          max_new_tokens=20, do_sample=False, eos_token_id=None, pad_token_id=0)
    ref = ref[0, 9:].numpy()
    ours = generate.generate(params, jnp.asarray(prompt), jnp.ones((1, 9), bool), jax.random.PRNGKey(0),
                             config=_no_eos(config),
                             max_new_tokens=20)
    np.testing.assert_array_equal(np.asarray(ours.tokens[0]), ref)


def _no_eos(config):
    import dataclasses
    return dataclasses.replace(config, eos_token_ids=())


def test_padded_batch_equals_rows_alone(pair):
    _, config, params = pair
    rows = [list(_tokens(1, 7, seed=3)[0]), list(_tokens(1, 13, seed=4)[0])]
    tokens, mask = generate.pad_batch(rows, config.pad_token_id)
    batch = generate.generate(params, jnp.asarray(tokens), jnp.asarray(mask), jax.random.PRNGKey(0),
                              config=_no_eos(config), max_new_tokens=6)
    for i, r in enumerate(rows):
        alone = generate.generate(params, jnp.asarray([r]), jnp.ones((1, len(r)), bool), jax.random.PRNGKey(0),
                                  config=_no_eos(config), max_new_tokens=6)
        np.testing.assert_array_equal(np.asarray(batch.tokens[i]), np.asarray(alone.tokens[0]))
    # Logits too, not only argmaxes: the last prompt position of each row.
    logits, _ = transformer.prefill(params, jnp.asarray(tokens), jnp.asarray(mask),
                                    __import__("lcf_jax.models.cache", fromlist=["KVCache"]).KVCache.empty(config, 2, tokens.shape[1]),
                                    config=config)
    for i, r in enumerate(rows):
        full, _ = transformer.forward_jit(params, jnp.asarray([r]), jnp.arange(len(r))[None], config=config)
        np.testing.assert_allclose(np.asarray(logits[i]), np.asarray(full[0, -1]), atol=TOL, rtol=0)


def test_generation_stops_at_eos(pair):
    _, config, params = pair
    prompt = jnp.asarray(_tokens(1, 5, seed=5))
    free = generate.generate(params, prompt, jnp.ones((1, 5), bool), jax.random.PRNGKey(0),
                             config=_no_eos(config), max_new_tokens=8)
    import dataclasses
    stop_tok = int(free.tokens[0, 2])
    stopped = generate.generate(params, prompt, jnp.ones((1, 5), bool), jax.random.PRNGKey(0),
                                config=dataclasses.replace(config, eos_token_ids=(stop_tok,)), max_new_tokens=8)
    first = int(np.argmax(np.asarray(free.tokens[0]) == stop_tok))
    assert int(stopped.lengths[0]) == first + 1
    assert np.all(np.asarray(stopped.tokens[0, first + 1:]) == config.pad_token_id)


def test_sampling_is_seeded_and_differs_from_greedy(pair):
    _, config, params = pair
    prompt = jnp.asarray(_tokens(1, 5, seed=6))
    kw = dict(config=_no_eos(config), max_new_tokens=12, temperature=5.0)
    a = generate.generate(params, prompt, jnp.ones((1, 5), bool), jax.random.PRNGKey(1), **kw)
    b = generate.generate(params, prompt, jnp.ones((1, 5), bool), jax.random.PRNGKey(1), **kw)
    c = generate.generate(params, prompt, jnp.ones((1, 5), bool), jax.random.PRNGKey(2), **kw)
    np.testing.assert_array_equal(np.asarray(a.tokens), np.asarray(b.tokens))
    assert not np.array_equal(np.asarray(a.tokens), np.asarray(c.tokens))
