"""One spec per adapter kind, JAX-free: its config dataclass, its layer plan, the adapter.json layer
section, every parameter's path, shape, logical axes and initialiser (`param_layout`) and file name
(`tensor_table`). `SPECS` is the only place a kind string maps to a spec;
the Flax halves (`adapters/<kind>.py`), the exported format and the PyTorch halves derive from these."""
from __future__ import annotations

from types import ModuleType

from lcf_jax.adapters.specs import c2c, lcf, lcfx

SPECS: dict[str, ModuleType] = {m.KIND: m for m in (lcf, lcfx, c2c)}
CONFIGS: dict[str, type] = {kind: m.CONFIG for kind, m in SPECS.items()}
