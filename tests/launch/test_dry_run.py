"""launch.tpu without a pod: golden dry run for the paper pair on v5e-32, the checks' messages, slice naming,
the gcloud runner with a fake, and the GPU-cluster recipes. No JAX computation here (fast)."""
import difflib
import shlex
import types
from pathlib import Path

import pytest

from launch import checks, gcloud, slices, tpu

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "launch" / "golden" / "v5e-32_qwen25_to_qwen3_lcf.txt"
PAPER = "configs/qwen25_to_qwen3_lcf.py"
POD = ["--tpu=v5e-32", "--name=lcf-qwen25-qwen3", "--zone=us-west4-a", "--project=my-project",
       "--bucket=gs://my-bucket"]
GOLDEN_ARGS = [f"--config={PAPER}", *POD, "--dry-run", "--skip-compile"]
REGENERATE = f"PYTHONPATH=. .venv/bin/python -m launch.tpu {shlex.join(GOLDEN_ARGS)} > {GOLDEN.relative_to(ROOT)}"


def run(argv, capsys):
    try:
        rc = tpu.main(argv)
    except SystemExit as e:  # a user error: `error: ...` on stderr, exit code 2
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


def test_golden_dry_run(capsys):
    rc, out, err = run(GOLDEN_ARGS, capsys)
    assert rc == 0, err
    want = GOLDEN.read_text()
    if out != want:
        diff = "".join(difflib.unified_diff(want.splitlines(True), out.splitlines(True), str(GOLDEN), "now"))
        pytest.fail(f"dry-run output changed; if intended, regenerate the golden file with\n  {REGENERATE}\n"
                    f"(and update the worked example in launch/README.md)\n{diff}")


def test_readme_shows_the_golden_commands():
    readme = (ROOT / "launch" / "README.md").read_text()
    missing = [l for l in GOLDEN.read_text().splitlines() if l.startswith("gcloud ") and l not in readme]
    assert not missing, f"launch/README.md lacks these commands of {GOLDEN.name}: {missing}"


def test_dry_run_runs_nothing(capsys, monkeypatch):
    calls = []
    monkeypatch.setattr(gcloud, "RUNNER", lambda *a, **k: calls.append(a))
    rc, out, _ = run(GOLDEN_ARGS, capsys)
    assert rc == 0 and not calls and "queued-resources create" in out


def test_bad_mesh_names_the_model_axis(capsys):
    rc, _, err = run([f"--config={PAPER}", *POD, "--dry-run", "--skip-compile", "--config.mesh.model=3"], capsys)
    assert rc == 2
    assert "mesh.model=3 does not divide the 32 devices of v5e-32" in err
    assert "[1, 2, 4, 8, 16, 32]" in err


def test_bad_mesh_names_the_data_axis(capsys):
    rc, _, err = run([f"--config={PAPER}", *POD, "--dry-run", "--skip-compile", "--config.mesh.data=16"], capsys)
    assert rc == 2 and "mesh.data=16" in err and "set mesh.data=32" in err


def test_batch_not_divisible_by_data_axis(capsys):
    rc, _, err = run([f"--config={PAPER}", *POD, "--dry-run", "--skip-compile", "--config.data.batch_size=100"],
                     capsys)
    assert rc == 2
    assert "data.batch_size=100 is not divisible by the mesh data axis (32)" in err


def test_batch_checked_against_data_axis_after_model_axis(capsys):
    # model=4 -> data=8: a batch of 36 fails on the data axis (8), not on the chip count
    rc, _, err = run([f"--config={PAPER}", *POD, "--dry-run", "--skip-compile", "--config.mesh.model=4",
                      "--config.data.batch_size=36"], capsys)
    assert rc == 2 and "mesh data axis (8)" in err


def test_unknown_tpu_type_lists_supported(capsys):
    rc, _, err = run([f"--config={PAPER}", "--tpu=v9-32", "--name=x", "--zone=z", "--project=p", "--dry-run"], capsys)
    assert rc == 2 and "unknown TPU type 'v9-32'" in err
    for fam in ("v4-N", "v5e-N", "v5litepod-N", "v5p-N", "v6e-N"):
        assert fam in err


def test_bad_slice_size(capsys):
    rc, _, err = run([f"--config={PAPER}", "--tpu=v5e-48", "--name=x", "--zone=z", "--project=p", "--dry-run"], capsys)
    assert rc == 2 and "v5e slices need N in 1, 4, 8, 16, 32, 64, 128, 256" in err


def test_pod_run_needs_gs_workdir(capsys):
    pod = [a for a in POD if not a.startswith("--bucket")]
    rc, _, err = run([f"--config={PAPER}", *pod, "--dry-run", "--skip-compile"], capsys)
    assert rc == 2 and "--bucket=gs://BUCKET" in err


def test_unknown_override_is_reported(capsys):
    rc, _, err = run([f"--config={PAPER}", *POD, "--dry-run", "--skip-compile", "--config.train.nope=1"], capsys)
    assert rc == 2 and "unknown config key 'train.nope'" in err


