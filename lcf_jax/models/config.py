"""One frozen dataclass describes every supported decoder: the shape of the model is defined here only.

Families differ by a handful of switches (q/k/v bias, q/k norm, sandwich norms, (1+w) norms,
embedding scale, activation, per-layer sliding windows and RoPE bases); the forward pass in
`transformer.py` reads these switches, so adding a family means adding a `from_hf_config` branch
and a weight table, not a new forward.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any, Optional

# The activations `models.layers.activation` implements (adapter configs and the kernel check against these).
ACTIVATIONS = ("silu", "gelu_tanh")

SUPPORTED_ARCHITECTURES = {
    # Hugging Face `model_type` -> our family name.
    "llama": "llama",
    "qwen2": "qwen2",
    "qwen3": "qwen3",
    "gemma3_text": "gemma3",
    "gemma3": "gemma3",
}


class UnsupportedArchitectureError(ValueError):
    pass


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    family: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    max_position_embeddings: int
    rms_eps: float = 1e-6
    rope_theta: float = 10000.0
    # Per-layer: "full" or "sliding". Sliding layers use `local_rope_theta` and `sliding_window`.
    layer_types: tuple[str, ...] = ()
    local_rope_theta: Optional[float] = None
    sliding_window: Optional[int] = None
    rope_scaling_factor: float = 1.0  # linear scaling on full layers (Gemma3 >= 1B uses 8)
    qkv_bias: bool = False
    qk_norm: bool = False
    sandwich_norm: bool = False  # Gemma3: post-attention and pre/post feed-forward norms
    norm_plus_one: bool = False  # Gemma: x * (1 + w)
    embed_scale: float = 1.0
    activation: str = "silu"  # "silu" | "gelu_tanh"
    tie_embeddings: bool = True
    query_pre_attn_scalar: Optional[float] = None
    attn_logit_softcap: Optional[float] = None
    final_logit_softcap: Optional[float] = None
    bos_token_id: Optional[int] = None
    eos_token_ids: tuple[int, ...] = ()
    pad_token_id: int = 0
    name: str = ""

    def __post_init__(self):
        if not self.layer_types:
            object.__setattr__(self, "layer_types", ("full",) * self.num_layers)
        if len(self.layer_types) != self.num_layers:
            raise ValueError(
                f"layer_types has {len(self.layer_types)} entries but num_layers={self.num_layers}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads={self.num_heads} is not a multiple of num_kv_heads={self.num_kv_heads}")
        if self.activation not in ("silu", "gelu_tanh"):
            raise ValueError(f"activation must be 'silu' or 'gelu_tanh', got {self.activation!r}")

    # -- derived facts -------------------------------------------------------------------------
    @property
    def attn_scale(self) -> float:
        base = self.query_pre_attn_scalar if self.query_pre_attn_scalar else self.head_dim
        return float(base) ** -0.5

    @property
    def kv_width(self) -> int:
        """Width of one token's K (or V) for all KV heads."""
        return self.num_kv_heads * self.head_dim

    def layer_rope_theta(self, layer: int) -> float:
        if self.layer_types[layer] == "sliding" and self.local_rope_theta is not None:
            return self.local_rope_theta
        return self.rope_theta

    def layer_rope_scale(self, layer: int) -> float:
        return 1.0 if self.layer_types[layer] == "sliding" else self.rope_scaling_factor

    def layer_window(self, layer: int) -> Optional[int]:
        return self.sliding_window if self.layer_types[layer] == "sliding" else None

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["layer_types"] = list(self.layer_types)
        d["eos_token_ids"] = list(self.eos_token_ids)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown ModelConfig keys {unknown}; known keys: {sorted(known)}")
        d = dict(d)
        d["layer_types"] = tuple(d.get("layer_types", ()))
        d["eos_token_ids"] = tuple(d.get("eos_token_ids", ()))
        return cls(**d)

    def hash(self) -> str:
        """Stable hash of the architecture (not the name): export files record it to catch mismatches."""
        d = self.to_dict()
        d.pop("name", None)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    # -- construction from Hugging Face ---------------------------------------------------------
    @classmethod
    def from_hf_config(cls, hf_config: Any, name: str = "") -> "ModelConfig":
        """Builds a config from a transformers `PretrainedConfig` (or its `to_dict()`)."""
        c = hf_config.to_dict() if hasattr(hf_config, "to_dict") else dict(hf_config)
        if "text_config" in c and c.get("model_type") == "gemma3":
            c = c["text_config"]
        model_type = c.get("model_type", "")
        if model_type not in SUPPORTED_ARCHITECTURES:
            raise UnsupportedArchitectureError(
                f"unsupported architecture model_type={model_type!r}; supported: "
                f"{sorted(set(SUPPORTED_ARCHITECTURES))}")
        family = SUPPORTED_ARCHITECTURES[model_type]
        heads = c["num_attention_heads"]
        head_dim = c.get("head_dim") or c["hidden_size"] // heads
        eos = c.get("eos_token_id")
        eos = tuple(eos) if isinstance(eos, (list, tuple)) else ((eos,) if eos is not None else ())
        pad = c.get("pad_token_id")
        common = dict(
            family=family, name=name, vocab_size=c["vocab_size"], hidden_size=c["hidden_size"],
            intermediate_size=c["intermediate_size"], num_layers=c["num_hidden_layers"],
            num_heads=heads, num_kv_heads=c.get("num_key_value_heads") or heads, head_dim=head_dim,
            max_position_embeddings=c.get("max_position_embeddings", 2048),
            rms_eps=c.get("rms_norm_eps", 1e-6), tie_embeddings=bool(c.get("tie_word_embeddings", True)),
            bos_token_id=c.get("bos_token_id"), eos_token_ids=eos,
            pad_token_id=pad if pad is not None else 0,
        )
        rope = _rope_params(c)
        if family == "llama":
            _reject_rope_scaling(rope.get("full"), model_type)
            return cls(**common, rope_theta=rope["full"]["rope_theta"],
                       qkv_bias=bool(c.get("attention_bias", False)), activation="silu")
        if family in ("qwen2", "qwen3"):
            _reject_rope_scaling(rope.get("full"), model_type)
            window = c.get("sliding_window") if c.get("use_sliding_window") else None
            layer_types = tuple(
                "sliding" if t == "sliding_attention" else "full"
                for t in (c.get("layer_types") or ["full_attention"] * c["num_hidden_layers"]))
            if window is None:
                layer_types = ("full",) * c["num_hidden_layers"]
            return cls(**common, rope_theta=rope["full"]["rope_theta"], sliding_window=window,
                       layer_types=layer_types, qkv_bias=(family == "qwen2"),
                       qk_norm=(family == "qwen3"), activation="silu")
        # gemma3
        layer_types = tuple("sliding" if t == "sliding_attention" else "full" for t in c["layer_types"])
        full = rope["full"]
        scale = 1.0
        if full.get("rope_type", "default") == "linear":
            scale = float(full["factor"])
        elif full.get("rope_type", "default") != "default":
            raise UnsupportedArchitectureError(f"gemma3 rope_type {full.get('rope_type')!r} is not supported")
        act = c.get("hidden_activation") or c.get("hidden_act")
        if act not in ("gelu_pytorch_tanh", "gelu_tanh"):
            raise UnsupportedArchitectureError(f"gemma3 activation {act!r} is not supported")
        return cls(**common, rope_theta=full["rope_theta"],
                   local_rope_theta=rope.get("sliding", {}).get("rope_theta", c.get("rope_local_base_freq", 10000.0)),
                   rope_scaling_factor=scale, sliding_window=c.get("sliding_window"),
                   layer_types=layer_types, qk_norm=True, sandwich_norm=True, norm_plus_one=True,
                   embed_scale=float(c["hidden_size"]) ** 0.5, activation="gelu_tanh",
                   query_pre_attn_scalar=c.get("query_pre_attn_scalar"),
                   attn_logit_softcap=c.get("attn_logit_softcapping"),
                   final_logit_softcap=c.get("final_logit_softcapping"))


