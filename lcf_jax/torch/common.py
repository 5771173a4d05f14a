"""Math shared by the PyTorch adapters: the same formulas as `lcf_jax.models.layers` (float32).

KV is the stacked-layer cache layout of lcf_jax's KVCache, in torch: keys/values [layers, batch,
kv_heads, slots, head_dim] (keys rotated by RoPE), positions [batch, slots] (RoPE position of each
slot), mask [batch, slots] (slot holds a real token). ExtraKV mirrors `lcf_jax.models.cache.ExtraKV`.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as Fn

from lcf_jax.models.config import ModelConfig


class KV(NamedTuple):
    keys: torch.Tensor        # [L, B, H, S, D]
    values: torch.Tensor      # [L, B, H, S, D]
    positions: torch.Tensor   # [B, S] int64
    mask: torch.Tensor        # [B, S] bool


class ExtraKV(NamedTuple):
    keys: torch.Tensor        # [L, B, H, m, D], position-free (no RoPE)
    values: torch.Tensor
    mask: torch.Tensor        # [B, m] bool


def rope_cos_sin(positions: torch.Tensor, head_dim: int, theta: float, scale: float = 1.0):
    """cos, sin [..., T, head_dim] float32 for positions [..., T] (rotate-half tables, halves repeated)."""
    half = head_dim // 2
    exponents = torch.arange(half, dtype=torch.float32, device=positions.device) * 2.0 / head_dim
    inv_freq = 1.0 / (torch.tensor(theta, dtype=torch.float32, device=positions.device) ** exponents)
    inv_freq = inv_freq / torch.tensor(scale, dtype=torch.float32, device=positions.device)
    angles = positions.to(torch.float32)[..., None] * inv_freq
    angles = torch.cat([angles, angles], dim=-1)
    return torch.cos(angles), torch.sin(angles)


def layer_rope(positions: torch.Tensor, cfg: ModelConfig, layer: int):
    return rope_cos_sin(positions, cfg.head_dim, cfg.layer_rope_theta(layer), cfg.layer_rope_scale(layer))


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [..., H, D] (float32); cos/sin [..., D] broadcast over the head axis."""
    c, s = cos.unsqueeze(-2), sin.unsqueeze(-2)
    return x * c + rotate_half(x) * s


def invert_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    return apply_rope(x, cos, -sin)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Plain-weight RMSNorm over the last axis in float32 (adapters never use Gemma's 1 + w)."""
    x = x.to(torch.float32)
    y = x * torch.rsqrt(torch.mean(x * x, dim=-1, keepdim=True) + eps)
    return y * weight.to(torch.float32)


def activation(x: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "silu":
        return Fn.silu(x)
    if kind == "gelu_tanh":
        return Fn.gelu(x, approximate="tanh")
    raise ValueError(f"unknown activation {kind!r}")


def linear(x: torch.Tensor, layer: torch.nn.Module) -> torch.Tensor:
    """x @ W^T + b in float32 whatever the stored dtype (`layer` holds `weight` [out, in] and maybe `bias`)."""
    bias = getattr(layer, "bias", None)
    b = None if bias is None else bias.to(torch.float32)
    return Fn.linear(x.to(torch.float32), layer.weight.to(torch.float32), b)


class ParamNode(torch.nn.Module):
    """One level of an adapter's parameter tree. `attach_table` builds the tree from the file names of the
    spec's table, so the state dict names ARE the file names: "layers.3.w_down.weight" is the parameter
    `weight` of node layers -> 3 -> w_down. `node[3]` indexes a level by layer or block number."""

    def __getitem__(self, key) -> "ParamNode":
        return self._modules[str(key)]


def attach_table(module: torch.nn.Module, table) -> None:
    """Registers one parameter per entry of an adapter's name table (`export_format.tensor_table`) under
    `module`, zero-filled at the file shape; `load_state_dict` then fills them from adapter.safetensors."""
    for e in table.entries:
        *path, leaf = e.name.split(".")
        node = module
        for k in path:
            if k not in node._modules:
                node.add_module(k, ParamNode())
            node = node._modules[k]
        node.register_parameter(leaf, torch.nn.Parameter(torch.zeros(e.shape)))


def gather_slots(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x [B, H, S, D] -> [B, H, S', D]: slot index[b, j] (clipped to >= 0) for each j."""
    b, h, _, d = x.shape
    idx = index.clamp(min=0)[:, None, :, None].expand(b, h, index.shape[1], d)
    return torch.gather(x, 2, idx)


def gather_tokens(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x [B, S] -> [B, S'] at index [B, S'] (clipped to >= 0)."""
    return torch.gather(x, 1, index.clamp(min=0))


def check_kv(kv: KV, cfg: ModelConfig, role: str) -> None:
    k = tuple(kv.keys.shape)
    want = (cfg.num_layers, cfg.num_kv_heads, cfg.head_dim)
    if len(k) != 5 or (k[0], k[2], k[4]) != want:
        raise ValueError(f"{role} keys {k} do not match the {role} model's (layers, kv_heads, head_dim)={want}; "
                         "expected [layers, batch, kv_heads, slots, head_dim]")
    if tuple(kv.values.shape) != k:
        raise ValueError(f"{role} values {tuple(kv.values.shape)} != keys {k}")
    if tuple(kv.mask.shape) != (k[1], k[3]) or tuple(kv.positions.shape) != (k[1], k[3]):
        raise ValueError(f"{role} mask {tuple(kv.mask.shape)} / positions {tuple(kv.positions.shape)} must be "
                         f"[batch, slots]={(k[1], k[3])}")


def fusion_inputs(sharer: KV, receiver: KV, alignment: torch.Tensor, s_cfg: ModelConfig, r_cfg: ModelConfig):
    """Checks a per-token fusion's inputs; returns (batch, receiver slots, alignment as long, valid [B, Sr]):
    a receiver slot is fused where it holds a token and is aligned to a real sharer token."""
    check_kv(sharer, s_cfg, "sharer")
    check_kv(receiver, r_cfg, "receiver")
    b, sr = receiver.mask.shape
    if tuple(alignment.shape) != (b, sr):
        raise ValueError(f"alignment has shape {tuple(alignment.shape)}, expected [batch, receiver slots]={(b, sr)}")
    alignment = alignment.to(torch.long)
    valid = receiver.mask & (alignment >= 0) & gather_tokens(sharer.mask, alignment)
    return b, sr, alignment, valid