@pytest.mark.parametrize("name, acc, chips, runtime, topo", [
    ("v4-32", "v4-32", 16, "tpu-ubuntu2204-base", "v4:2x2x4"),
    ("v5e-32", "v5litepod-32", 32, "v2-alpha-tpuv5-lite", "v5e:4x8"),
    ("v5litepod-16", "v5litepod-16", 16, "v2-alpha-tpuv5-lite", "v5e:4x4"),
    ("v5p-128", "v5p-128", 64, "v2-alpha-tpuv5", "v5:4x4x4"),
    ("v6e-64", "v6e-64", 64, "v2-alpha-tpuv6e", "v6e:8x8"),
])
def test_slice_conventions(name, acc, chips, runtime, topo):
    s = slices.parse(name)
    assert (s.accelerator_type, s.chips, s.runtime_version, s.jax_topology_name) == (acc, chips, runtime, topo)


def test_scaled_mesh_keeps_per_device_batch():
    assert checks.scaled_mesh(256, 1, 2048, 64) == (64, 1, 512)
    assert checks.scaled_mesh(32, 1, 256, 64) == (32, 1, 256)
    assert checks.scaled_mesh(64, 4, 512, 64) == (16, 4, 128)


def test_execute_with_fake_runner():
    calls, states = [], iter(["WAITING_FOR_RESOURCES", "PROVISIONING", "ACTIVE"])

    def fake(argv, **kw):
        calls.append(argv)
        out = next(states) if "describe" in argv else ""
        return types.SimpleNamespace(returncode=0, stdout=out)

    t = gcloud.Target(slices.parse("v5e-32"), "n", "z", "p")
    steps = gcloud.create_steps(t) + gcloud.setup_steps(t) + gcloud.run_steps(t, "configs/tiny.py", [])
    gcloud.execute(steps, runner=fake, sleep=lambda s: None, log=lambda *a: None)
    kinds = [" ".join(a[:5]) for a in calls]
    assert kinds[0] == "gcloud compute tpus queued-resources create"
    assert sum("describe" in a for a in calls) == 3
    assert [a[4] for a in calls[4:]] == ["ssh", "scp", "ssh", "ssh"]  # mkdir, copy, install, train
    assert not any("tail" in " ".join(a) for a in calls)  # the log hint is printed, not run
    assert all("--worker=all" in a for a in calls[4:])


def test_execute_stops_at_first_failure():
    t = gcloud.Target(slices.parse("v6e-8"), "n", "z", "p")
    fake = lambda argv, **kw: types.SimpleNamespace(returncode=1, stdout="")  # noqa: E731
    with pytest.raises(checks.LaunchError, match="command failed"):
        gcloud.execute(gcloud.teardown_steps(t) + gcloud.setup_steps(t), runner=fake, log=lambda *a: None)


def test_real_launch_refuses_on_warnings(capsys, monkeypatch):
    calls = []
    monkeypatch.setattr(gcloud, "RUNNER", lambda argv, **k: calls.append(argv))
    rc, _, err = run([f"--config={PAPER}", *POD, "--skip-compile"], capsys)  # presets have no weights: a warning
    assert rc == 2 and "--force" in err and not calls


def test_local_dry_run_prints_env(capsys):
    rc, out, _ = run(["--local-processes=2", "--devices-per-process=4", "--config=configs/tiny.py", "--dry-run"],
                     capsys)
    assert rc == 0
    assert "LCF_NUM_PROCESSES=2 LCF_PROCESS_ID=1 LCF_NUM_CPU_DEVICES=4" in out
    assert "data=8 x model=1 = 8 devices" in out


def test_slurm_and_ssh_recipes(capsys):
    rc, out, _ = run(["--print-slurm", "--nodes=2", "--gpus-per-node=8", "--config=configs/tiny.py",
                      "--config.train.workdir=/shared/runs/tiny", "--config.data.batch_size=16"], capsys)
    assert rc == 0
    assert "#SBATCH --nodes=2" in out and "srun" in out and "LCF_LOCAL_DEVICE_IDS=0,1,2,3,4,5,6,7" in out
    assert "--config.train.workdir=/shared/runs/tiny" in out and "--requeue" in out
    rc, out, _ = run(["--print-ssh", "--hosts=h0,h1", "--gpus-per-node=4", "--config=configs/tiny.py"], capsys)
    assert rc == 0
    assert "LCF_COORDINATOR=h0:12345 LCF_NUM_PROCESSES=2 LCF_PROCESS_ID=1" in out
    assert "WARNING" in out and "relative" in out  # runs/tiny is not shared across hosts
    rc, _, err = run(["--print-slurm", "--nodes=3", "--gpus-per-node=1", "--config=configs/tiny.py"], capsys)
    assert rc == 2 and "data.batch_size=8 is not divisible by the mesh data axis (3)" in err
