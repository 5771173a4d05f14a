"""The ahead-of-time compile check: the loop's jitted train step lowered and compiled with abstract inputs.

TPU topologies need libtpu (not installed on CPU machines), so here the check falls back to a CPU mesh of
the slice's shape in a subprocess and reports a per-device memory estimate.
"""
import importlib.util

from launch import checks, tpu

HAS_LIBTPU = importlib.util.find_spec("libtpu") is not None


def test_tiny_compiles_on_cpu_mesh(capsys):
    rc = tpu.main(["check", "--config=configs/tiny.py", "--tpu=v5e-8"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "cpu aot  ok: train step lowered and compiled for 8 cpu devices, mesh data=8 x model=1" in out
    assert "memory   per device (cpu compiler estimate)" in out
    if not HAS_LIBTPU:
        assert "tpu aot  unavailable here" in out and "libtpu" in out
    assert "cpu compile:" in err  # timings go to stderr (stdout stays stable)


def test_paper_pair_compiles_scaled_down():
    """The paper pair at its per-device batch on v5e-32 (256 / 32 = 8), on a smaller 8-device CPU mesh."""
    res = checks.aot_compile("configs/qwen25_to_qwen3_lcf.py", ["--config.data.batch_size=64"], 8, 1, 64)
    cpu = res["cpu"]
    assert res["cpu_error"] is None and cpu["mesh"] == {"data": 8, "model": 1}
    assert cpu["frozen_params"] > 1_000_000_000 and cpu["batch_shapes"]["sharer.ids"] == [64, 1024]
    mem = cpu["memory_per_device"]
    assert mem["argument_size_in_bytes"] > 4 * 2**30  # both frozen models, replicated, float32
