"""One entry point for multi-process JAX: TPU pods, GPU clusters, one machine, CPU.

Call :func:`initialize` first thing in a training script, before anything that
touches a JAX backend (``jax.devices()``, array creation, jit, ...)::

    from lcf_jax.train import distributed
    distributed.initialize()                   # TPU pod / Slurm / Open MPI: auto-detected
    distributed.initialize("10.0.0.1:1234", 4, rank)           # explicit GPU cluster
    LCF_COORDINATOR=127.0.0.1:12345 LCF_NUM_PROCESSES=2 LCF_PROCESS_ID=0 python train.py
    distributed.initialize("127.0.0.1:12345", 2, 0, num_cpu_devices=4)   # CPU processes

Resolution order for each argument: explicit argument, then ``LCF_*`` env var
(``LCF_COORDINATOR``, ``LCF_NUM_PROCESSES``, ``LCF_PROCESS_ID``,
``LCF_LOCAL_DEVICE_IDS`` (comma list), ``LCF_NUM_CPU_DEVICES``), then JAX's own
cluster auto-detection (Cloud TPU, Slurm, Open MPI; JAX also reads
``JAX_COORDINATOR_ADDRESS``). With a single process and no cluster environment
this is a no-op (apart from applying ``num_cpu_devices``).

CPU: cross-process collectives need ``jax_cpu_collectives_implementation`` =
"gloo" (the default in this JAX; set explicitly if unset), and the per-process
CPU device count (``jax_num_cpu_devices``) must be set before the backend
starts, which this function does when ``num_cpu_devices`` is given.

Caveat (JAX behaviour): under Slurm/Open MPI JAX defaults to ONE GPU per
process (``local_device_ids=[local rank]``); with one task per node and several
GPUs, pass ``local_device_ids`` (or ``LCF_LOCAL_DEVICE_IDS``) explicitly.
"""
from __future__ import annotations

import logging
import os
from typing import NamedTuple, Sequence

import jax

__all__ = ["initialize", "process_info", "ProcessInfo", "is_initialized"]

log = logging.getLogger(__name__)


class ProcessInfo(NamedTuple):
    process_index: int
    process_count: int
    local_devices: list
    global_devices: list


def _env_int(name: str) -> int | None:
    v = os.environ.get(name, "").strip()
    if not v:
        return None
    try:
        return int(v)
    except ValueError as e:
        raise ValueError(f"{name}={v!r} is not an integer") from e


def _env_ids(name: str) -> list[int] | None:
    v = os.environ.get(name, "").strip()
    if not v:
        return None
    return [int(x) for x in v.split(",") if x.strip()]


def _backend_initialized() -> bool:
    try:
        from jax._src import xla_bridge
        return bool(xla_bridge.backends_are_initialized())
    except Exception:  # private API moved: let jax.distributed report it
        return False


def _detect_cluster() -> tuple[str, int | None] | None:
    """(cluster name, process count or None) of an auto-detectable environment, else None.

    Uses JAX's own detectors for Cloud TPU, Slurm and Open MPI. Kubernetes and
    mpi4py are skipped here (a k8s pod is not necessarily a JAX job); request
    them with ``cluster_detection_method``.
    """
    try:
        from jax._src import clusters
    except Exception:
        clusters = None
    if clusters is not None:
        for env in list(clusters.ClusterEnv._cluster_types):
            name = getattr(env, "name", "") or env.__name__
            if getattr(env, "opt_in_only_method", False) or name in ("", "K8sCluster", "k8s"):
                continue
            try:
                present = env.is_env_present()
            except Exception:
                present = False
            if not present:
                continue
            try:
                count = int(env.get_process_count())
            except Exception:
                count = None
            return name, count
        return None
    # Fallback heuristics if JAX's private module moved.
    if all(k in os.environ for k in ("SLURM_JOB_ID", "SLURM_NTASKS", "SLURM_PROCID")):
        return "slurm", int(os.environ["SLURM_NTASKS"])
    if "OMPI_MCA_orte_hnp_uri" in os.environ:
        return "ompi", _env_int("OMPI_COMM_WORLD_SIZE")
    return None


def is_initialized() -> bool:
    return jax.distributed.is_initialized()


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    local_device_ids: int | Sequence[int] | None = None,
    *,
    num_cpu_devices: int | None = None,
    cluster_detection_method: str | None = None,
    initialization_timeout: int = 300,
) -> bool:
    """Initialise multi-process JAX when needed; return True if it is (now) initialised.

    Idempotent: a second call after a successful one returns True and does nothing.
    """
    if jax.distributed.is_initialized():
        return True

    coordinator_address = coordinator_address or os.environ.get("LCF_COORDINATOR") or None
    if num_processes is None:
        num_processes = _env_int("LCF_NUM_PROCESSES")
    if process_id is None:
        process_id = _env_int("LCF_PROCESS_ID")
    if local_device_ids is None:
        local_device_ids = _env_ids("LCF_LOCAL_DEVICE_IDS")
    elif isinstance(local_device_ids, int):
        local_device_ids = [local_device_ids]
    if num_cpu_devices is None:
        num_cpu_devices = _env_int("LCF_NUM_CPU_DEVICES")

    if num_cpu_devices is not None:
        if _backend_initialized():
            raise RuntimeError(
                "num_cpu_devices must be set before the JAX backend starts: call "
                "lcf_jax.train.distributed.initialize() before jax.devices()/any computation"
            )
        jax.config.update("jax_num_cpu_devices", int(num_cpu_devices))

    explicit = any(v is not None for v in (coordinator_address, num_processes, process_id)) or bool(
        os.environ.get("JAX_COORDINATOR_ADDRESS")
    )
    cluster = None
    if cluster_detection_method is None and not explicit:
        cluster = _detect_cluster()
        if cluster is None:
            log.debug("distributed.initialize: single process, no cluster environment: no-op")
            return False
        name, count = cluster
        # A one-process Slurm/MPI job needs no coordination service (and JAX
        # would restrict it to one GPU). TPU always goes through JAX.
        if count == 1 and "tpu" not in name.lower():
            log.debug("distributed.initialize: %s with one process: no-op", name)
            return False
    if explicit and num_processes == 1 and coordinator_address is None:
        return False
    if num_processes is not None and num_processes > 1 and cluster_detection_method is None:
        missing = [n for n, v in (("coordinator_address", coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS")),
                                  ("process_id", process_id)) if v is None]
        if missing and _detect_cluster() is None:
            raise ValueError(
                f"num_processes={num_processes} but {', '.join(missing)} not given "
                "(pass it or set LCF_COORDINATOR / LCF_PROCESS_ID)"
            )

    if _backend_initialized():
        raise RuntimeError(
            "lcf_jax.train.distributed.initialize() must run before any JAX call that starts a "
            "backend (jax.devices(), array creation, jit, ...)"
        )
    # Cross-process CPU collectives (harmless on GPU/TPU, where only the CPU client reads it).
    if getattr(jax.config, "jax_cpu_collectives_implementation", None) in (None, "none"):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")

    kwargs = dict(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
        local_device_ids=local_device_ids,
        initialization_timeout=initialization_timeout,
    )
    if cluster_detection_method is not None:
        kwargs["cluster_detection_method"] = cluster_detection_method
    log.info("jax.distributed.initialize(%s) [cluster=%s]", kwargs, cluster)
    jax.distributed.initialize(**kwargs)
    return True


def process_info() -> ProcessInfo:
    """(process_index, process_count, local devices, global devices). Starts the backend."""
    return ProcessInfo(jax.process_index(), jax.process_count(), jax.local_devices(), jax.devices())
