"""distributed.initialize: no-op path, env-var resolution, and a real 2-process CPU run over gloo."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from lcf_jax.paths import repo_root
from lcf_jax.train import distributed

ROOT = repo_root()
WORKER = Path(__file__).with_name("dist_worker.py")
TIMEOUT_S = 300  # test groups run two at a time on two cores


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_single_process_is_noop(monkeypatch):
    for k in ("LCF_COORDINATOR", "LCF_NUM_PROCESSES", "LCF_PROCESS_ID", "JAX_COORDINATOR_ADDRESS",
              "SLURM_JOB_ID", "OMPI_MCA_orte_hnp_uri"):
        monkeypatch.delenv(k, raising=False)
    assert distributed.initialize() is False
    monkeypatch.setenv("LCF_NUM_PROCESSES", "1")
    assert distributed.initialize() is False
    info = distributed.process_info()
    assert info.process_count == 1 and info.process_index == 0
    assert len(info.global_devices) == len(info.local_devices) >= 1


def test_missing_args_are_reported(monkeypatch):
    for k in ("LCF_COORDINATOR", "LCF_PROCESS_ID", "JAX_COORDINATOR_ADDRESS", "SLURM_JOB_ID"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("LCF_NUM_PROCESSES", "2")
    with pytest.raises(ValueError, match="coordinator_address, process_id"):
        distributed.initialize()


def test_two_cpu_processes_gloo(tmp_path):
    """Process 0 passes explicit args, process 1 only LCF_* env vars; both see 8 global devices."""
    port = _free_port()
    base = dict(os.environ)
    base["PYTHONPATH"] = str(ROOT) + os.pathsep + base.get("PYTHONPATH", "")
    base["JAX_PLATFORMS"] = "cpu"
    for k in ("LCF_COORDINATOR", "LCF_NUM_PROCESSES", "LCF_PROCESS_ID", "LCF_NUM_CPU_DEVICES"):
        base.pop(k, None)
    # The conftest's 8-device XLA flag stays on purpose: num_cpu_devices=4 must win.
    ckpt_dir = str(tmp_path / "ck")
    env1 = dict(base, LCF_COORDINATOR=f"127.0.0.1:{port}", LCF_NUM_PROCESSES="2", LCF_PROCESS_ID="1",
                LCF_NUM_CPU_DEVICES="4")
    cmds = [
        ([sys.executable, str(WORKER), f"127.0.0.1:{port}", "2", "0", "4", ckpt_dir], base),
        ([sys.executable, str(WORKER), "env", ckpt_dir], env1),
    ]
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for cmd, env in cmds]
    outs = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=TIMEOUT_S)
            outs.append((p.returncode, out, err))
    except subprocess.TimeoutExpired:
        pytest.fail(f"2-process run did not finish within {TIMEOUT_S} s")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    results = []
    for rc, out, err in outs:
        assert rc == 0, f"worker failed (rc={rc}):\n{out}\n{err[-3000:]}"
        lines = [l for l in out.splitlines() if l.startswith("RESULT ")]
        assert lines, f"no RESULT line:\n{out}\n{err[-3000:]}"
        results.append(json.loads(lines[-1][len("RESULT "):]))
    assert sorted(r["process_index"] for r in results) == [0, 1]
    for r in results:
        assert r["process_count"] == 2
        assert r["n_local"] == 4 and r["n_global"] == 8
        assert r["sum"] == r["expected"] == sum(range(16 * 3))
        assert r["psum"] == [r["expected"]] * 4
        assert r["ckpt"] == {"step": 1, "shards_equal": True, "sharding_same": True, "data_state": {"pos": 5}}
