"""Cloud TPU slice types: names, chip counts, gcloud accelerator types, runtime versions, topologies.

Naming conventions (Cloud TPU docs, "TPU versions" / "TPU software versions"):
  v4-N, v5p-N      N counts TensorCores; each chip has 2 (megacore), so the slice has N/2 chips
                   (e.g. v5p-32 = 16 chips). accelerator-type is the same string.
  v5e-N            N counts chips (one TensorCore each); gcloud's accelerator-type is v5litepod-N.
  v6e-N            N counts chips (Trillium, one TensorCore each); accelerator-type v6e-N.
JAX sees one device per chip on all four (megacore on v4/v5p), so the mesh must cover `chips` devices.

Runtime (software) versions for JAX: v4 tpu-ubuntu2204-base, v5e v2-alpha-tpuv5-lite,
v5p v2-alpha-tpuv5, v6e v2-alpha-tpuv6e.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

# chips -> 2D topology of the v5e / v6e slice shapes (docs: "supported 2D slice shapes")
_TOPO_2D = {1: "1x1", 4: "2x2", 8: "2x4", 16: "4x4", 32: "4x8", 64: "8x8", 128: "8x16", 256: "16x16"}
# chips -> 3D topology of common v4 / v5p slices (docs tables; other sizes exist and are accepted
# without a topology, which only disables the TPU ahead-of-time compile)
_TOPO_3D = {4: "2x2x1", 8: "2x2x2", 16: "2x2x4", 32: "2x4x4", 64: "4x4x4", 128: "4x4x8", 192: "4x4x12",
            256: "4x8x8", 512: "8x8x8", 768: "8x8x12", 1024: "8x8x16", 2048: "8x16x16", 4096: "16x16x16",
            6144: "16x16x24"}


@dataclasses.dataclass(frozen=True)
class Family:
    name: str  # "v5e"
    aliases: tuple  # prefixes accepted on the command line
    gcloud_prefix: str  # accelerator-type prefix
    n_counts: str  # "chips" | "cores"
    runtime_version: str
    hbm_gib: float  # per chip
    jax_topology_prefix: str  # for jax.experimental.topologies.get_topology_desc ("v5e:4x8")
    chip_config: str  # "default" | "megacore"
    max_n: int

    def valid_n(self, n: int) -> bool:
        if n < 1 or n > self.max_n:
            return False
        if self.n_counts == "chips":
            return n in _TOPO_2D
        return n >= 8 and n % 8 == 0  # whole hosts of 4 chips (8 cores)

    def sizes_hint(self) -> str:
        if self.n_counts == "chips":
            return "N in " + ", ".join(str(n) for n in _TOPO_2D) + " (N = chips)"
        return f"N a multiple of 8 up to {self.max_n} (N = TensorCores, chips = N/2)"


FAMILIES = (
    Family("v4", ("v4",), "v4", "cores", "tpu-ubuntu2204-base", 32.0, "v4", "megacore", 8192),
    Family("v5e", ("v5e", "v5litepod"), "v5litepod", "chips", "v2-alpha-tpuv5-lite", 16.0, "v5e", "default", 256),
    Family("v5p", ("v5p",), "v5p", "cores", "v2-alpha-tpuv5", 95.0, "v5", "megacore", 12288),
    Family("v6e", ("v6e",), "v6e", "chips", "v2-alpha-tpuv6e", 32.0, "v6e", "default", 256),
)


@dataclasses.dataclass(frozen=True)
class Slice:
    name: str  # as given, normalised ("v5e-32")
    family: Family
    n: int

    @property
    def chips(self) -> int:
        return self.n if self.family.n_counts == "chips" else self.n // 2

    @property
    def accelerator_type(self) -> str:
        return f"{self.family.gcloud_prefix}-{self.n}"

    @property
    def runtime_version(self) -> str:
        return self.family.runtime_version

    @property
    def topology(self) -> Optional[str]:
        table = _TOPO_2D if self.family.n_counts == "chips" else _TOPO_3D
        return table.get(self.chips)

    @property
    def jax_topology_name(self) -> Optional[str]:
        return f"{self.family.jax_topology_prefix}:{self.topology}" if self.topology else None

    def describe(self) -> str:
        topo = f", topology {self.topology}" if self.topology else ""
        unit = "" if self.family.n_counts == "chips" else f" ({self.n} TensorCores)"
        return (f"{self.name} = accelerator-type {self.accelerator_type}: {self.chips} chips{unit} "
                f"(TPU {self.family.name}{topo}, {self.family.hbm_gib:g} GiB HBM per chip), "
                f"runtime {self.runtime_version}")


def supported() -> str:
    return "; ".join(f"{'-N / '.join(f.aliases)}-N: {f.sizes_hint()}" for f in FAMILIES)


class UnknownSliceError(ValueError):
    pass


def parse(name: str) -> Slice:
    """'v5e-32' / 'v5litepod-32' / 'v4-64' / 'v5p-128' / 'v6e-16' -> Slice; raises listing supported types."""
    raw = name.strip().lower()
    prefix, sep, num = raw.rpartition("-")
    for fam in FAMILIES:
        if sep and prefix in fam.aliases and num.isdigit():
            n = int(num)
            if not fam.valid_n(n):
                raise UnknownSliceError(f"TPU type {name!r}: {fam.name} slices need {fam.sizes_hint()}. "
                                        f"Supported TPU types: {supported()}")
            return Slice(f"{fam.name}-{n}", fam, n)
    raise UnknownSliceError(f"unknown TPU type {name!r}. Supported TPU types: {supported()}")
