"""Cache-fusion adapters between a sharer and a receiver model.

ADAPTER_KINDS maps kind -> AdapterKind (`interface.py`): config class, init, param_axes, its role
(shared_context) and its two halves, send (sharer) and receive (receiver -> KVCache).

  lcf  : shared context, per-token low-rank gated residual on the receiver's K/V (`lcf.apply_lcf`)
  lcfx : different contexts, an m-slot latent message (`lcfx.encode_message`), received as a positioned
         prefix of the receiver's cache (`lcfx.message_prefix`)
  c2c  : the C2C baseline fuser (`c2c.apply_c2c`)

Each kind's config, layer plan, parameter layout (`param_layout`: path, shape, logical axes, init of every
parameter) and file table live in its JAX-free spec (`adapters/specs/<kind>.py`, registered in `specs.SPECS`);
the Flax halves here derive their init and axes from the layout (`common.init_from_layout`). Adding a kind: its spec, its module ending
in `ADAPTER = AdapterKind(...)`, and its name in `_KIND_MODULES` (or `interface.register` from outside). The
names below are resolved lazily (PEP 562) so that the JAX-free submodules (`specs`, `layer_map`, `align`,
`export_format`) can be imported without JAX/Flax, e.g. by the PyTorch port in `lcf_jax.torch`.
"""
from __future__ import annotations

import importlib
from typing import Any

_KIND_MODULES = ("lcf", "lcfx", "c2c")   # the registry: each module's ADAPTER

_LAZY = {
    "C2CConfig": "c2c", "apply_c2c": "c2c", "c2c_param_axes": "c2c", "init_c2c": "c2c",
    "LCFConfig": "lcf", "apply_lcf": "lcf", "init_lcf": "lcf", "lcf_param_axes": "lcf",
    "LCFXConfig": "lcfx", "decode_message": "lcfx", "dequantize_message": "lcfx", "encode_message": "lcfx",
    "init_lcfx": "lcfx", "lcfx_param_axes": "lcfx", "message_nbytes": "lcfx", "quantize_message": "lcfx",
}


def _adapter_kinds() -> dict:
    return {kind: importlib.import_module(f"lcf_jax.adapters.{kind}").ADAPTER for kind in _KIND_MODULES}


def __getattr__(name: str) -> Any:
    if name == "ADAPTER_KINDS":
        value: Any = _adapter_kinds()
    elif name in ("AdapterKind", "register", "unregister"):
        value = getattr(importlib.import_module("lcf_jax.adapters.interface"), name)
    elif name in _LAZY:
        value = getattr(importlib.import_module(f"lcf_jax.adapters.{_LAZY[name]}"), name)
    else:
        raise AttributeError(f"module 'lcf_jax.adapters' has no attribute {name!r}")
    globals()[name] = value  # cache: later lookups skip __getattr__
    return value


__all__ = ["ADAPTER_KINDS", "AdapterKind", "register", "unregister", "C2CConfig", "LCFConfig", "LCFXConfig",
           "apply_c2c", "apply_lcf",
           "decode_message", "dequantize_message", "encode_message", "init_c2c", "init_lcf", "init_lcfx",
           "c2c_param_axes", "lcf_param_axes", "lcfx_param_axes", "message_nbytes", "quantize_message"]
