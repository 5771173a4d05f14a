"""The gcloud commands of a TPU-pod run (queued resource -> setup -> run -> teardown) and their runner.

Every step is an argv list; `--dry-run` prints them (shell-quoted), otherwise they run in order through
`runner` (subprocess.run by default; tests pass a fake). Paths are relative to the repository root.
"""
from __future__ import annotations

import dataclasses
import functools
import re
import shlex
import subprocess
import time
from pathlib import Path
from typing import Callable, Optional

from launch.checks import ROOT, LaunchError
from launch.slices import Slice

CODE = ("lcf_jax", "configs", "launch", "requirements.txt")  # what the workers need
REMOTE_DIR = "~/lcf_jax"
REMOTE_VENV = "~/lcf_venv"
LOG = "~/lcf_train.log"
PIDFILE = "~/lcf_train.pid"


@dataclasses.dataclass
class Step:
    argv: list
    comment: str = ""
    wait_active: bool = False  # poll this describe command until the queued resource is ACTIVE
    execute: bool = True  # False: printed as a hint only


@dataclasses.dataclass
class Target:
    slice: Slice
    name: str
    zone: str
    project: str
    spot: bool = False
    runtime_version: Optional[str] = None
    python: str = "python3.11"

    def loc(self) -> list:
        return [f"--zone={self.zone}", f"--project={self.project}"]


def jax_version(requirements: Path = ROOT / "requirements.txt") -> str:
    m = re.search(r"^jax==([^\s#]+)", requirements.read_text(), re.M)
    if not m:
        raise LaunchError(f"{requirements} pins no jax version (jax==X)")
    return m.group(1)


def _ssh(t: Target, command: str, worker: str = "all") -> list:
    return ["gcloud", "compute", "tpus", "tpu-vm", "ssh", t.name, *t.loc(), f"--worker={worker}",
            f"--command={command}"]


def create_steps(t: Target) -> list[Step]:
    argv = ["gcloud", "compute", "tpus", "queued-resources", "create", t.name, f"--node-id={t.name}",
            f"--accelerator-type={t.slice.accelerator_type}",
            f"--runtime-version={t.runtime_version or t.slice.runtime_version}", *t.loc()]
    if t.spot:
        argv.append("--spot")
    describe = ["gcloud", "compute", "tpus", "queued-resources", "describe", t.name, *t.loc(),
                "--format=value(state.state)"]
    return [Step(argv, "queue the slice (a queued resource with one node)"),
            Step(describe, "wait until this prints ACTIVE (polled every 60 s without --dry-run)", wait_active=True)]


def setup_steps(t: Target, extra_files: tuple = ()) -> list[Step]:
    install = "; ".join([
        "set -e",
        f"if ! command -v {t.python} >/dev/null; then sudo apt-get update -qq && "
        f"sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq {t.python} {t.python}-venv; fi",
        f"{t.python} -m venv {REMOTE_VENV}",
        f"{REMOTE_VENV}/bin/pip install -q -U pip",
        # torch serves only the parity tests and the PyTorch export: training on TPU does not need it.
        f"grep -v '^torch==' {REMOTE_DIR}/requirements.txt > {REMOTE_DIR}/requirements-tpu.txt",
        f"{REMOTE_VENV}/bin/pip install -q -r {REMOTE_DIR}/requirements-tpu.txt \"jax[tpu]=={jax_version()}\" gcsfs",
        f"{REMOTE_VENV}/bin/python -c \"import jax; print(jax.process_index(), jax.device_count(), jax.devices()[0])\"",
    ])
    scp = ["gcloud", "compute", "tpus", "tpu-vm", "scp", "--recurse", *CODE, *extra_files,
           f"{t.name}:{REMOTE_DIR}/", *t.loc(), "--worker=all"]
    return [Step(_ssh(t, f"mkdir -p {REMOTE_DIR}"), "make the code directory on every worker"),
            Step(scp, "copy the code to every worker (run from the repository root)"),
            Step(_ssh(t, install), f"install the pinned requirements + jax[tpu] + gcsfs (gs:// checkpoints) on every worker "
                                   f"(the TPU images ship Python 3.10; jax {jax_version()} needs {t.python})")]


