"""The export format: one name table per kind that agrees with the JAX params layout; export -> import
round trips are bit-identical; checkpoints export through the CLI; writes are atomic."""
import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from export_helpers import perturbed, tiny

from lcf_jax.adapters import ADAPTER_KINDS, c2c, lcf, lcfx
from lcf_jax.adapters import export_format as F
from lcf_jax.adapters.export_jax import export_adapter, import_adapter
from lcf_jax.train.export_run import export_checkpoint, load_checkpoint

PAIRS = [("llama", "gemma3"), ("gemma3", "llama"), ("qwen2", "qwen3"), ("gemma3", "gemma3")]


def _configs():
    return [
        ("lcf", lcf.LCFConfig(rank=8)),
        ("lcf", lcf.LCFConfig(rank=8, layer_map="proportional", disabled=(0,))),
        ("lcf", lcf.LCFConfig(rank=8, layer_map="last_aligned_strict", layers=None)),
        ("lcfx", lcfx.LCFXConfig(rank=8, slots=3, pool_heads=2)),
        ("lcfx", lcfx.LCFXConfig(rank=8, slots=3, pool_heads=2, conditioned=True, sharer_layers=(0,),
                                 receiver_layers=(1,), cond_layers=(0, 1))),
        ("lcfx", lcfx.LCFXConfig(rank=8, slots=3, pool_heads=2, conditioned=True, pooling="window", locator_rank=4,
                                 injection="positioned", decoder="embed", embed_hidden=6, cond_layers=(0,))),
        ("lcfx", lcfx.LCFXConfig(rank=8, slots=3, pool_heads=2, pooling="window", injection="positioned",
                                 decoder="embed", embed_hidden=6)),
        ("c2c", c2c.C2CConfig(hidden_dim=12, intermediate_dim=10, num_layers=3)),
        ("c2c", c2c.C2CConfig(hidden_dim=12, intermediate_dim=10, num_layers=5, layer_map="proportional")),
    ]


def _init(kind, cfg, s, r, seed=0):
    return ADAPTER_KINDS[kind].init(jax.random.key(seed), cfg, s, r)


def test_a_files_config_is_the_specs_dataclass_with_defaults_filled_and_values_checked():
    old_file = {"rank": 8, "slots": 3, "conditioned": False, "pool_heads": 2, "activation": "silu", "eps": 1e-6}
    cfg = F.adapter_config("lcfx", old_file)   # written before injection/decoder/pooling existed
    assert cfg == lcfx.LCFXConfig(rank=8, slots=3, pool_heads=2) and cfg.injection == "extra"
    with pytest.raises(F.AdapterFormatError, match="unknown fields"):
        F.adapter_config("lcfx", {**old_file, "slot_count": 3})
    with pytest.raises(F.AdapterFormatError, match="missing fields"):
        F.adapter_config("c2c", {"hidden_dim": 4})
    with pytest.raises(F.AdapterFormatError, match="pool_heads"):
        F.adapter_config("lcfx", {**old_file, "pool_heads": 3})


@pytest.mark.parametrize("pair", PAIRS, ids=lambda p: f"{p[0]}->{p[1]}")
def test_the_specs_table_is_the_flax_params_layout(pair):
    s, r = tiny(pair[0]), tiny(pair[1])
    for kind, cfg in _configs():
        table = F.tensor_table(kind, cfg, s, r)
        shapes = jax.eval_shape(lambda k: _init(kind, cfg, s, r), jax.random.key(0))
        flat = {tuple(str(getattr(k, "key", k)) for k in path): tuple(x.shape)
                for path, x in jax.tree_util.tree_flatten_with_path(shapes)[0]}
        assert flat == {k: tuple(v) for k, v in table.leaves.items()}, (kind, cfg)
        names = [e.name for e in table.entries]
        assert len(names) == len(set(names))
        # every element of every leaf comes from exactly one tensor
        total = sum(int(np.prod(e.shape)) for e in table.entries)
        assert total == sum(int(np.prod(v)) for v in table.leaves.values())


