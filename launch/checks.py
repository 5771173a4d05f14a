"""Checks made before anything is reserved: config, mesh vs slice, batch vs data axis, models, AOT compile."""
from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Optional

from lcf_jax.paths import repo_root
from lcf_jax.train import mesh_shape

ROOT = repo_root()


class LaunchError(ValueError):
    """A problem found before launching; the message says what to change."""


@dataclasses.dataclass
class Plan:
    """What the checks resolved: the config and the mesh it will run on."""
    cfg: object
    devices: int
    data: int
    model: int
    batch: int
    notes: list  # (label, text) lines for the report
    warnings: list


def resolve_mesh(mesh_data: int, mesh_model: int, devices: int, where: str) -> tuple[int, int]:
    """(data, model) for `devices` devices, or a LaunchError naming the axis that does not fit."""
    try:
        return mesh_shape.resolve_mesh(mesh_data, mesh_model, devices, where)
    except mesh_shape.MeshShapeError as e:
        raise LaunchError(str(e)) from None


def check_batch(batch: int, data: int) -> None:
    try:
        mesh_shape.check_batch(batch, data)
    except mesh_shape.MeshShapeError as e:
        raise LaunchError(str(e)) from None


def check_models(cfg) -> list[str]:
    """Warnings for models the run cannot load weights for (config-only presets); errors for unknown names."""
    from lcf_jax.models import registry

    warnings = []
    for role in ("sharer", "receiver"):
        name = cfg.model[role]
        if name in registry.TINY_CONFIGS or name in registry.BUNDLED:
            continue
        if name in registry.PRESET_CONFIGS:
            warnings.append(
                f"model.{role}={name!r} is a config-only preset: registry.load_any() has no weights for it, so "
                f"`python -m lcf_jax.train` stops in build() until converted weights are wired into the registry "
                f"(the compile check uses its shapes only)")
        else:
            raise LaunchError(f"model.{role}={name!r} is unknown: bundled {sorted(registry.BUNDLED)}, presets "
                              f"{sorted(registry.PRESET_CONFIGS)}, tiny {sorted(registry.TINY_CONFIGS)}")
    return warnings


def load_config(config_path: str, overrides: list[str]):
    from lcf_jax.train import config as config_lib

    try:
        return config_lib.parse_argv([f"--config={config_path}", *overrides])
    except (KeyError, TypeError, ValueError, FileNotFoundError, AttributeError) as e:
        raise LaunchError(f"config {config_path} {' '.join(overrides)}: {e}") from e


def plan(config_path: str, overrides: list[str], devices: int, where: str) -> Plan:
    cfg = load_config(config_path, overrides)
    warnings = []
    used = int(cfg.mesh.get("num_devices", 0) or 0)  # 0 = every device; N = the first N
    if used > devices:
        raise LaunchError(f"mesh.num_devices={used} exceeds the {devices} devices of {where}: set it to 0 (all)")
    if 0 < used < devices:
        warnings.append(f"mesh.num_devices={used}: the run uses only {used} of the {devices} devices of {where}")
        devices, where = used, f"{where} (mesh.num_devices={used})"
    data, model = resolve_mesh(cfg.mesh.data, cfg.mesh.model, devices, where)
    check_batch(cfg.data.batch_size, data)
    warnings += check_models(cfg)
    notes = [
        ("config", f"ok: {cfg.model.sharer} -> {cfg.model.receiver}, adapter {cfg.adapter.kind}, "
                   f"{cfg.train.steps} steps, compute {cfg.train.compute_dtype}"),
        ("mesh", f"ok: data={data} x model={model} = {devices} devices "
                 f"(config: mesh.data={cfg.mesh.data}, mesh.model={cfg.mesh.model})"),
        ("batch", f"ok: global batch {cfg.data.batch_size} = {cfg.data.batch_size // data} per data shard x {data}"),
    ]
    return Plan(cfg, devices, data, model, cfg.data.batch_size, notes, warnings)


# --- ahead-of-time compile -------------------------------------------------------------------------

def scaled_mesh(data: int, model: int, batch: int, max_devices: int) -> tuple[int, int, int]:
    """(data', model, batch') with data' | data, data' * model <= max_devices, same per-shard batch."""
    if model > max_devices:
        raise LaunchError(f"mesh.model={model} exceeds --max-cpu-devices={max_devices}: cannot check on CPU")
    d = max(x for x in range(1, data + 1) if data % x == 0 and x * model <= max_devices)
    return d, model, batch // data * d


