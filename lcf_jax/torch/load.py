"""Loading an exported adapter into PyTorch: reads adapter.json (JSON) and adapter.safetensors (safetensors)
and nothing else, never pickle. Checks the format version, every tensor's name and shape against what the
config implies, and (when models are given) the models' architecture hashes.
"""
from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any, Optional, Union

import torch

from lcf_jax.adapters import export_format as F
from lcf_jax.adapters.export_format import (AdapterFormatError, ConfigHashMismatchError, FormatVersionError,
                                            TensorMismatchError)
from lcf_jax.models.config import ModelConfig
from lcf_jax.adapters.specs import SPECS
from lcf_jax.torch.c2c import C2CAdapter
from lcf_jax.torch.lcf import LCFAdapter
from lcf_jax.torch.lcfx import LCFXAdapter

Adapter = Union[LCFAdapter, LCFXAdapter, C2CAdapter]


def adapter_class(kind: str) -> type:
    """The PyTorch half of a registered kind (its spec's TORCH_HALF, "module:Class")."""
    spec = SPECS.get(kind)
    if spec is None or not getattr(spec, "TORCH_HALF", None):
        raise F.AdapterFormatError(f"adapter kind {kind!r} has no PyTorch half (kinds with one: "
                                   f"{sorted(k for k, s in SPECS.items() if getattr(s, 'TORCH_HALF', None))})")
    module, name = spec.TORCH_HALF.split(":")
    return getattr(importlib.import_module(module), name)

__all__ = ["Adapter", "adapter_class", "AdapterFormatError", "ConfigHashMismatchError", "FormatVersionError",
           "TensorMismatchError", "build_adapter", "check_model", "load_adapter", "model_config_of"]


def model_config_of(model: Any, name: str = "") -> ModelConfig:
    """The lcf_jax ModelConfig of a transformers model, a transformers config, a config dict or a ModelConfig."""
    if isinstance(model, ModelConfig):
        return model
    cfg = getattr(model, "config", model)
    if not name:
        name = getattr(cfg, "name_or_path", "") or getattr(model, "name_or_path", "") or ""
    return ModelConfig.from_hf_config(cfg, name=str(name))


def check_model(adapter_or_meta: Any, role: str, model: Any) -> None:
    """Raises ConfigHashMismatchError if `model` (see `model_config_of`) is not the adapter's `role` model."""
    if role not in ("sharer", "receiver"):
        raise ValueError(f"role must be 'sharer' or 'receiver', got {role!r}")
    meta = adapter_or_meta if isinstance(adapter_or_meta, F.AdapterMeta) else adapter_or_meta.meta
    F.check_model_config(meta, role, model_config_of(model))


def build_adapter(meta: F.AdapterMeta) -> Adapter:
    """An adapter module with the layout `meta` describes (default-initialised weights)."""
    module = adapter_class(meta.kind)(meta.config, meta.sharer, meta.receiver)
    module.meta = meta
    want = {e.name: tuple(e.shape) for e in meta.table.entries}
    got = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    if got != want:  # the module classes and the name table must agree
        raise AssertionError(f"internal: {meta.kind} module state dict differs from the name table: "
                             f"{sorted(set(got) ^ set(want)) or [k for k in want if got.get(k) != want[k]]}")
    return module


def load_adapter(directory: str | os.PathLike, *, sharer_model: Any = None, receiver_model: Any = None,
                 dtype: Optional[torch.dtype] = torch.float32, device: Any = None) -> Adapter:
    """Loads an exported adapter (`python -m lcf_jax.export`) as a torch module in eval mode.

    sharer_model / receiver_model: optional transformers models (or configs) checked against the
    architectures recorded at export. dtype: parameter dtype (None keeps the file's); the adapters
    compute in float32 either way. Attributes: .kind, .meta (AdapterMeta: .raw is adapter.json),
    .sharer_config, .receiver_config (lcf_jax ModelConfigs).
    """
    from safetensors.torch import load_file

    directory = Path(directory)
    meta = F.read_meta(directory)
    F.check_file(directory, meta)
    if sharer_model is not None:
        check_model(meta, "sharer", sharer_model)
    if receiver_model is not None:
        check_model(meta, "receiver", receiver_model)
    module = build_adapter(meta)
    state = load_file(str(directory / F.TENSORS_FILE))
    module = module.to(dtype if dtype is not None else next(iter(state.values())).dtype)
    module.load_state_dict(state, strict=True)  # copies (and casts) into the module's parameters
    if device is not None:
        module = module.to(device)
    return module.eval().requires_grad_(False)
