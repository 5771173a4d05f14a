"""Cache-fusion adapters between a sharer and a receiver model.

ADAPTER_KINDS maps kind -> AdapterKind(config class, init(key, cfg, sharer_cfg, receiver_cfg) -> params,
param_axes(cfg, sharer_cfg, receiver_cfg) -> tree of logical axis-name tuples).

  lcf  : shared context, per-token low-rank gated residual on the receiver's K/V (`lcf.apply_lcf`)
  lcfx : different contexts, m-slot latent message decoded to extra K/V (`lcfx.encode_message`,
         `lcfx.decode_message`)
  c2c  : the C2C baseline fuser (`c2c.apply_c2c`)
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

from lcf_jax.adapters.c2c import C2CConfig, apply_c2c, c2c_param_axes, init_c2c
from lcf_jax.adapters.lcf import LCFConfig, apply_lcf, init_lcf, lcf_param_axes
from lcf_jax.adapters.lcfx import (LCFXConfig, decode_message, dequantize_message, encode_message, init_lcfx,
                                   lcfx_param_axes, message_nbytes, quantize_message)


class AdapterKind(NamedTuple):
    config: type
    init: Callable[..., Any]
    param_axes: Callable[..., Any]


ADAPTER_KINDS: dict[str, AdapterKind] = {
    "lcf": AdapterKind(LCFConfig, init_lcf, lcf_param_axes),
    "lcfx": AdapterKind(LCFXConfig, init_lcfx, lcfx_param_axes),
    "c2c": AdapterKind(C2CConfig, init_c2c, c2c_param_axes),
}

__all__ = ["ADAPTER_KINDS", "AdapterKind", "C2CConfig", "LCFConfig", "LCFXConfig", "apply_c2c", "apply_lcf",
           "decode_message", "dequantize_message", "encode_message", "init_c2c", "init_lcf", "init_lcfx",
           "c2c_param_axes", "lcf_param_axes", "lcfx_param_axes", "message_nbytes", "quantize_message"]
