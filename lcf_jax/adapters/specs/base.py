"""What every adapter spec declares, JAX-free: its parameters (`Param`: path, shape, logical axes,
initialiser) and the file name of each (`Entry`). A spec's `param_layout` is the one place an adapter's
shapes are written; the Flax init, the logical axes, the shape checks and the export table's shapes are
derived from it (`adapters/common.py`, `leaf_shapes`, `table_from`)."""
from __future__ import annotations

from typing import NamedTuple, Sequence


class Init(NamedTuple):
    """A parameter's initialiser, by name (mapped to JAX in `adapters/common.flax_initializer`):
    zeros | ones | constant(value) | normal(std) | lecun_normal(in_axis, out_axis, batch_axis) |
    torch_linear(fan_in) (PyTorch nn.Linear's U(+-1/sqrt(fan_in)))."""
    name: str
    args: tuple = ()


ZEROS = Init("zeros")
ONES = Init("ones")


def constant(value: float) -> Init:
    return Init("constant", (float(value),))


def normal(std: float) -> Init:
    return Init("normal", (float(std),))


def lecun_normal(in_axis=-2, out_axis=-1, batch_axis=()) -> Init:
    return Init("lecun_normal", (in_axis, out_axis, tuple(batch_axis)))


def torch_linear(fan_in: int) -> Init:
    return Init("torch_linear", (int(fan_in),))


class Param(NamedTuple):
    path: tuple[str, ...]        # leaf of the params tree (nested dict keys)
    shape: tuple[int, ...]       # full (stacked) shape
    axes: tuple[str, ...]        # logical axis name per dim (`train/sharding.py` maps them to the mesh)
    init: Init


def param(path: tuple[str, ...] | str, shape: Sequence[int], axes: Sequence[str], init: Init) -> Param:
    path = (path,) if isinstance(path, str) else tuple(path)
    shape, axes = tuple(int(s) for s in shape), tuple(axes)
    if len(axes) != len(shape):
        raise ValueError(f"param {'/'.join(path)}: {len(axes)} axis names {axes} for shape {shape}")
    return Param(path, shape, axes, init)


def leaf_shapes(layout: Sequence[Param]) -> dict[tuple[str, ...], tuple[int, ...]]:
    return {p.path: p.shape for p in layout}


class Entry(NamedTuple):
    name: str                    # tensor name in adapter.safetensors
    shape: tuple[int, ...]       # its shape in the file
    path: tuple[str, ...]        # lcf_jax params leaf (nested dict keys)
    index: tuple[int, ...]       # index into the leaf's leading (stacked) axes
    transform: str               # "copy" | "linear" | "shift"


class Table(NamedTuple):
    entries: tuple[Entry, ...]
    leaves: dict                 # lcf_jax leaf path -> full (stacked) shape


def file_shape(leaf_shape: tuple[int, ...], index: tuple[int, ...], transform: str) -> tuple[int, ...]:
    """The file tensor's shape for the slice `index` of a leaf: "copy" keeps it, "linear" swaps the last two
    axes (a [in, out] kernel is a torch [out, in] weight), "shift" is [r, m, r] -> [m*r, r]."""
    s = tuple(leaf_shape[len(index):])
    if transform == "copy":
        return s
    if transform == "linear":
        return s[:-2] + (s[-1], s[-2])
    if transform == "shift":
        return (s[1] * s[2], s[0])
    raise ValueError(f"unknown file transform {transform!r}")


def table_from(layout: Sequence[Param], names: Sequence[tuple[str, tuple[str, ...], tuple[int, ...], str]]) -> Table:
    """The export table: (file name, leaf path, index, transform) per tensor, shapes derived from the layout."""
    leaves = leaf_shapes(layout)
    return Table(tuple(Entry(n, file_shape(leaves[p], i, t), p, i, t) for n, p, i, t in names), leaves)