@pytest.mark.parametrize("pair", PAIRS[:1], ids=lambda p: f"{p[0]}->{p[1]}")
def test_export_import_round_trip_is_identical(tmp_path, pair):
    s, r = tiny(pair[0]), tiny(pair[1])
    for i, (kind, cfg) in enumerate(_configs()):
        p = perturbed(_init(kind, cfg, s, r, i), i)
        out = export_adapter(tmp_path / f"a{i}", p, cfg, s, r)
        kind2, cfg2, p2 = import_adapter(out)
        assert kind2 == kind and cfg2 == cfg
        assert jax.tree.structure(p2) == jax.tree.structure(p)
        jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), p2, p)
        full = import_adapter(out, full=True)
        assert full.sharer == s and full.receiver == r
        meta = json.loads((out / F.META_FILE).read_text())
        for key in ("format", "format_version", "kind", "pruned", "config", "sharer", "receiver", "layer_map",
                    "alignment", "dtype", "tensors", "num_params"):
            assert key in meta, key
        assert meta["sharer"]["config_hash"] == s.hash() and meta["receiver"]["config_hash"] == r.hash()
        assert meta["sharer"]["config"] == s.to_dict() and meta["sharer"]["name"] == s.name
        assert sorted(p.name for p in out.iterdir()) == [F.META_FILE, F.TENSORS_FILE]


def test_bfloat16_params_round_trip_bit_identical(tmp_path):
    s, r = tiny("llama"), tiny("gemma3")
    cfg = lcf.LCFConfig(rank=8)
    p = jax.tree.map(lambda x: x.astype(jnp.bfloat16), perturbed(lcf.init_lcf(jax.random.key(0), cfg, s, r), 1))
    out = export_adapter(tmp_path / "a", p, cfg, s, r, dtype="bfloat16")
    _, _, p2 = import_adapter(out)
    jax.tree.map(lambda a, b: (np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
                               np.testing.assert_equal(a.dtype, b.dtype)), p2, p)


def test_tensor_names_follow_pytorch_conventions():
    s, r = tiny("llama"), tiny("gemma3")
    t = F.expected_shapes("lcf", lcf.LCFConfig(rank=8), s, r)
    assert t["layers.0.w_down.weight"] == (8, 2 * s.kv_width)          # [out, in]
    assert t["layers.0.w_up.weight"] == (2 * r.kv_width, 8)
    assert t["layers.2.gate_logit"] == ()
    t = F.expected_shapes("lcfx", lcfx.LCFXConfig(rank=8, slots=3, pool_heads=2, conditioned=True), s, r)
    assert t["encoder.in_proj.1.weight"] == (8, 2 * s.kv_width)
    assert t["encoder.cond_shift.weight"] == (3 * 8, 8)
    assert t["decoder.layers.2.k.weight"] == (r.kv_width, 8)
    t = F.expected_shapes("c2c", c2c.C2CConfig(hidden_dim=12, intermediate_dim=10, num_layers=4), s, r)
    assert t["value.layers.1.proj_mlp2.1.w1.weight"] == (10, 12)
    assert t["key.layers.0.in_proj.weight"] == (12, s.kv_width + r.kv_width)


def _save_run(workdir, kind, steps, seed=0, **adapter_overrides):
    from lcf_jax.train import config as config_lib
    from lcf_jax.train.ckpt import Checkpointer
    c = config_lib.pair_config("tiny-llama", "tiny-gemma3", kind)
    for k, v in adapter_overrides.items():
        c.adapter[kind][k] = v
    acfg = config_lib.adapter_config(c)
    s, r = tiny("llama"), tiny("gemma3")
    saved = {}
    with Checkpointer(f"{workdir}/checkpoints", keep_last=None, async_save=False) as ck:
        for i, step in enumerate(steps):
            p = perturbed(ADAPTER_KINDS[kind].init(jax.random.key(seed), acfg, s, r), seed + i)
            ck.save(step, p, {"opt": {"mu": jnp.zeros(3)}}, data_state={"epoch": 0}, config=c.to_dict())
            saved[step] = p
    return acfg, saved


def test_checkpoint_export_cli(tmp_path, capsys):
    from lcf_jax import export as cli
    workdir = tmp_path / "run"
    acfg, saved = _save_run(workdir, "lcfx", [3, 7], rank=16, slots=4, pool_heads=2, value_gate_init=0.5)
    # latest step, from the workdir
    assert cli.main(["--checkpoint", str(workdir), "--out", str(tmp_path / "latest")]) == 0
    assert "exported lcfx adapter" in capsys.readouterr().out
    kind, cfg, p = import_adapter(tmp_path / "latest")
    assert kind == "lcfx" and cfg == acfg
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), p, saved[7])
    meta = json.loads((tmp_path / "latest" / F.META_FILE).read_text())
    assert meta["source"]["step"] == 7 and meta["data"]["prompt_template"].startswith("Question:")
    assert meta["sharer"]["name"] == "tiny-llama" and meta["receiver"]["name"] == "tiny-gemma3"
    # a given step, from the checkpoints dir, in bfloat16
    assert cli.main(["--checkpoint", str(workdir / "checkpoints"), "--out", str(tmp_path / "s3"), "--step", "3",
                     "--dtype", "bfloat16"]) == 0
    _, _, p3 = import_adapter(tmp_path / "s3")
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b.astype(jnp.bfloat16))),
                 p3, saved[3])
    with pytest.raises(FileNotFoundError, match="step 5"):
        load_checkpoint(workdir, step=5)