def train_command(config_arg: str, overrides: list[str]) -> str:
    py = shlex.join([f"{REMOTE_VENV}/bin/python", "-m", "lcf_jax.train", f"--config={config_arg}", *overrides])
    py = py.replace(f"'{REMOTE_VENV}/bin/python'", f"{REMOTE_VENV}/bin/python")
    return (f"cd {REMOTE_DIR} && if [ -f {PIDFILE} ] && kill -0 $(cat {PIDFILE}) 2>/dev/null; then "
            f"echo \"training already running (pid $(cat {PIDFILE})): stop it first\"; exit 1; fi; "
            f"PYTHONPATH=. setsid nohup {py} > {LOG} 2>&1 < /dev/null & echo $! > {PIDFILE}")


def run_steps(t: Target, config_arg: str, overrides: list[str]) -> list[Step]:
    return [Step(_ssh(t, train_command(config_arg, overrides)),
                 f"start training on all workers at once, detached (log {LOG}, pid {PIDFILE} on each worker); "
                 f"rerunning this step after a crash or preemption resumes from the latest checkpoint"),
            Step(_ssh(t, f"tail -n 50 -f {LOG}", worker="0"), "follow the log of worker 0 (process 0)",
                 execute=False)]


def logs_steps(t: Target) -> list[Step]:
    return [Step(_ssh(t, f"tail -n 50 -f {LOG}", worker="0"), "follow the log of worker 0 (process 0)")]


def stop_steps(t: Target) -> list[Step]:
    return [Step(_ssh(t, f"if [ -f {PIDFILE} ]; then kill $(cat {PIDFILE}) 2>/dev/null || true; rm -f {PIDFILE}; fi"),
                 "stop the training processes started by `run` (by their pid files)")]


def teardown_steps(t: Target) -> list[Step]:
    return [Step(["gcloud", "compute", "tpus", "queued-resources", "delete", t.name, *t.loc(), "--force", "--quiet"],
                 "delete the queued resource and its TPU VMs (checkpoints in gs:// stay)")]


def quote(argv: list) -> str:
    """shlex.join, but `--flag=value` keeps the flag outside the quotes: --command='...'."""
    parts = []
    for a in argv:
        flag, eq, value = a.partition("=")
        if a.startswith("--") and eq and shlex.quote(flag) == flag:
            parts.append(flag + "=" + shlex.quote(value))
        else:
            parts.append(shlex.quote(a))
    return " ".join(parts)


def render(steps: list[Step]) -> list[str]:
    out = []
    for s in steps:
        if s.comment:
            out.append(f"# {s.comment}")
        out.append(quote(s.argv))
    return out


# Tests swap in a fake: runner(argv, **subprocess.run kwargs) -> object with returncode/stdout.
RUNNER: Optional[Callable] = None
SLEEP: Callable = time.sleep


def execute(steps: list[Step], runner: Optional[Callable] = None, poll_s: float = 60.0,
            wait_timeout_s: float = 6 * 3600, log: Callable = functools.partial(print, flush=True), sleep: Optional[Callable] = None) -> None:
    """Runs the steps in order; stops at the first failing command (raises LaunchError)."""
    runner = runner or RUNNER or subprocess.run
    sleep = sleep or SLEEP
    for s in steps:
        if not s.execute:
            continue
        log("+ " + quote(s.argv))
        if s.wait_active:
            t0 = time.monotonic()
            while True:
                p = runner(s.argv, capture_output=True, text=True)
                state = (p.stdout or "").strip()
                if p.returncode == 0 and state == "ACTIVE":
                    log("  queued resource is ACTIVE")
                    break
                if state in ("FAILED", "SUSPENDED", "SUSPENDING"):
                    raise LaunchError(f"queued resource is {state}: see `gcloud compute tpus queued-resources "
                                      f"describe` for the reason, then teardown and create again")
                if time.monotonic() - t0 > wait_timeout_s:
                    raise LaunchError(f"queued resource not ACTIVE after {wait_timeout_s:.0f} s (state {state!r})")
                log(f"  state {state or '?'}; waiting {poll_s:.0f} s")
                sleep(poll_s)
            continue
        p = runner(s.argv, cwd=ROOT)
        if p.returncode != 0:
            raise LaunchError(f"command failed (rc={p.returncode}): {quote(s.argv)}")
