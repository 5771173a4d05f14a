"""Multi-process runs without a pod: N processes on this machine, and Slurm / plain-SSH recipes for GPU clusters.

All of them start the same `python -m lcf_jax.train --config=... [--config.x=y ...]` per process and
let `lcf_jax/train/distributed.py:initialize()` connect them (LCF_* env vars, or Slurm auto-detection).
"""
from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys
import threading
import time
from typing import Optional

from launch.checks import ROOT, LaunchError


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train_argv(config_path: str, overrides: list[str], python: str = sys.executable) -> list[str]:
    return [python, "-m", "lcf_jax.train", f"--config={config_path}", *overrides]


def local_env(port: int, n: int, rank: int, devices_per_process: int, base: Optional[dict] = None) -> dict:
    env = dict(os.environ if base is None else base)
    # The per-process device count comes from LCF_NUM_CPU_DEVICES; a forced host count would fight it.
    flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "", env.get("XLA_FLAGS", "")).strip()
    if flags:
        env["XLA_FLAGS"] = flags
    else:
        env.pop("XLA_FLAGS", None)
    env.update(LCF_COORDINATOR=f"127.0.0.1:{port}", LCF_NUM_PROCESSES=str(n), LCF_PROCESS_ID=str(rank),
               LCF_NUM_CPU_DEVICES=str(devices_per_process), JAX_PLATFORMS="cpu")
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def local_commands(config_path: str, overrides: list[str], n: int, devices_per_process: int, port: int) -> list[str]:
    """The per-process command lines (for --dry-run and the log)."""
    out = []
    for rank in range(n):
        env = (f"LCF_COORDINATOR=127.0.0.1:{port} LCF_NUM_PROCESSES={n} LCF_PROCESS_ID={rank} "
               f"LCF_NUM_CPU_DEVICES={devices_per_process} JAX_PLATFORMS=cpu PYTHONPATH=.")
        out.append(f"{env} {shlex.join(_train_argv(config_path, overrides, 'python'))} &")
    out.append("wait")
    return out


def _pump(stream, prefix: str, sink) -> None:
    for line in iter(stream.readline, ""):
        sink.write(f"{prefix}{line}")
        sink.flush()
    stream.close()


def run_local(config_path: str, overrides: list[str], n: int, devices_per_process: int,
              timeout: Optional[float] = None, port: Optional[int] = None, out=None) -> int:
    """Starts n processes on 127.0.0.1, streams their output prefixed with [pK], returns the worst exit code.

    If one process fails the others are stopped (they would wait for it at the next collective).
    """
    out = out or sys.stdout
    port = port or free_port()
    procs, pumps = [], []
    for rank in range(n):
        p = subprocess.Popen(_train_argv(config_path, overrides), cwd=ROOT,
                             env=local_env(port, n, rank, devices_per_process),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        procs.append(p)
        th = threading.Thread(target=_pump, args=(p.stdout, f"[p{rank}] ", out), daemon=True)
        th.start()
        pumps.append(th)
    deadline = None if timeout is None else time.monotonic() + timeout
    failed = None
    try:
        while any(p.poll() is None for p in procs):
            bad = [p for p in procs if p.poll() not in (None, 0)]
            if bad:
                failed = bad[0]
                break
            if deadline is not None and time.monotonic() > deadline:
                raise LaunchError(f"local run did not finish within {timeout:.0f} s")
            time.sleep(0.2)
    finally:
        for p in procs:  # only the processes started here, by their handles
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        for th in pumps:
            th.join(5)
    codes = [p.returncode for p in procs]
    if failed is not None or any(codes):
        out.write(f"local run failed: exit codes {codes}\n")
        return next((c for c in codes if c), 1) or 1
    return 0


def slurm_script(config_path: str, overrides: list[str], name: str, nodes: int, gpus_per_node: int,
                 repo_dir: str, time_limit: str = "24:00:00", header: tuple = ()) -> str:
    train = shlex.join(_train_argv(config_path, overrides, "python"))
    ids = ",".join(str(i) for i in range(gpus_per_node))
    head = "".join(f"{line}\n" for line in header)
    return f"""#!/bin/bash
{head}# sbatch {name}.sbatch   (one task per node; each task drives all {gpus_per_node} GPUs of its node)
#SBATCH --job-name={name}
#SBATCH --nodes={nodes}
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node={gpus_per_node}
#SBATCH --time={time_limit}
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output={name}-%j.log
set -euo pipefail
cd {repo_dir}
source .venv/bin/activate  # pip install -r requirements.txt 'jax[cuda12]' in this venv first
export PYTHONPATH=$PWD
# distributed.initialize() auto-detects Slurm (coordinator = first node, process id = SLURM_PROCID), but
# JAX then gives each task one GPU (its local rank): hand the task all of its node's GPUs.
export LCF_LOCAL_DEVICE_IDS={ids}
# Preemption / requeue / resubmission: the same command resumes from the latest checkpoint in the workdir.
srun --kill-on-bad-exit=1 {train}
"""


def ssh_recipe(config_path: str, overrides: list[str], hosts: list[str], gpus_per_node: int, repo_dir: str,
               port: int = 12345) -> str:
    n = len(hosts)
    train = shlex.join(_train_argv(config_path, overrides, ".venv/bin/python"))
    ids = ",".join(str(i) for i in range(gpus_per_node))
    lines = [f"# Plain SSH: one process per host, {gpus_per_node} GPUs each; host 0 ({hosts[0]}) is the coordinator.",
             f"# The repo, its .venv (requirements.txt + 'jax[cuda12]') and the workdir (shared filesystem or",
             f"# gs://) must be at {repo_dir} on every host. Rerun the same lines to resume after a failure."]
    for rank, h in enumerate(hosts):
        env = (f"LCF_COORDINATOR={hosts[0]}:{port} LCF_NUM_PROCESSES={n} LCF_PROCESS_ID={rank} "
               f"LCF_LOCAL_DEVICE_IDS={ids} PYTHONPATH=.")
        remote = f"cd {repo_dir} && {env} nohup {train} > lcf_train_{rank}.log 2>&1 < /dev/null &"
        lines.append(shlex.join(["ssh", h, remote]))
    return "\n".join(lines) + "\n"
