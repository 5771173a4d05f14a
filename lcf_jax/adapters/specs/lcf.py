"""LCF's spec (shared context): its config, which receiver layers carry an adapter and at what rank, and
the file name of every parameter. No JAX here: the Flax half (`adapters/lcf.py`), the exported format and
the PyTorch half all read these."""
from __future__ import annotations

import dataclasses
from typing import NamedTuple, Optional

import numpy as np

from lcf_jax.adapters.layer_map import LAYER_MAP_KINDS, adapter_layer_plan, layer_map
from lcf_jax.adapters.specs.base import Entry, Table
from lcf_jax.models.config import ACTIVATIONS, ModelConfig

KIND = "lcf"
SHARED_CONTEXT = True
PRUNABLE = True   # layers/ranks set by pruning (`adapters/prune.py`); its files say `pruned`   # the role (`adapters.interface`): fuse a shared context, or send a message
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


def tensor_table(cfg: LCFConfig, s: ModelConfig, r: ModelConfig) -> Table:
    """The file names of every parameter (see `export_format`)."""
    kv_in, kv_out, h = 2 * s.kv_width, 2 * r.kv_width, r.num_kv_heads
    entries, leaves = [], {}
    for g in lcf_groups(cfg, s, r):
        n, rk = len(g.index), g.rank
        for leaf, shape in (("w_down", (n, kv_in, rk)), ("b_down", (n, rk)), ("norm", (n, rk)),
                            ("w_up", (n, rk, kv_out)), ("b_up", (n, kv_out)), ("head_k", (n, h)),
                            ("head_v", (n, h)), ("gate_logit", (n,))):
            leaves[(g.name, leaf)] = shape
        for j, l in enumerate(g.receiver_layers):
            p = f"layers.{l}."
            entries += [
                Entry(p + "w_down.weight", (rk, kv_in), (g.name, "w_down"), (j,), "linear"),
                Entry(p + "w_down.bias", (rk,), (g.name, "b_down"), (j,), "copy"),
                Entry(p + "norm.weight", (rk,), (g.name, "norm"), (j,), "copy"),
                Entry(p + "w_up.weight", (kv_out, rk), (g.name, "w_up"), (j,), "linear"),
                Entry(p + "w_up.bias", (kv_out,), (g.name, "b_up"), (j,), "copy"),
                Entry(p + "head_k", (h,), (g.name, "head_k"), (j,), "copy"),
                Entry(p + "head_v", (h,), (g.name, "head_v"), (j,), "copy"),
                Entry(p + "gate_logit", (), (g.name, "gate_logit"), (j,), "copy"),
            ]
    return Table(tuple(entries), leaves)
