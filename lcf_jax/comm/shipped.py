"""The trained adapter shipped in the repository (adapters/), and loading any exported LCF-X adapter."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import jax
import jax.numpy as jnp

from lcf_jax.cli_errors import UserError, one_line
from lcf_jax.paths import repo_root

SHIPPED_LCFX = repo_root() / "adapters" / "smollm2-135m-instruct_to_gemma3-270m_lcfx"


def load_lcfx_adapter(path: Optional[str | Path] = None):
    """(LCFXConfig, float32 params, meta) of an exported LCF-X adapter directory (default: the shipped one).
    A missing, unreadable or non-LCF-X directory is a UserError naming it and the fix."""
    from lcf_jax.adapters.export_jax import import_adapter

    path = Path(path) if path is not None else SHIPPED_LCFX
    if not path.is_dir():
        raise UserError(f"adapter directory {path} does not exist; export one with "
                        "`python -m lcf_jax.export --checkpoint RUN_DIR --out DIR`")
    if not (path / "adapter.json").exists():
        raise UserError(f"adapter directory {path} holds no exported adapter (adapter.json); export one with "
                        "`python -m lcf_jax.export --checkpoint RUN_DIR --out DIR`")
    try:
        imported = import_adapter(path, full=True)
    except (ValueError, TypeError) as e:  # AdapterFormatError, config values the dataclass refuses
        raise UserError(f"adapter {path}: {one_line(e)}") from e
    if imported.kind != "lcfx":
        raise UserError(f"adapter {path} holds a {imported.kind} adapter; this protocol needs an lcfx adapter "
                        "(export an LCF-X run, adapter.kind='lcfx')")
    params = jax.tree.map(lambda x: x.astype(jnp.float32), imported.params)
    return imported.config, params, imported.meta
