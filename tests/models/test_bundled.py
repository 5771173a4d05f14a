"""The two bundled pretrained models against transformers PyTorch on a real 64-token prompt."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from lcf_jax.models import generate, registry, transformer

pytestmark = pytest.mark.real_models
TEXT = ("The Amazon rainforest covers much of the Amazon basin of South America. The basin spans nine nations, "
        "and the majority of the forest lies within Brazil, followed by Peru and Colombia. It represents over "
        "half of the planet's remaining rainforests and is the largest and most biodiverse tract of tropical "
        "rainforest in the world, with an estimated 390 billion individual trees.")


@pytest.fixture(scope="module", params=sorted(registry.BUNDLED))
def bundled(request):
    name = request.param
    config, params = registry.load_model(name)
    return name, config, jax.tree.map(jnp.asarray, params), registry.load_hf_model(name), registry.load_tokenizer(name)


def test_preset_config_matches_the_weights(bundled):
    name, config, *_ = bundled
    assert registry.PRESET_CONFIGS[name] == config


def test_logits_and_greedy_tokens_match_transformers(bundled):
    name, config, params, hf, tok = bundled
    ids = tok(TEXT)["input_ids"][:64]
    assert len(ids) == 64
    x = torch.tensor([ids])
    with torch.no_grad():
        ref_logits = hf(x).logits.numpy()
        ref = hf.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=20, do_sample=False,
                          eos_token_id=None, pad_token_id=config.pad_token_id)[0, 64:].numpy()
    logits, _ = transformer.forward_jit(params, jnp.asarray([ids]), jnp.arange(64)[None], config=config)
    diff = float(np.abs(np.asarray(logits) - ref_logits).max())
    assert diff <= 2e-3, f"{name}: logits differ by {diff}"
    import dataclasses
    ours = generate.generate(params, jnp.asarray([ids]), jnp.ones((1, 64), bool), jax.random.PRNGKey(0),
                             config=dataclasses.replace(config, eos_token_ids=()), max_new_tokens=20)
    np.testing.assert_array_equal(np.asarray(ours.tokens[0]), ref)


def test_second_load_reads_the_cache_without_converting_again(bundled, monkeypatch):
    name = bundled[0]
    cached = registry.converted_dir(name) / "params.safetensors"
    before = cached.stat().st_mtime_ns

    def no_conversion(*a, **k):
        raise AssertionError("the converted cache was not used")
    monkeypatch.setattr(registry, "load_hf_model", no_conversion)
    config, params = registry.load_model(name)
    assert config.name == name and params and cached.stat().st_mtime_ns == before
