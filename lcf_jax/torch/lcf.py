"""LCF (shared context) in PyTorch: the same math as `lcf_jax.adapters.lcf.apply_lcf` with the
compress-translate reference (`lcf_jax.kernels.compress_translate.compress_translate_reference`).

Per receiver layer l with an adapter (source sharer layer s) and receiver slot t (aligned sharer slot a(t)):
    k_s = invert_rope(K_s[a(t)]) (sharer position of a(t), layer s's theta/scale)
    z = act(RMSNorm([k_s | V_s[a(t)]] @ W_down^T + b_down) * norm);  [k_hat | v_hat] = z @ W_up^T + b_up
    K_r[t] += sigmoid(gate_logit) * enabled * head_k * apply_rope(k_hat) (receiver position, layer l)
    V_r[t] += sigmoid(gate_logit) * enabled * head_v * v_hat
Slots outside the receiver mask, with alignment -1, or reading a sharer padding slot are untouched.
Computed in float32; the result has the receiver cache's dtype.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from lcf_jax.adapters import export_format as F
from lcf_jax.models.config import ModelConfig
from lcf_jax.torch import common as C
from lcf_jax.torch.common import KV


class LCFAdapter(nn.Module):
    """Parameters and state dict names come from the spec's table (layers.{receiver layer}.w_down.weight, ...)."""

    kind = "lcf"

    def __init__(self, config: dict, sharer_config: ModelConfig, receiver_config: ModelConfig):
        super().__init__()
        self.config = F.normalize_config("lcf", config)
        self.sharer_config, self.receiver_config = sharer_config, receiver_config
        layers, sources, _ = F.layer_plan("lcf", self.config, sharer_config, receiver_config)
        self.receiver_layers, self.sharer_layers = layers, sources
        C.attach_table(self, F.tensor_table("lcf", self.config, sharer_config, receiver_config))
        disabled = set(self.config.get("disabled") or ())
        self.register_buffer("enabled", torch.tensor([0.0 if l in disabled else 1.0 for l in layers]),
                             persistent=False)

    def forward(self, sharer: KV, receiver: KV, alignment: torch.Tensor,
                enabled: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """sharer KV [Ls, B, Hs, Ss, Ds], receiver KV [Lr, B, Hr, Sr, Dr], alignment int [B, Sr] (sharer slot
        per receiver slot, -1 none). Returns the fused receiver (keys, values) [Lr, B, Hr, Sr, Dr]."""
        s_cfg, r_cfg, cfg = self.sharer_config, self.receiver_config, self.config
        b, sr, alignment, valid = C.fusion_inputs(sharer, receiver, alignment, s_cfg, r_cfg)     # valid [B, Sr]
        en = self.enabled
        if enabled is not None:
            if tuple(enabled.shape) != tuple(en.shape):
                raise ValueError(f"enabled has shape {tuple(enabled.shape)}, expected {tuple(en.shape)}")
            en = en * enabled.to(en)
        s_pos = C.gather_tokens(sharer.positions, alignment)
        hs, ds = s_cfg.num_kv_heads, s_cfg.head_dim
        hr, dr = r_cfg.num_kv_heads, r_cfg.head_dim
        keys, values = receiver.keys.clone(), receiver.values.clone()
        m = valid[:, None, :, None]                                                          # [B, 1, Sr, 1]
        for i, (l, s) in enumerate(zip(self.receiver_layers, self.sharer_layers)):
            p = self.layers[str(l)]
            sk = C.gather_slots(sharer.keys[s], alignment).transpose(1, 2).to(torch.float32)  # [B, Sr, Hs, Ds]
            sv = C.gather_slots(sharer.values[s], alignment).transpose(1, 2).to(torch.float32)
            scos, ssin = C.layer_rope(s_pos, s_cfg, s)
            k_s = C.invert_rope(sk, scos, ssin)
            x = torch.cat([k_s.reshape(b, sr, hs * ds), sv.reshape(b, sr, hs * ds)], dim=-1)
            z = C.activation(C.rms_norm(C.linear(x, p.w_down), p.norm.weight, cfg["eps"]), cfg["activation"])
            y = C.linear(z, p.w_up)
            k_hat = y[..., :hr * dr].reshape(b, sr, hr, dr)
            v_hat = y[..., hr * dr:].reshape(b, sr, hr, dr)
            rcos, rsin = C.layer_rope(receiver.positions, r_cfg, l)
            k_hat = C.apply_rope(k_hat, rcos, rsin)
            gate = torch.sigmoid(p.gate_logit.to(torch.float32)) * en[i]
            gk = (gate * p.head_k.to(torch.float32))[:, None]
            gv = (gate * p.head_v.to(torch.float32))[:, None]
            rk = receiver.keys[l].transpose(1, 2).to(torch.float32)                           # [B, Sr, Hr, Dr]
            rv = receiver.values[l].transpose(1, 2).to(torch.float32)
            ko = (rk + gk * k_hat).to(receiver.keys.dtype).transpose(1, 2)                    # [B, Hr, Sr, Dr]
            vo = (rv + gv * v_hat).to(receiver.keys.dtype).transpose(1, 2)
            keys[l] = torch.where(m, ko, receiver.keys[l])
            values[l] = torch.where(m, vo, receiver.values[l])
        return keys, values