def _rope_params(c: dict) -> dict:
    """Normalises transformers 4.x (`rope_theta`, `rope_scaling`) and 5.x (`rope_parameters`)."""
    rp = c.get("rope_parameters")
    out: dict[str, dict] = {}
    if isinstance(rp, dict) and ("full_attention" in rp or "sliding_attention" in rp):
        if "full_attention" in rp:
            out["full"] = dict(rp["full_attention"])
        if "sliding_attention" in rp:
            out["sliding"] = dict(rp["sliding_attention"])
    elif isinstance(rp, dict) and rp:
        out["full"] = dict(rp)
    else:
        full = dict(c.get("rope_scaling") or {})
        full.setdefault("rope_theta", c.get("rope_theta") or 10000.0)
        if "type" in full and "rope_type" not in full:
            full["rope_type"] = full["type"]
        out["full"] = full
        if "rope_local_base_freq" in c:
            out["sliding"] = {"rope_theta": c["rope_local_base_freq"], "rope_type": "default"}
    out["full"].setdefault("rope_theta", c.get("rope_theta") or 10000.0)
    return out


def _reject_rope_scaling(full: Optional[dict], model_type: str) -> None:
    kind = (full or {}).get("rope_type", "default")
    if kind not in ("default", None):
        raise UnsupportedArchitectureError(
            f"{model_type} rope_type {kind!r} is not supported (only the default RoPE is ported)")
