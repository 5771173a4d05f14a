"""`python -m launch.tpu --local-processes=2 --devices-per-process=4`: a real 2-process CPU run over gloo,
then the same command again with more steps, which must resume from the checkpoint (preemption path)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 300  # per run (test groups run two at a time on two cores)


def launch(workdir: Path, steps: int) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "launch.tpu", "--local-processes=2", "--devices-per-process=4",
           "--config=configs/tiny.py", f"--config.train.steps={steps}", f"--config.train.workdir={workdir}",
           f"--timeout={TIMEOUT_S - 10}"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    try:
        return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"local 2-process run did not finish within {TIMEOUT_S} s:\n{(e.stdout or '')[-3000:]}")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("mp") / "run"
    first = launch(workdir, 2)
    assert first.returncode == 0, f"first run failed:\n{first.stdout[-4000:]}\n{first.stderr[-2000:]}"
    second = launch(workdir, 4)  # the same command, more steps: must resume
    assert second.returncode == 0, f"second run failed:\n{second.stdout[-4000:]}\n{second.stderr[-2000:]}"
    return workdir, first, second


def _rows(workdir: Path) -> list:
    return [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]


def test_two_processes_train_and_checkpoint(runs):
    workdir, first, second = runs
    for r in (first, second):
        # both processes finished and printed their last metrics
        assert any(l.startswith("[p0] {'loss'") for l in r.stdout.splitlines()), r.stdout[-2000:]
        assert any(l.startswith("[p1] {'loss'") for l in r.stdout.splitlines()), r.stdout[-2000:]
    train = [r for r in _rows(workdir) if r["kind"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3, 4]  # process 0 writes metrics.jsonl, once per step
    assert all(r["loss"] == r["loss"] for r in train)  # finite
    ckpts = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    assert ckpts[-1] == 4 and 2 in ckpts


def test_rerun_resumes(runs):
    _, first, second = runs
    assert "resumed from checkpoint" not in first.stdout
    assert "[p0] resumed from checkpoint step 2" in second.stdout
