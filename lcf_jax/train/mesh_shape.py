"""The (data, model) mesh shape for a device count, and the batch it can split: JAX-free, so the pod
launcher checks a run before any machine starts with the same rules the training run applies."""
from __future__ import annotations


class MeshShapeError(ValueError):
    """A mesh or batch that does not fit the devices; the message names the setting and a value that fits."""


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def resolve_mesh(mesh_data: int, mesh_model: int, devices: int, where: str = "this host") -> tuple[int, int]:
    """(data, model) for `devices` devices (mesh.data=-1 fills what is left), or a MeshShapeError."""
    if mesh_model <= 0 or devices % mesh_model:
        raise MeshShapeError(
            f"mesh.model={mesh_model} does not divide the {devices} devices of {where}: the model axis must be "
            f"one of {_divisors(devices)} (mesh.data=-1 then fills the rest)")
    if mesh_data == -1:
        return devices // mesh_model, mesh_model
    if mesh_data <= 0 or mesh_data * mesh_model != devices:
        raise MeshShapeError(
            f"mesh.data={mesh_data}: data x model = {mesh_data} x {mesh_model} = {mesh_data * mesh_model} devices, "
            f"but {where} has {devices}: set mesh.data={devices // mesh_model} (or -1 to fill)")
    return mesh_data, mesh_model


def check_batch(batch: int, data: int) -> None:
    """The global batch splits evenly over the data axis, or a MeshShapeError with the nearest multiples."""
    if batch % data:
        lo, hi = (batch // data) * data, (batch // data + 1) * data
        raise MeshShapeError(
            f"data.batch_size={batch} is not divisible by the mesh data axis ({data}): use a multiple of {data} "
            f"(e.g. {lo or hi} or {hi}), or change mesh.data / mesh.model")