def test_pruned_lcf_checkpoint_exports_as_lcf_with_layers(tmp_path):
    workdir = tmp_path / "run"
    acfg, saved = _save_run(workdir, "lcf", [1], rank=8, layers=[1, 2], ranks=[6, 3])
    out = export_checkpoint(workdir, tmp_path / "out")
    meta = json.loads((out / F.META_FILE).read_text())
    assert meta["kind"] == "lcf" and meta["pruned"] and meta["layer_map"]["receiver_layers"] == [1, 2]
    assert meta["layer_map"]["ranks"] == [6, 3]
    _, cfg, p = import_adapter(out)
    assert cfg == acfg
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), p, saved[1])


def test_export_cli_prunes_an_lcf_checkpoint_to_a_smaller_lcf(tmp_path, capsys):
    from lcf_jax import export as cli
    workdir = tmp_path / "run"
    _save_run(workdir, "lcf", [1], rank=8)
    assert cli.main(["--checkpoint", str(workdir), "--out", str(tmp_path / "p"), "--prune-rank", "3"]) == 0
    meta = json.loads((tmp_path / "p" / F.META_FILE).read_text())
    assert set(meta["layer_map"]["ranks"]) == {3} and meta["source"]["pruning"]["params_after"] < \
        meta["source"]["pruning"]["params_before"]
    kind, cfg, _ = import_adapter(tmp_path / "p")
    assert kind == "lcf" and set(cfg.ranks) == {3}
    _save_run(tmp_path / "x", "lcfx", [1], rank=8, slots=2, pool_heads=2)
    with pytest.raises(SystemExit) as exit_info:  # a user error: one line on stderr, exit code 2
        cli.main(["--checkpoint", str(tmp_path / "x"), "--out", str(tmp_path / "q"), "--prune-rank", "3"])
    assert exit_info.value.code == 2 and "pruning applies to LCF" in capsys.readouterr().err


def test_writes_are_atomic(tmp_path, monkeypatch):
    s, r = tiny("llama"), tiny("qwen2")
    cfg = lcfx.LCFXConfig(rank=8, slots=2, pool_heads=2)
    p = perturbed(lcfx.init_lcfx(jax.random.key(0), cfg, s, r), 1)
    out = export_adapter(tmp_path / "a", p, cfg, s, r)
    before = {f.name: f.read_bytes() for f in out.iterdir()}

    def boom(*a, **k):
        raise RuntimeError("disk full")
    import safetensors.numpy
    monkeypatch.setattr(safetensors.numpy, "save_file", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        export_adapter(tmp_path / "a", perturbed(p, 9), cfg, s, r)
    # the old export is untouched and no temporary directory is left behind
    assert {f.name: f.read_bytes() for f in out.iterdir()} == before
    assert sorted(x.name for x in tmp_path.iterdir()) == ["a"]
    monkeypatch.undo()
    export_adapter(tmp_path / "a", perturbed(p, 9), cfg, s, r)           # replacing works
    assert sorted(x.name for x in tmp_path.iterdir()) == ["a"]
    assert {f.name: f.read_bytes() for f in out.iterdir()} != before


def test_export_rejects_params_that_do_not_fit_the_config(tmp_path):
    s, r = tiny("llama"), tiny("gemma3")
    cfg = lcf.LCFConfig(rank=8)
    p = lcf.init_lcf(jax.random.key(0), cfg, s, r)
    with pytest.raises(F.TensorMismatchError, match="r8/w_up"):
        export_adapter(tmp_path / "a", p, dataclasses.replace(cfg, rank=4), s, r)
    assert not (tmp_path / "a").exists()


def test_a_bfloat16_export_reads_as_numpy_without_jax_imported():
    """read_tensors_numpy is what a script without JAX calls (scripts/c2c_gates.py): numpy alone does not know
    bfloat16 until ml_dtypes registers it, which importing jax used to do by accident."""
    import subprocess
    import sys
    from pathlib import Path

    adapter = Path(__file__).resolve().parents[2] / "docs/training_run_lcf_rev_3200/adapter"
    code = ("import sys; from lcf_jax.adapters import export_format as F; m = F.read_meta(sys.argv[1]); "
            "t = F.read_tensors_numpy(sys.argv[1], m); assert 'jax' not in sys.modules, 'jax imported'; "
            "print(sorted({str(v.dtype) for v in t.values()}))")
    out = subprocess.run([sys.executable, "-c", code, str(adapter)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "['bfloat16']"
