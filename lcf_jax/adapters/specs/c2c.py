"""C2C's spec (the baseline fuser): its config, which receiver layers carry a projector, and the file name
of every parameter. No JAX here."""
from __future__ import annotations

import dataclasses

from lcf_jax.adapters.layer_map import LAYER_MAP_KINDS, layer_map
from lcf_jax.adapters.specs.base import Entry, Table
from lcf_jax.models.config import ModelConfig

KIND = "c2c"
SHARED_CONTEXT = True   # the role (`adapters.interface`): fuse a shared context, or send a message
REQUIRED_IN_FILE = ("hidden_dim", "intermediate_dim", "num_layers", "layer_map", "eps")


@dataclasses.dataclass(frozen=True)
class C2CConfig:
    hidden_dim: int = 1024
    intermediate_dim: int = 1024
    num_layers: int = 3              # C2C asserts >= 3: in-proj + mlp1 + (num_layers-2) proj blocks
    dropout: float = 0.1
    initial_temperature: float = 1.0
    final_temperature: float = 0.001
    anneal_steps: int = 1929
    layer_map: str = "last_aligned"
    zero_init: bool = False          # C2C's zero_init: zero the output projections
    eps: float = 1e-6

    kind = "c2c"

    def __post_init__(self):
        if self.num_layers < 3:
            raise ValueError(f"C2CConfig.num_layers must be >= 3 (as in C2C), got {self.num_layers}")
        if self.layer_map not in LAYER_MAP_KINDS:
            raise ValueError(f"C2CConfig.layer_map must be one of {LAYER_MAP_KINDS}, got {self.layer_map!r}")


CONFIG = C2CConfig


def c2c_layers(cfg: C2CConfig, sharer_cfg: ModelConfig, receiver_cfg: ModelConfig):
    """(receiver layers with a projector, their sharer source layers)."""
    mapping = layer_map(sharer_cfg.num_layers, receiver_cfg.num_layers, cfg.layer_map)
    layers = tuple(i for i, s in enumerate(mapping) if s >= 0)
    return layers, tuple(mapping[i] for i in layers)


layer_plan = c2c_layers   # the kind-independent name `export_format.layer_plan` calls


def layer_layout(cfg: C2CConfig, s: ModelConfig, r: ModelConfig) -> dict:
    """The "layer_map" section of adapter.json."""
    layers, sources = c2c_layers(cfg, s, r)
    return {"kind": cfg.layer_map, "receiver_to_sharer": list(layer_map(s.num_layers, r.num_layers, cfg.layer_map)),
            "receiver_layers": list(layers), "sharer_layers": list(sources)}


def tensor_table(cfg: C2CConfig, s: ModelConfig, r: ModelConfig) -> Table:
    """The file names of every parameter (see `export_format`)."""
    layers, _ = c2c_layers(cfg, s, r)
    n, hd, it, nb = len(layers), cfg.hidden_dim, cfg.intermediate_dim, cfg.num_layers - 2
    in_dim, out, h = s.kv_width + r.kv_width, r.kv_width, r.num_kv_heads
    entries, leaves = [], {}
    for br in ("key", "value"):
        leaves.update({
            (br, "in_w"): (n, in_dim, hd), (br, "in_b"): (n, hd),
            (br, "mlp1", "norm"): (n, hd), (br, "mlp1", "w1"): (n, hd, it), (br, "mlp1", "w2"): (n, it, hd),
            (br, "scalar_mlp2", "norm"): (n, hd), (br, "scalar_mlp2", "w1"): (n, hd, hd),
            (br, "scalar_mlp2", "w2"): (n, hd, hd),
            (br, "scalar_head_w"): (n, hd, h), (br, "scalar_head_b"): (n, h),
            (br, "proj_mlp2", "norm"): (n, nb, hd), (br, "proj_mlp2", "w1"): (n, nb, hd, it),
            (br, "proj_mlp2", "w2"): (n, nb, it, hd),
            (br, "proj_out_w"): (n, hd, out), (br, "proj_out_b"): (n, out), (br, "gate_logit"): (n,)})
        for j, l in enumerate(layers):
            p = f"{br}.layers.{l}."
            entries += [
                Entry(p + "in_proj.weight", (hd, in_dim), (br, "in_w"), (j,), "linear"),
                Entry(p + "in_proj.bias", (hd,), (br, "in_b"), (j,), "copy"),
                Entry(p + "mlp1.norm.weight", (hd,), (br, "mlp1", "norm"), (j,), "copy"),
                Entry(p + "mlp1.w1.weight", (it, hd), (br, "mlp1", "w1"), (j,), "linear"),
                Entry(p + "mlp1.w2.weight", (hd, it), (br, "mlp1", "w2"), (j,), "linear"),
                Entry(p + "scalar_mlp2.norm.weight", (hd,), (br, "scalar_mlp2", "norm"), (j,), "copy"),
                Entry(p + "scalar_mlp2.w1.weight", (hd, hd), (br, "scalar_mlp2", "w1"), (j,), "linear"),
                Entry(p + "scalar_mlp2.w2.weight", (hd, hd), (br, "scalar_mlp2", "w2"), (j,), "linear"),
                Entry(p + "scalar_head.weight", (h, hd), (br, "scalar_head_w"), (j,), "linear"),
                Entry(p + "scalar_head.bias", (h,), (br, "scalar_head_b"), (j,), "copy"),
            ]
            for b in range(nb):
                q = f"{p}proj_mlp2.{b}."
                entries += [
                    Entry(q + "norm.weight", (hd,), (br, "proj_mlp2", "norm"), (j, b), "copy"),
                    Entry(q + "w1.weight", (it, hd), (br, "proj_mlp2", "w1"), (j, b), "linear"),
                    Entry(q + "w2.weight", (hd, it), (br, "proj_mlp2", "w2"), (j, b), "linear"),
                ]
            entries += [
                Entry(p + "proj_out.weight", (out, hd), (br, "proj_out_w"), (j,), "linear"),
                Entry(p + "proj_out.bias", (out,), (br, "proj_out_b"), (j,), "copy"),
                Entry(p + "gate_logit", (), (br, "gate_logit"), (j,), "copy"),
            ]
    return Table(tuple(entries), leaves)
