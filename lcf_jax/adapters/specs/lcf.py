"""LCF's spec (shared context): its config, which receiver layers carry an adapter and at what rank, and
the file name of every parameter. No JAX here: the Flax half (`adapters/lcf.py`), the exported format and
the PyTorch half all read these."""
from __future__ import annotations

import dataclasses
from typing import NamedTuple, Optional

import numpy as np

from lcf_jax.adapters.layer_map import LAYER_MAP_KINDS, adapter_layer_plan, layer_map
from lcf_jax.adapters.specs.base import (ONES, ZEROS, Param, Table, constant, lecun_normal, normal, param,
                                         table_from)
from lcf_jax.models.config import ACTIVATIONS, ModelConfig

KIND = "lcf"
SHARED_CONTEXT = True   # the role (`adapters.interface`): fuse a shared context, or send a message
PRUNABLE = True   # layers/ranks set by pruning (`adapters/prune.py`); its files say `pruned`
TORCH_HALF = "lcf_jax.torch.lcf:LCFAdapter"   # the PyTorch module that loads its exported files
# Fields a file must carry; the others take the dataclass defaults (older files lack them).
REQUIRED_IN_FILE = ("rank", "layer_map", "activation", "eps")


@dataclasses.dataclass(frozen=True)
class LCFConfig:
    rank: int = 256
    layer_map: str = "last_aligned"
    activation: str = "silu"
    gate_init: float = 0.0           # initial gate logit (sigmoid(0) = 0.5; W_up = 0 keeps init a no-op)
    backend: str = "auto"            # compress_translate backend
    block_tokens: Optional[int] = None
    eps: float = 1e-6
    zero_init_up: bool = True        # False: W_up ~ N(0, up_init_std^2) (tests, benchmarks)
    up_init_std: float = 0.02
    # Set by pruning (or by hand): receiver layers carrying an adapter (None: every layer with a
    # source) and their ranks (None: `rank` everywhere).
    layers: Optional[tuple[int, ...]] = None
    ranks: Optional[tuple[int, ...]] = None
    disabled: tuple[int, ...] = ()   # receiver layers whose gate is forced to exactly 0 (enabled = 0)
    joint_kv: bool = True            # False: separate K and V bottlenecks (the ablation; see the docstring)

    kind = "lcf"

    def __post_init__(self):
        if self.layer_map not in LAYER_MAP_KINDS:
            raise ValueError(f"LCFConfig.layer_map must be one of {LAYER_MAP_KINDS}, got {self.layer_map!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"LCFConfig.activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        if self.rank <= 0:
            raise ValueError(f"LCFConfig.rank must be positive, got {self.rank}")
        for name in ("layers", "ranks", "disabled"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, tuple):
                object.__setattr__(self, name, tuple(int(x) for x in v))
        if self.ranks is not None:
            if self.layers is None or len(self.ranks) != len(self.layers):
                raise ValueError("LCFConfig.ranks needs LCFConfig.layers of the same length "
                                 f"(got layers={self.layers}, ranks={self.ranks})")
            if min(self.ranks, default=1) <= 0:
                raise ValueError(f"LCFConfig.ranks must be positive, got {self.ranks}")


CONFIG = LCFConfig


class LCFGroup(NamedTuple):
    name: str                       # params key, "r<rank>"
    rank: int
    index: tuple[int, ...]          # positions in the resolved adapter-layer list
    receiver_layers: tuple[int, ...]
    sharer_layers: tuple[int, ...]


def adapter_layers(cfg: LCFConfig, sharer_cfg: ModelConfig, receiver_cfg: ModelConfig):
    """(receiver layers with an adapter, their sharer source layers, their ranks), in layer order."""
    try:
        return adapter_layer_plan(cfg.layer_map, sharer_cfg.num_layers, receiver_cfg.num_layers, cfg.layers,
                                  cfg.ranks, cfg.rank)
    except ValueError as e:
        raise ValueError(f"LCFConfig: {e}") from e


def lcf_groups(cfg: LCFConfig, sharer_cfg: ModelConfig, receiver_cfg: ModelConfig) -> tuple[LCFGroup, ...]:
    layers, sources, ranks = adapter_layers(cfg, sharer_cfg, receiver_cfg)
    groups = []
    for r in sorted(set(ranks), reverse=True):
        idx = tuple(i for i, x in enumerate(ranks) if x == r)
        groups.append(LCFGroup(f"r{r}", r, idx, tuple(layers[i] for i in idx), tuple(sources[i] for i in idx)))
    return tuple(groups)


def lcf_enabled(cfg: LCFConfig, sharer_cfg: ModelConfig, receiver_cfg: ModelConfig) -> np.ndarray:
    """float32 [n adapter layers] 0/1: 0 for layers in `cfg.disabled`."""
    layers, _, _ = adapter_layers(cfg, sharer_cfg, receiver_cfg)
    return np.array([0.0 if l in cfg.disabled else 1.0 for l in layers], np.float32)


layer_plan = adapter_layers   # the kind-independent name `export_format.layer_plan` calls


def layer_layout(cfg: LCFConfig, s: ModelConfig, r: ModelConfig) -> dict:
    """The "layer_map" section of adapter.json."""
    layers, sources, ranks = adapter_layers(cfg, s, r)
    return {"kind": cfg.layer_map, "receiver_to_sharer": list(layer_map(s.num_layers, r.num_layers, cfg.layer_map)),
            "receiver_layers": list(layers), "sharer_layers": list(sources), "ranks": list(ranks),
            "disabled": list(cfg.disabled or ())}


def param_layout(cfg: LCFConfig, s: ModelConfig, r: ModelConfig) -> tuple[Param, ...]:
    """Every parameter (path, shape, logical axes, init), in the order the Flax init draws them: one group of
    adapter layers per rank, "r<rank>", each leaf stacked on a leading "layers" axis (see `adapters/lcf.py`)."""
    kv_in, kv_out, h = 2 * s.kv_width, 2 * r.kv_width, r.num_kv_heads
    up = ZEROS if cfg.zero_init_up else normal(cfg.up_init_std)
    down = lecun_normal(-2, -1, (0,))
    out: list[Param] = []
    for g in lcf_groups(cfg, s, r):
        n, rk = len(g.index), g.rank
        P = lambda leaf, shape, axes, init: param((g.name, leaf), (n,) + shape, ("layers",) + axes, init)  # noqa: E731
        if cfg.joint_kv:
            out += [P("w_down", (kv_in, rk), ("kv_in", "rank"), down), P("b_down", (rk,), ("rank",), ZEROS),
                    P("norm", (rk,), ("rank",), ONES), P("w_up", (rk, kv_out), ("rank", "kv_out"), up),
                    P("b_up", (kv_out,), ("kv_out",), ZEROS)]
        else:   # the separate-K/V ablation: a bottleneck each, half as wide on both sides
            for part in ("k", "v"):
                out += [P(f"w_down_{part}", (kv_in // 2, rk), ("kv_in", "rank"), down),
                        P(f"b_down_{part}", (rk,), ("rank",), ZEROS), P(f"norm_{part}", (rk,), ("rank",), ONES),
                        P(f"w_up_{part}", (rk, kv_out // 2), ("rank", "kv_out"), up),
                        P(f"b_up_{part}", (kv_out // 2,), ("kv_out",), ZEROS)]
        out += [P("head_k", (h,), ("kv_heads",), ONES), P("head_v", (h,), ("kv_heads",), ONES),
                P("gate_logit", (), (), constant(cfg.gate_init))]
    return tuple(out)


def tensor_table(cfg: LCFConfig, s: ModelConfig, r: ModelConfig) -> Table:
    """The file name of every parameter (see `export_format`); shapes come from `param_layout`."""
    if not cfg.joint_kv:
        raise ValueError("LCFConfig.joint_kv=False (the separate-K/V ablation) has no exported format")
    names = []
    for g in lcf_groups(cfg, s, r):
        for j, l in enumerate(g.receiver_layers):
            names += [(f"layers.{l}.{name}", (g.name, leaf), (j,), transform) for name, leaf, transform in (
                ("w_down.weight", "w_down", "linear"), ("w_down.bias", "b_down", "copy"),
                ("norm.weight", "norm", "copy"), ("w_up.weight", "w_up", "linear"), ("w_up.bias", "b_up", "copy"),
                ("head_k", "head_k", "copy"), ("head_v", "head_v", "copy"), ("gate_logit", "gate_logit", "copy"))]
    return table_from(param_layout(cfg, s, r), names)