def _child_env(devices: int) -> dict:
    env = dict(os.environ)
    flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "", env.get("XLA_FLAGS", "")).strip()
    if flags:
        env["XLA_FLAGS"] = flags
    else:
        env.pop("XLA_FLAGS", None)
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    for k in ("LCF_COORDINATOR", "LCF_NUM_PROCESSES", "LCF_PROCESS_ID", "LCF_NUM_CPU_DEVICES"):
        env.pop(k, None)
    return env


def aot_compile(config_path: str, overrides: list[str], data: int, model: int, batch: int,
                tpu_topology: Optional[str] = None, chip_config: str = "default", timeout: int = 900) -> dict:
    """Runs launch/aot.py in a subprocess with data*model CPU devices; returns its AOT_RESULT dict."""
    config_path = str(Path(config_path).resolve())  # the child runs in the repository root
    cmd = [sys.executable, "-m", "launch.aot", f"--mesh-data={data}", f"--mesh-model={model}", f"--batch={batch}",
           f"--chip-config={chip_config}"]
    if tpu_topology:
        cmd.append(f"--tpu-topology={tpu_topology}")
    cmd += [f"--config={config_path}", *overrides]
    try:
        p = subprocess.run(cmd, cwd=ROOT, env=_child_env(data * model), capture_output=True, text=True,
                           timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise LaunchError(f"AOT compile did not finish within {timeout} s (raise --compile-timeout or use "
                          f"--skip-compile)") from e
    lines = [l for l in p.stdout.splitlines() if l.startswith("AOT_RESULT ")]
    if p.returncode != 0 or not lines:
        raise LaunchError(f"AOT compile subprocess failed (rc={p.returncode}):\n{p.stderr[-3000:]}")
    return json.loads(lines[-1][len("AOT_RESULT "):])


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def describe_aot(result: dict, hbm_gib: Optional[float], scaled_note: str) -> tuple[list, list]:
    """(notes, warnings) lines describing an AOT_RESULT."""
    notes, warnings = [], []
    if result.get("tpu_error"):
        notes.append(("tpu aot", f"unavailable here: {result['tpu_error']} (jax.experimental.topologies needs "
                                 f"libtpu, i.e. `pip install jax[tpu]`; checked on a CPU mesh instead)"))
    for target in ("tpu", "cpu"):
        r = result.get(target)
        if not r:
            continue
        mesh = " x ".join(f"{k}={v}" for k, v in r["mesh"].items())
        notes.append((f"{target} aot", f"ok: train step lowered and compiled for {_n(r)} "
                                       f"{r['platform']} devices, mesh {mesh}, global batch {r['global_batch']}"
                                       f"{scaled_note if target == 'cpu' else ''}"))
        shapes = ", ".join(f"{k} {tuple(v)}" for k, v in r["batch_shapes"].items()
                           if k in ("sharer_ids", "receiver_ctx_ids", "receiver_ids"))
        notes.append(("inputs", f"{shapes} (lengths from data.max_sharer_len, data.max_prompt_len + "
                                f"data.max_target_len)"))
        notes.append(("params", f"adapter {r['adapter_params']:,} trainable, frozen {r['frozen_params']:,}"))
        mem = r.get("memory_per_device")
        if mem and "peak_estimate_bytes" in mem:
            notes.append(("memory", f"per device ({r['platform']} compiler estimate): arguments "
                                    f"{gib(mem['argument_size_in_bytes'])} + temporaries "
                                    f"{gib(mem['temp_size_in_bytes'])} + outputs "
                                    f"{gib(mem['output_size_in_bytes'] - mem['alias_size_in_bytes'])} "
                                    f"(not aliased) = {gib(mem['peak_estimate_bytes'])}"))
            if hbm_gib and mem["peak_estimate_bytes"] > hbm_gib * 2**30:
                warnings.append(
                    f"the {r['platform']} compiler's per-device estimate {gib(mem['peak_estimate_bytes'])} exceeds "
                    f"the {hbm_gib:g} GiB HBM per chip"
                    + (" (a CPU estimate: XLA:TPU fuses and rematerialises differently, so treat it as a hint)"
                       if target == "cpu" else "")
                    + "; temporaries scale with the per-device batch and data.max_sharer_len (a larger slice or a "
                      "smaller data.batch_size lowers them); mesh.shard_frozen=True with mesh.model>1 only "
                      "shrinks the replicated frozen weights (arguments)")
        elif mem:
            notes.append(("memory", f"memory_analysis: {mem}"))
        else:
            notes.append(("memory", "memory_analysis() not available for this backend"))
    if result.get("cpu_error"):
        raise LaunchError(f"train step failed to lower/compile on the CPU mesh: {result['cpu_error']}\n"
                          f"{result.get('cpu_traceback', '')}")
    return notes, warnings


def _n(r: dict) -> int:
    n = 1
    for v in r["mesh"].values():
        n *= v
    return n
