"""LCF-X (different contexts) in PyTorch: `lcf_jax.adapters.lcfx.encode_message` / `decode_message`.

Encoder (sharer side): per sharer token, z = act(RMSNorm(sum_s [unrot k_s | v_s] @ W_s^T + b) * norm); m learned
queries (optionally shifted by a summary of the receiver's own cache, the conditioned variant) attention-pool z
over the valid sharer tokens into latents [B, m, r]. Decoder (receiver side): per receiver layer,
K = RMSNorm(latents) @ Wk^T + bk, V = v_gate * (RMSNorm(latents) @ Wv^T + bv) -> [B, Hr, m, Dr] position-free
extra K/V (layers outside receiver_layers get zeros). All in float32.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from lcf_jax.adapters import export_format as F
from lcf_jax.models.config import ModelConfig
from lcf_jax.torch import common as C
from lcf_jax.torch.common import KV, ExtraKV


def unrotated_kv(kv: KV, cfg: ModelConfig, layers) -> list[torch.Tensor]:
    """Per layer of `layers`: [B, S, 2*H*D] float32 [un-rotated key | value], padding slots zeroed."""
    out = []
    valid = kv.mask[..., None]
    for l in layers:
        k = kv.keys[l].transpose(1, 2).to(torch.float32)         # [B, S, H, D]
        v = kv.values[l].transpose(1, 2).to(torch.float32)
        cos, sin = C.layer_rope(kv.positions, cfg, l)
        k = C.invert_rope(k, cos, sin)
        b, s, h, d = k.shape
        x = torch.cat([k.reshape(b, s, h * d), v.reshape(b, s, h * d)], dim=-1)
        out.append(torch.where(valid, x, torch.zeros((), dtype=x.dtype)))   # padding may hold non-finite junk
    return out


class LCFXAdapter(nn.Module):
    """encode(sharer KV[, receiver KV]) -> latents [B, m, r]; decode(latents) -> ExtraKV for the receiver."""

    kind = "lcfx"

    def __init__(self, config: dict, sharer_config: ModelConfig, receiver_config: ModelConfig):
        super().__init__()
        self.config = F.normalize_config("lcfx", config)
        self.sharer_config, self.receiver_config = sharer_config, receiver_config
        self.sharer_layers, self.receiver_layers, self.cond_layers = F.layer_plan(
            "lcfx", self.config, sharer_config, receiver_config)
        # encoder.* and decoder.layers.{l}.* (or decoder.embed.*), named by the spec's table
        C.attach_table(self, F.tensor_table("lcfx", self.config, sharer_config, receiver_config))

    @property
    def positioned(self) -> bool:
        """The message is a prefix of the receiver's cache after its special prefix (`cache_bridge.positioned_prefix`)."""
        return self.config["injection"] == "positioned"

    @property
    def slots(self) -> int:
        return int(self.config["slots"])

    def receiver_summary(self, receiver: KV) -> torch.Tensor:
        """Conditioning vector c [B, r]: masked mean of the receiver's un-rotated K/V, projected."""
        cfg, e = self.config, self.encoder
        xs = unrotated_kv(receiver, self.receiver_config, self.cond_layers)
        w = receiver.mask.to(torch.float32)
        denom = torch.clamp(w.sum(-1), min=1.0)[:, None]
        c = sum(C.linear(torch.einsum("bsf,bs->bf", x, w) / denom, e.cond_proj[str(l)])
                for x, l in zip(xs, self.cond_layers))
        c = c + e.cond_bias.to(torch.float32)
        return C.activation(C.rms_norm(c, e.cond_norm.weight, cfg["eps"]), cfg["activation"])

    def encode(self, sharer: KV, receiver: Optional[KV] = None) -> torch.Tensor:
        """Sharer KV [Ls, B, Hs, S, Ds] of its own context -> latents [B, m, r] float32. The conditioned
        variant also needs the receiver's own KV."""
        cfg, e = self.config, self.encoder
        C.check_kv(sharer, self.sharer_config, "sharer")
        if cfg["conditioned"]:
            if receiver is None:
                raise ValueError("a conditioned LCF-X encoder needs the receiver's KV")
            C.check_kv(receiver, self.receiver_config, "receiver")
        xs = unrotated_kv(sharer, self.sharer_config, self.sharer_layers)
        z = sum(C.linear(x, e.in_proj[str(l)]) for x, l in zip(xs, self.sharer_layers))
        z = z + e.in_proj_bias.to(torch.float32)
        linear = bool(cfg.get("linear", False))
        if not linear:
            z = C.activation(C.rms_norm(z, e.norm.weight, cfg["eps"]), cfg["activation"])  # [B, S, r]
        if cfg["pooling"] == "window":
            return self._window(z, sharer.mask, self.receiver_summary(receiver) if cfg["conditioned"] else None)
        b, s, r = z.shape
        h, m = int(cfg["pool_heads"]), int(cfg["slots"])
        q = e.queries.to(torch.float32).expand(b, m, r)
        if cfg["conditioned"]:
            c = self.receiver_summary(receiver)
            q = q + C.linear(c, e.cond_shift).reshape(b, m, r)
        zk = C.rms_norm(z, e.norm.weight, cfg["eps"]) if linear else z   # linear path: only the scores see a norm
        k = C.linear(zk, e.pool_k).reshape(b, s, h, r // h)
        v = C.linear(z, e.pool_v).reshape(b, s, h, r // h)
        qh = q.reshape(b, m, h, r // h)
        scores = torch.einsum("bmhd,bshd->bhms", qh, k) * (r // h) ** -0.5
        valid = sharer.mask[:, None, None, :]
        scores = torch.where(valid, scores, torch.full((), -1e30))
        probs = torch.softmax(scores, dim=-1) * valid
        pooled = torch.einsum("bhms,bshd->bmhd", probs, v).reshape(b, m, r)
        lat = C.linear(pooled, e.pool_o)
        if not linear:
            lat = C.rms_norm(lat, e.out_norm.weight, cfg["eps"])
        any_valid = sharer.mask.any(dim=-1)[:, None, None]
        return torch.where(any_valid, lat, torch.zeros((), dtype=lat.dtype))

    def _window(self, z: torch.Tensor, mask: torch.Tensor, c: Optional[torch.Tensor]) -> torch.Tensor:
        """Window pooling (`lcfx.token_scores`, `lcfx.window_slots`): the m consecutive valid tokens with the
        most softmax(score) mass, each through the one-token value path; slots past the end are zero.
        c: the receiver summary, None for an unconditioned adapter (its scores are the prior alone)."""
        cfg, e = self.config, self.encoder
        b, s, _ = z.shape
        m, k = int(cfg["slots"]), int(cfg["locator_rank"])
        scores = z @ e.locator_bias.weight.to(torch.float32)
        if c is not None:
            scores = scores + torch.einsum("bk,bsk->bs", C.linear(c, e.locator_q), C.linear(z, e.locator_k)) * k ** -0.5
        order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)
        n = mask.sum(dim=1)
        ranked = torch.arange(s, device=z.device)[None, :] < n[:, None]
        sc = torch.where(ranked, torch.gather(scores, 1, order), torch.full((), -1e30))
        p = torch.softmax(sc, dim=-1) * ranked
        cum = torch.cat([torch.zeros(b, 1), torch.cumsum(p, dim=1)], dim=1)
        starts = torch.arange(s, device=z.device)
        mass = cum[:, torch.clamp(starts + m, max=s)] - cum[:, starts]
        allowed = starts[None, :] <= torch.clamp(n - m, min=0)[:, None]
        start = torch.argmax(torch.where(allowed, mass, torch.full((), -1.0)), dim=1)
        ordinal = start[:, None] + torch.arange(m, device=z.device)[None, :]
        index = torch.gather(order, 1, torch.clamp(ordinal, max=s - 1))
        picked = torch.gather(z, 1, index[..., None].expand(b, m, z.shape[-1]))
        lat = C.rms_norm(C.linear(C.linear(picked, e.pool_v), e.pool_o), e.out_norm.weight, cfg["eps"])
        return torch.where((ordinal < n[:, None])[..., None], lat, torch.zeros((), dtype=lat.dtype))

    def decode(self, latents: torch.Tensor, slot_mask: Optional[torch.Tensor] = None) -> ExtraKV:
        """Latents [B, m, r] -> ExtraKV: keys/values [Lr, B, Hr, m, Dr] float32, mask [B, m]."""
        cfg, rc = self.config, self.receiver_config
        if cfg["decoder"] != "kv":
            raise ValueError("this adapter decodes its message into input vectors (decoder='embed'): use "
                             "decode_embeddings / cache_bridge.positioned_prefix")
        r = int(cfg["rank"])
        if latents.ndim != 3 or latents.shape[2] != r:
            raise ValueError(f"latents must be [B, n, rank={r}], got {tuple(latents.shape)}")
        b, m = latents.shape[0], latents.shape[1]
        hr, dr = rc.num_kv_heads, rc.head_dim
        lat = latents.to(torch.float32)
        keys = torch.zeros(rc.num_layers, b, hr, m, dr, dtype=torch.float32, device=lat.device)
        values = torch.zeros_like(keys)
        for l in self.receiver_layers:
            p = self.decoder.layers[str(l)]
            hh = lat if cfg.get("linear", False) else C.rms_norm(lat, p.norm.weight, cfg["eps"])
            k = C.linear(hh, p.k)
            v = C.linear(hh, p.v) * p.v_gate.to(torch.float32)
            keys[l] = k.reshape(b, m, hr, dr).transpose(1, 2)
            values[l] = v.reshape(b, m, hr, dr).transpose(1, 2)
        if slot_mask is None:
            slot_mask = torch.ones(b, m, dtype=torch.bool, device=lat.device)
        elif tuple(slot_mask.shape) != (b, m):
            raise ValueError(f"slot_mask must be [B, slots]={(b, m)}, got {tuple(slot_mask.shape)}")
        return ExtraKV(keys, values, slot_mask.to(torch.bool))

    def decode_embeddings(self, latents: torch.Tensor) -> torch.Tensor:
        """decoder="embed": latents [B, n, r] -> receiver input vectors [B, n, D] float32."""
        cfg = self.config
        if cfg["decoder"] != "embed":
            raise ValueError("this adapter decodes per-layer K/V (decoder='kv'): use decode")
        d = self.decoder["embed"]
        h = C.rms_norm(latents.to(torch.float32), d.norm.weight, cfg["eps"])
        h = C.activation(C.linear(h, d.w1), cfg["activation"])
        return C.rms_norm(C.linear(h, d.w2), d.scale.weight, cfg["eps"])

    def forward(self, sharer: KV, receiver: Optional[KV] = None, slot_mask: Optional[torch.Tensor] = None) -> ExtraKV:
        return self.decode(self.encode(sharer, receiver), slot_mask)
