"""C2C's spec (the baseline fuser): its config, which receiver layers carry a projector, and the file name
of every parameter. No JAX here."""
from __future__ import annotations

import dataclasses

from lcf_jax.adapters.layer_map import LAYER_MAP_KINDS, layer_map
from lcf_jax.adapters.specs.base import ONES, ZEROS, Param, Table, param, table_from, torch_linear
from lcf_jax.models.config import ModelConfig

KIND = "c2c"
SHARED_CONTEXT = True   # the role (`adapters.interface`): fuse a shared context, or send a message
TORCH_HALF = "lcf_jax.torch.c2c:C2CAdapter"   # the PyTorch module that loads its exported files
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


def param_layout(cfg: C2CConfig, s: ModelConfig, r: ModelConfig) -> tuple[Param, ...]:
    """Every parameter (path, shape, logical axes, init), in the order the Flax init draws them: a "key" and a
    "value" branch, each stacked over the receiver layers with a projector (C2C's StandardFFNLayer blocks are
    {norm, w1, w2}, bias-free; proj_mlp2 is stacked over its num_layers - 2 blocks too). Initialised as PyTorch's
    nn.Linear (C2C's own init), the output projection zero with `zero_init`."""
    layers, _ = c2c_layers(cfg, s, r)
    n, hd, it, nb = len(layers), cfg.hidden_dim, cfg.intermediate_dim, cfg.num_layers - 2
    in_dim, out_dim, h = s.kv_width + r.kv_width, r.kv_width, r.num_kv_heads
    lin = torch_linear
    out_init = ZEROS if cfg.zero_init else lin(hd)

    def ffn(br, name, lead, lead_axes, inter):
        return [param((br, name, "norm"), lead + (hd,), lead_axes + ("hidden",), ONES),
                param((br, name, "w1"), lead + (hd, inter), lead_axes + ("hidden", "mlp"), lin(hd)),
                param((br, name, "w2"), lead + (inter, hd), lead_axes + ("mlp", "hidden"), lin(inter))]

    out: list[Param] = []
    for br in ("key", "value"):
        out += [param((br, "in_w"), (n, in_dim, hd), ("layers", "kv_in", "hidden"), lin(in_dim)),
                param((br, "in_b"), (n, hd), ("layers", "hidden"), lin(in_dim))]
        out += ffn(br, "mlp1", (n,), ("layers",), it) + ffn(br, "scalar_mlp2", (n,), ("layers",), hd)
        out += [param((br, "scalar_head_w"), (n, hd, h), ("layers", "hidden", "kv_heads"), lin(hd)),
                param((br, "scalar_head_b"), (n, h), ("layers", "kv_heads"), lin(hd))]
        out += ffn(br, "proj_mlp2", (n, nb), ("layers", "blocks"), it)
        out += [param((br, "proj_out_w"), (n, hd, out_dim), ("layers", "hidden", "kv_out"), out_init),
                param((br, "proj_out_b"), (n, out_dim), ("layers", "kv_out"), out_init),
                param((br, "gate_logit"), (n,), ("layers",), ZEROS)]
    return tuple(out)


def tensor_table(cfg: C2CConfig, s: ModelConfig, r: ModelConfig) -> Table:
    """The file name of every parameter (see `export_format`); shapes come from `param_layout`."""
    layers, _ = c2c_layers(cfg, s, r)
    names = []
    for br in ("key", "value"):
        for j, l in enumerate(layers):
            p = f"{br}.layers.{l}."
            names += [(p + "in_proj.weight", (br, "in_w"), (j,), "linear"), (p + "in_proj.bias", (br, "in_b"), (j,), "copy")]
            for ffn in ("mlp1", "scalar_mlp2"):
                names += [(f"{p}{ffn}.{w}.weight", (br, ffn, w), (j,), "copy" if w == "norm" else "linear")
                          for w in ("norm", "w1", "w2")]
            names += [(p + "scalar_head.weight", (br, "scalar_head_w"), (j,), "linear"),
                      (p + "scalar_head.bias", (br, "scalar_head_b"), (j,), "copy")]
            for b in range(cfg.num_layers - 2):
                names += [(f"{p}proj_mlp2.{b}.{w}.weight", (br, "proj_mlp2", w), (j, b), "copy" if w == "norm" else "linear")
                          for w in ("norm", "w1", "w2")]
            names += [(p + "proj_out.weight", (br, "proj_out_w"), (j,), "linear"),
                      (p + "proj_out.bias", (br, "proj_out_b"), (j,), "copy"),
                      (p + "gate_logit", (br, "gate_logit"), (j,), "copy")]
    return table_from(param_layout(cfg, s, r), names)
