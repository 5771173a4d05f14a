"""The trained adapter shipped in the repository (adapters/), and loading any exported adapter."""
from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp

from lcf_jax.models.registry import REPO_ROOT

SHIPPED_LCFX = REPO_ROOT / "adapters" / "smollm2-135m-instruct_to_gemma3-270m_lcfx"


def load_lcfx_adapter(path: str | Path = SHIPPED_LCFX):
    """(LCFXConfig, float32 params, meta) of an exported LCF-X adapter directory."""
    from lcf_jax.adapters.export_jax import import_adapter

    path = Path(path)
    if not (path / "adapter.json").exists():
        raise FileNotFoundError(f"{path} holds no exported adapter (adapter.json); export one with "
                                "`python -m lcf_jax.export --checkpoint RUN_DIR --out DIR`")
    imported = import_adapter(path, full=True)
    if imported.kind != "lcfx":
        raise ValueError(f"{path} holds a {imported.kind} adapter; this protocol needs an lcfx adapter")
    params = jax.tree.map(lambda x: x.astype(jnp.float32), imported.params)
    return imported.config, params, imported.meta
