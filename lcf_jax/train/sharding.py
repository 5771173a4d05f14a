"""The mesh and the ONE table that maps logical axis names to mesh axes.

Every weight and activation carries logical names (`models/transformer.PARAM_AXES`, the adapters'
`*_param_axes`; batches by `batch_sharding` below); only this file knows how they land on devices. A dimension
whose size the mesh axis does not divide is replicated instead (e.g. Gemma3's single KV head).
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from lcf_jax.data.batches import map_rows
from lcf_jax.train.mesh_shape import check_batch, resolve_mesh

MESH_AXES = ("data", "model")

# logical axis -> mesh axis (None: replicated). Adapter ranks and model hidden widths shard over
# "model" (tensor parallel); the batch over "data".
LOGICAL_RULES: dict[str, Optional[str]] = {
    "batch": "data",
    "vocab": "model",
    "mlp": "model",
    "q_heads": "model",
    "kv_heads": None,
    "head_dim": None,
    "embed": None,
    "layers": None,
    "seq": None,
    # adapters
    "rank": "model",
    "kv_in": None,
    "kv_out": None,
    "rank_in": None,
    "slots": None,
    "locator": None,
    "heads": None,
    "units": None,
    "blocks": None,
    "hidden": "model",
    "sharer_layers": None,
    "receiver_layers": None,
    "cond_layers": None,
}


def make_mesh(data: int = -1, model: int = 1, devices: Optional[Sequence[Any]] = None) -> Mesh:
    """A (data, model) mesh over all (or the given) devices; -1 fills the axis with what is left."""
    devices = list(devices if devices is not None else jax.devices())
    data, model = resolve_mesh(data, model, len(devices))
    return Mesh(np.array(devices).reshape(data, model), MESH_AXES, axis_types=(AxisType.Auto,) * 2)


def logical_to_spec(axes: Sequence[Optional[str]], shape: Sequence[int], mesh: Mesh,
                    rules: dict[str, Optional[str]] = LOGICAL_RULES) -> P:
    if len(axes) != len(shape):
        raise ValueError(f"logical axes {tuple(axes)} do not match shape {tuple(shape)}")
    spec, used = [], set()
    for name, size in zip(axes, shape):
        if name is not None and name not in rules:
            raise KeyError(f"logical axis {name!r} has no entry in LOGICAL_RULES")
        mesh_axis = rules.get(name) if name else None
        if mesh_axis is None or mesh_axis in used or size % mesh.shape[mesh_axis]:
            spec.append(None)
        else:
            spec.append(mesh_axis)
            used.add(mesh_axis)
    return P(*spec)


def tree_shardings(tree: Any, axes: Any, mesh: Mesh) -> Any:
    """NamedShardings for a pytree of arrays (or ShapeDtypeStructs) given a matching tree of axes."""
    return jax.tree.map(lambda x, ax: NamedSharding(mesh, logical_to_spec(ax, x.shape, mesh)), tree, axes,
                        is_leaf=lambda x: isinstance(x, tuple) and all(isinstance(a, (str, type(None))) for a in x))


def replicated(tree: Any, mesh: Mesh) -> Any:
    return jax.tree.map(lambda _: NamedSharding(mesh, P()), tree)


def batch_sharding(batch, mesh: Mesh):
    """Shardings of a batch (`data.batches`): the batch axis over "data" when divisible, everything else
    replicated. The batch axis is axis 0, but axis 1 in a precomputed or stored cache ([layers, batch, ...])."""
    n = mesh.shape["data"]

    def one(x, axis=0):
        if np.ndim(x) <= axis or x.shape[axis] % n:
            return NamedSharding(mesh, P())
        spec = [None] * np.ndim(x)
        spec[axis] = "data"
        return NamedSharding(mesh, P(*spec))

    return map_rows(one, batch)


def check_global_batch(global_batch: int, mesh: Mesh) -> None:
    check_batch(global_batch, mesh.shape["data"])


def put_global(tree, shardings):
    """Host values -> global arrays. Every process holds the same full value (the feed is deterministic in
    (seed, step)), so the global shape is the local shape and each device takes its own slice; without
    `global_shape` JAX would treat each process's rows as distinct and multiply the global batch by the
    process count. Arrays that are already global (restored from a checkpoint) are kept as they are."""
    def one(x, s):
        if jax.process_count() == 1:
            return jax.device_put(x, s)
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return x if x.sharding == s else jax.device_put(x, s)
        x = np.asarray(x)
        return jax.make_array_from_process_local_data(s, x, x.shape)
    return jax.tree.map(one, tree, shardings)
