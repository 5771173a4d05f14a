"""The C2C baseline fuser in PyTorch, evaluation mode only (`lcf_jax.adapters.c2c.apply_c2c(train=False)`):
hard gates 1[gate_logit > 0], no dropout, no Gumbel noise. Keys are fused as cached (rotated).

Per receiver layer l with a projector (source s), receiver slot t, branch X in {key, value}:
    x = [X_s[a(t)] flat | X_r[t] flat];  h = FFN(x @ W_in^T + b_in)
    proj = FFN^(num_layers-2)(h) @ W_out^T + b_out;  scal = FFN'(h) @ W_s^T + b_s
    X_r[t] += 1[gate_logit > 0] * sigmoid(scal)[head] * proj[head]
with FFN(h) = h + W2 GELU(W1 RMSNorm(h)) (exact GELU, bias-free).
"""
from __future__ import annotations

import torch
import torch.nn.functional as Fn
from torch import nn

from lcf_jax.adapters import export_format as F
from lcf_jax.models.config import ModelConfig
from lcf_jax.torch import common as C
from lcf_jax.torch.common import KV


def _ffn(p: nn.Module, h: torch.Tensor, eps: float) -> torch.Tensor:
    """C2C's StandardFFNLayer on the parameters of one block (norm, w1, w2)."""
    y = C.rms_norm(h, p.norm.weight, eps)
    return h + C.linear(Fn.gelu(C.linear(y, p.w1)), p.w2)


def _layer(p: nn.Module, src: torch.Tensor, tgt: torch.Tensor, eps: float, blocks: int) -> torch.Tensor:
    """One receiver layer's projector: src [N, Hs*Ds], tgt [N, Hr, Dr] -> [N, Hr, Dr] float32."""
    n, hr, dr = tgt.shape
    tgt = tgt.to(torch.float32)
    x = torch.cat([src.to(torch.float32), tgt.reshape(n, hr * dr)], dim=-1)
    h = _ffn(p.mlp1, C.linear(x, p.in_proj), eps)
    hp = h
    for b in range(blocks):
        hp = _ffn(p.proj_mlp2[b], hp, eps)
    proj = C.linear(hp, p.proj_out).reshape(n, hr, dr)
    scal = C.linear(_ffn(p.scalar_mlp2, h, eps), p.scalar_head)                  # [N, Hr]
    gate = (p.gate_logit.to(torch.float32) > 0).to(torch.float32)
    return tgt + gate * torch.sigmoid(scal)[..., None] * proj


class C2CAdapter(nn.Module):
    kind = "c2c"

    def __init__(self, config: dict, sharer_config: ModelConfig, receiver_config: ModelConfig):
        super().__init__()
        self.config = cfg = F.normalize_config("c2c", config)
        self.sharer_config, self.receiver_config = sharer_config, receiver_config
        self.receiver_layers, self.sharer_layers = F.layer_plan("c2c", cfg, sharer_config, receiver_config)
        C.attach_table(self, F.tensor_table("c2c", cfg, sharer_config, receiver_config))   # key.layers.{l}..., value...

    def forward(self, sharer: KV, receiver: KV, alignment: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Shapes as `LCFAdapter.forward`; returns the fused receiver (keys, values)."""
        s_cfg, r_cfg, eps = self.sharer_config, self.receiver_config, self.config["eps"]
        blocks = int(self.config["num_layers"]) - 2
        b, sr, alignment, valid = C.fusion_inputs(sharer, receiver, alignment, s_cfg, r_cfg)
        valid = valid[:, None, :, None]
        hs, ds, hr, dr = s_cfg.num_kv_heads, s_cfg.head_dim, r_cfg.num_kv_heads, r_cfg.head_dim
        out = []
        branches = ((self.key, sharer.keys, receiver.keys), (self.value, sharer.values, receiver.values))
        for branch, s_all, r_all in branches:
            new = r_all.clone()
            for l, s in zip(self.receiver_layers, self.sharer_layers):
                src = C.gather_slots(s_all[s], alignment).transpose(1, 2).reshape(b * sr, hs * ds)
                tgt = r_all[l].transpose(1, 2).reshape(b * sr, hr, dr)
                y = _layer(branch.layers[l], src, tgt, eps, blocks).reshape(b, sr, hr, dr).transpose(1, 2).to(r_all.dtype)
                new[l] = torch.where(valid, y, r_all[l])
            out.append(new)
        return out[0], out[1]
