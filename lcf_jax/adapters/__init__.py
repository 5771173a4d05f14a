"""Cache-fusion adapters between a sharer and a receiver model.

ADAPTER_KINDS maps kind -> AdapterKind(config class, init(key, cfg, sharer_cfg, receiver_cfg) -> params,
param_axes(cfg, sharer_cfg, receiver_cfg) -> tree of logical axis-name tuples).

  lcf  : shared context, per-token low-rank gated residual on the receiver's K/V (`lcf.apply_lcf`)
  lcfx : different contexts, m-slot latent message decoded to extra K/V (`lcfx.encode_message`,
         `lcfx.decode_message`)
  c2c  : the C2C baseline fuser (`c2c.apply_c2c`)

Each kind's config, layer plan and file table live in its JAX-free spec (`adapters/specs/<kind>.py`,
registered in `specs.SPECS`); the Flax halves here import them. The names below are resolved lazily (PEP 562)
so that the JAX-free submodules (`specs`, `layer_map`, `align`, `export_format`) can be imported without
JAX/Flax, e.g. by the PyTorch port in `lcf_jax.torch`.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, NamedTuple


class AdapterKind(NamedTuple):
    config: type
    init: Callable[..., Any]
    param_axes: Callable[..., Any]


_LAZY = {
    "C2CConfig": "c2c", "apply_c2c": "c2c", "c2c_param_axes": "c2c", "init_c2c": "c2c",
    "LCFConfig": "lcf", "apply_lcf": "lcf", "init_lcf": "lcf", "lcf_param_axes": "lcf",
    "LCFXConfig": "lcfx", "decode_message": "lcfx", "dequantize_message": "lcfx", "encode_message": "lcfx",
    "init_lcfx": "lcfx", "lcfx_param_axes": "lcfx", "message_nbytes": "lcfx", "quantize_message": "lcfx",
}


def _adapter_kinds() -> dict[str, AdapterKind]:
    from lcf_jax.adapters import c2c, lcf, lcfx
    return {
        "lcf": AdapterKind(lcf.LCFConfig, lcf.init_lcf, lcf.lcf_param_axes),
        "lcfx": AdapterKind(lcfx.LCFXConfig, lcfx.init_lcfx, lcfx.lcfx_param_axes),
        "c2c": AdapterKind(c2c.C2CConfig, c2c.init_c2c, c2c.c2c_param_axes),
    }


def __getattr__(name: str) -> Any:
    if name == "ADAPTER_KINDS":
        value: Any = _adapter_kinds()
    elif name in _LAZY:
        value = getattr(importlib.import_module(f"lcf_jax.adapters.{_LAZY[name]}"), name)
    else:
        raise AttributeError(f"module 'lcf_jax.adapters' has no attribute {name!r}")
    globals()[name] = value  # cache: later lookups skip __getattr__
    return value


__all__ = ["ADAPTER_KINDS", "AdapterKind", "C2CConfig", "LCFConfig", "LCFXConfig", "apply_c2c", "apply_lcf",
           "decode_message", "dequantize_message", "encode_message", "init_c2c", "init_lcf", "init_lcfx",
           "c2c_param_axes", "lcf_param_axes", "lcfx_param_axes", "message_nbytes", "quantize_message"]
