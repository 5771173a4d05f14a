"""Hugging Face <-> lcf_jax weights: one name table per family, used in both directions.

Sources: an in-memory transformers model, a Hugging Face directory of safetensors, or a GGUF file
(transformers dequantizes it). Converted weights are cached as one safetensors file in our own
layout so the second load is a file read.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from lcf_jax.fileio import atomic_write_dir
from lcf_jax.models.config import ModelConfig
from lcf_jax.models.transformer import check_params, param_shapes

# Transform kinds between a Hugging Face tensor and ours (ours on the right):
#   copy        same shape
#   linear      [out, in]        -> [in, out]
#   heads_in    [H*hd, D]        -> [D, H, hd]       (q/k/v projections)
#   heads_out   [D, H*hd]        -> [H, hd, D]       (o projection)
#   bias_heads  [H*hd]           -> [H, hd]
_LAYER = "model.layers.{i}."


def weight_table(config: ModelConfig) -> list[tuple[str, str, str]]:
    """(our path, Hugging Face name, transform) for every weight of `config`'s family.

    Our paths are '/'-joined keys of the params dict; per-layer entries have '{i}' in the HF name
    and map to one slice of our stacked array.
    """
    f = config.family
    t = [("embed", "model.embed_tokens.weight", "copy"), ("final_norm", "model.norm.weight", "copy")]
    if not config.tie_embeddings:
        t.append(("lm_head", "lm_head.weight", "linear"))
    a, m = _LAYER + "self_attn.", _LAYER + "mlp."
    t += [
        ("layers/attn_norm", _LAYER + "input_layernorm.weight", "copy"),
        ("layers/q", a + "q_proj.weight", "heads_in"), ("layers/k", a + "k_proj.weight", "heads_in"),
        ("layers/v", a + "v_proj.weight", "heads_in"), ("layers/o", a + "o_proj.weight", "heads_out"),
        ("layers/gate", m + "gate_proj.weight", "linear"), ("layers/up", m + "up_proj.weight", "linear"),
        ("layers/down", m + "down_proj.weight", "linear"),
    ]
    if f in ("llama", "qwen2", "qwen3"):
        t.append(("layers/mlp_norm", _LAYER + "post_attention_layernorm.weight", "copy"))
    elif f == "gemma3":
        t += [("layers/post_attn_norm", _LAYER + "post_attention_layernorm.weight", "copy"),
              ("layers/mlp_norm", _LAYER + "pre_feedforward_layernorm.weight", "copy"),
              ("layers/post_mlp_norm", _LAYER + "post_feedforward_layernorm.weight", "copy")]
    else:
        raise ValueError(f"no weight table for family {f!r}")
    if config.qkv_bias:
        t += [("layers/q_bias", a + "q_proj.bias", "bias_heads"), ("layers/k_bias", a + "k_proj.bias", "bias_heads"),
              ("layers/v_bias", a + "v_proj.bias", "bias_heads")]
    if config.qk_norm:
        t += [("layers/q_norm", a + "q_norm.weight", "copy"), ("layers/k_norm", a + "k_norm.weight", "copy")]
    return t


def _to_ours(w: np.ndarray, kind: str, shape: tuple[int, ...]) -> np.ndarray:
    if kind in ("linear", "heads_in", "heads_out"):
        w = w.T
    return np.ascontiguousarray(w.reshape(shape))


def _to_hf(w: np.ndarray, kind: str) -> np.ndarray:
    if kind == "linear":
        return np.ascontiguousarray(w.T)
    if kind == "heads_in":
        return np.ascontiguousarray(w.reshape(w.shape[0], -1).T)
    if kind == "heads_out":
        return np.ascontiguousarray(w.reshape(-1, w.shape[-1]).T)
    if kind == "bias_heads":
        return w.reshape(-1)
    return w


def _get(tree: dict, path: str):
    for k in path.split("/"):
        tree = tree[k]
    return tree


def _set(tree: dict, path: str, value) -> None:
    *head, last = path.split("/")
    for k in head:
        tree = tree.setdefault(k, {})
    tree[last] = value


def _as_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor, without importing torch here
        x = x.detach().float().cpu().numpy() if str(x.dtype) == "torch.bfloat16" else x.detach().cpu().numpy()
    return np.asarray(x)


def params_from_state_dict(state_dict: Mapping[str, Any], config: ModelConfig, dtype=np.float32) -> dict:
    """Our params pytree (numpy) from Hugging Face tensor names. Raises naming the first missing weight."""
    shapes = param_shapes(config)
    params: dict = {}
    for ours, hf, kind in weight_table(config):
        shape = _get(shapes, ours)
        if "{i}" in hf:
            slices = []
            for i in range(config.num_layers):
                name = hf.format(i=i)
                if name not in state_dict:
                    raise KeyError(f"Hugging Face weight {name!r} (for {ours}) is missing from the state dict")
                slices.append(_to_ours(_as_numpy(state_dict[name]).astype(dtype), kind, shape[1:]))
            _set(params, ours, np.stack(slices))
        else:
            if hf not in state_dict:
                if hf == "lm_head.weight":
                    raise KeyError("lm_head.weight is missing but the config says embeddings are not tied")
                raise KeyError(f"Hugging Face weight {hf!r} (for {ours}) is missing from the state dict")
            _set(params, ours, _to_ours(_as_numpy(state_dict[hf]).astype(dtype), kind, shape))
    check_params(params, config)
    return params


def params_to_state_dict(params: dict, config: ModelConfig) -> dict[str, np.ndarray]:
    """Inverse of `params_from_state_dict` (export back to Hugging Face names)."""
    check_params(params, config)
    out = {}
    for ours, hf, kind in weight_table(config):
        w = np.asarray(_get(params, ours))
        if "{i}" in hf:
            for i in range(config.num_layers):
                out[hf.format(i=i)] = _to_hf(w[i], kind)
        else:
            out[hf] = _to_hf(w, kind)
    if config.tie_embeddings:
        out["lm_head.weight"] = out["model.embed_tokens.weight"]
    return out


def from_hf_model(model, name: str = "") -> tuple[ModelConfig, dict]:
    """(config, params) from an in-memory transformers causal LM."""
    config = ModelConfig.from_hf_config(model.config, name=name)
    return config, params_from_state_dict(model.state_dict(), config)


def from_hf_dir(path: str | os.PathLike, name: str = "") -> tuple[ModelConfig, dict]:
    """(config, params) from a Hugging Face directory holding config.json and *.safetensors."""
    from safetensors.numpy import load_file

    path = Path(path)
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"{path} has no config.json: is it a Hugging Face model directory?")
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{path} holds no *.safetensors files")
    config = ModelConfig.from_hf_config(json.loads((path / "config.json").read_text()), name=name)
    state = {}
    for f in files:
        state.update(load_file(str(f)))
    return config, params_from_state_dict(state, config)


def load_gguf_model(gguf_path: str | os.PathLike):
    """Dequantized transformers model from a GGUF file (needs the `gguf` and `accelerate` packages)."""
    from transformers import AutoModelForCausalLM

    gguf_path = Path(gguf_path)
    if not gguf_path.exists():
        raise FileNotFoundError(f"GGUF file {gguf_path} does not exist")
    return AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name,
                                                dtype="float32")


def from_gguf(gguf_path: str | os.PathLike, name: str = "") -> tuple[ModelConfig, dict]:
    return from_hf_model(load_gguf_model(gguf_path), name=name)


# -- cache of converted weights -------------------------------------------------------------------
def _flatten(tree: dict, prefix: str = "") -> dict[str, np.ndarray]:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = np.asarray(v)
    return out


def _unflatten(flat: Mapping[str, np.ndarray]) -> dict:
    tree: dict = {}
    for k, v in flat.items():
        _set(tree, k, v)
    return tree


def save_converted(directory: str | os.PathLike, config: ModelConfig, params: dict) -> None:
    from safetensors.numpy import save_file

    check_params(params, config)

    def write(tmp: Path):
        save_file(_flatten(params), str(tmp / "params.safetensors"))
        (tmp / "config.json").write_text(json.dumps(config.to_dict(), indent=1))

    atomic_write_dir(Path(directory), write)


def load_converted(directory: str | os.PathLike) -> tuple[ModelConfig, dict]:
    from safetensors.numpy import load_file

    directory = Path(directory)
    config = ModelConfig.from_dict(json.loads((directory / "config.json").read_text()))
    params = _unflatten(load_file(str(directory / "params.safetensors")))
    check_params(params, config)
    return config, params
