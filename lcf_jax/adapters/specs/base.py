"""What every adapter spec hands the exported format: the name table type. No JAX here."""
from __future__ import annotations

from typing import NamedTuple


class Entry(NamedTuple):
    name: str                    # tensor name in adapter.safetensors
    shape: tuple[int, ...]       # its shape in the file
    path: tuple[str, ...]        # lcf_jax params leaf (nested dict keys)
    index: tuple[int, ...]       # index into the leaf's leading (stacked) axes
    transform: str               # "copy" | "linear" | "shift"


class Table(NamedTuple):
    entries: tuple[Entry, ...]
    leaves: dict                 # lcf_jax leaf path -> full (stacked) shape
