"""Where the checkout lives: the one place the repository root is decided.

`LCF_JAX_ROOT` overrides it (an installed package run from elsewhere, a pod's staging directory); otherwise
it is the directory above the package, which `pip install -e .` keeps as the checkout.
"""
from __future__ import annotations

import os
from pathlib import Path

ROOT_ENV = "LCF_JAX_ROOT"


def repo_root() -> Path:
    """The repository root: $LCF_JAX_ROOT, or the directory holding the lcf_jax package."""
    env = os.environ.get(ROOT_ENV)
    return Path(env).resolve() if env else Path(__file__).resolve().parent.parent
