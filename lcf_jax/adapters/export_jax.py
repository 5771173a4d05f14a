"""Export lcf_jax adapters to the portable format (`export_format`) and import them back.

  export_adapter(out_dir, params, cfg, sharer_cfg, receiver_cfg, dtype=...)   params in memory -> directory
  import_adapter(directory) -> (kind, cfg, params)                             directory -> lcf_jax

A training run's checkpoint is read and exported by `train.export_run` (training sits above adapters).

A round trip export -> import in the params' own dtype gives bit-identical params.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from lcf_jax.adapters import ADAPTER_KINDS
from lcf_jax.adapters import export_format as F
from lcf_jax.models.config import ModelConfig


def _kind_of(cfg: Any) -> str:
    kind = getattr(cfg, "kind", None)
    if kind not in ADAPTER_KINDS:
        raise ValueError(f"not an adapter config: {type(cfg).__name__} (kinds: {sorted(ADAPTER_KINDS)})")
    return kind


def export_adapter(out_dir: str | os.PathLike, params: Any, cfg: Any, sharer_cfg: ModelConfig,
                   receiver_cfg: ModelConfig, *, dtype: str = "float32", source: Optional[dict] = None,
                   data: Optional[dict] = None) -> Path:
    """Writes `out_dir`/adapter.safetensors and adapter.json (atomically). Returns the directory."""
    kind = _kind_of(cfg)
    table = F.tensor_table(kind, cfg, sharer_cfg, receiver_cfg)
    tensors = F.params_to_tensors(table, jax.tree.map(np.asarray, jax.device_get(params)), dtype)
    meta = F.build_meta(kind, cfg, sharer_cfg, receiver_cfg, dtype=dtype, source=source, data=data)
    return F.write_adapter_dir(out_dir, meta, tensors)


class ImportedAdapter(NamedTuple):
    kind: str
    config: Any          # LCFConfig | LCFXConfig | C2CConfig
    params: dict         # jax arrays, the file's dtype
    sharer: ModelConfig
    receiver: ModelConfig
    meta: dict


def import_adapter(directory: str | os.PathLike, *, full: bool = False):
    """Reads an exported adapter back into lcf_jax: (kind, cfg, params), or an ImportedAdapter with
    the model configs and the JSON when `full`."""
    meta = F.read_meta(directory)
    tensors = F.read_tensors_numpy(directory, meta)
    params = jax.tree.map(jnp.asarray, F.tensors_to_params(meta.table, tensors))
    cfg = F.adapter_config(meta.kind, meta.raw["config"])
    if full:
        return ImportedAdapter(meta.kind, cfg, params, meta.sharer, meta.receiver, meta.raw)
    return meta.kind, cfg, params
