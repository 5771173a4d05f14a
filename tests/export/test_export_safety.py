"""Loading is safe and strict: JSON + safetensors only (no pickle, no JAX), and a wrong format version, a
model whose architecture hash differs, or a tensor of the wrong shape fails with an error naming it."""
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
import torch
from export_helpers import perturbed, tiny

from lcf_jax.adapters import export_format as F
from lcf_jax.adapters import lcfx
from lcf_jax.adapters.export_jax import export_adapter
from lcf_jax.paths import repo_root
from lcf_jax.torch import (AdapterFormatError, ConfigHashMismatchError, FormatVersionError, TensorMismatchError,
                           check_model, load_adapter)

ROOT = repo_root()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    s, r = tiny("llama"), tiny("gemma3")
    cfg = lcfx.LCFXConfig(rank=8, slots=2, pool_heads=2)
    p = perturbed(lcfx.init_lcfx(jax.random.key(0), cfg, s, r), 1)
    return export_adapter(tmp_path_factory.mktemp("exp") / "a", p, cfg, s, r), s, r


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def _edit_meta(d: Path, fn):
    meta = json.loads((d / F.META_FILE).read_text())
    fn(meta)
    (d / F.META_FILE).write_text(json.dumps(meta))


def test_lcf_jax_package_and_torch_port_import_without_jax(exported):
    out, _, _ = exported
    code = (
        "import sys\n"
        "for m in ('jax', 'jaxlib', 'flax', 'optax', 'orbax', 'orbax.checkpoint'):\n"
        "    sys.modules[m] = None   # any import of these now raises ImportError\n"
        "import lcf_jax\n"
        "import lcf_jax.torch as T\n"
        "from lcf_jax.torch import load_adapter, answer_with_lcfx\n"
        f"a = load_adapter({str(out)!r})\n"
        "assert a.kind == 'lcfx'\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('jax', 'jaxlib', 'flax', 'optax', 'orbax') "
        "and sys.modules[m] is not None]\n"
        "assert not bad, bad\n"
        "print('ok')\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(ROOT), env=env,
                         timeout=300)
    assert res.returncode == 0 and res.stdout.strip().endswith("ok"), res.stderr[-3000:]


def test_top_level_package_does_not_import_jax():
    res = subprocess.run([sys.executable, "-c", "import sys, lcf_jax, lcf_jax.models.config, "
                          "lcf_jax.adapters.export_format; print('jax' in sys.modules)"],
                         capture_output=True, text=True, cwd=str(ROOT), env=dict(os.environ, PYTHONPATH=str(ROOT)),
                         timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "False", res.stderr[-2000:]


def test_loading_reads_only_json_and_safetensors(exported, tmp_path, monkeypatch):
    out, _, _ = exported
    d = _copy(out, tmp_path / "a")
    (d / "pytorch_model.bin").write_bytes(b"\x80\x04 not to be read")   # decoys are never opened
    (d / "evil.pkl").write_bytes(pickle.dumps({"x": 1}))

    def refuse(*a, **k):
        raise AssertionError("pickle / torch.load must not be used to load an adapter")
    for mod, name in ((pickle, "load"), (pickle, "loads"), (pickle, "Unpickler"), (torch, "load")):
        monkeypatch.setattr(mod, name, refuse)
    opened = []
    real_open = open

    def spy_open(file, *a, **k):
        opened.append(Path(file).name if isinstance(file, (str, os.PathLike)) else file)
        return real_open(file, *a, **k)
    monkeypatch.setattr("builtins.open", spy_open)
    real_read_text, real_path_open = Path.read_text, Path.open

    def spy_read_text(self, *a, **k):
        opened.append(self.name)
        return real_read_text(self, *a, **k)

    def spy_path_open(self, *a, **k):
        opened.append(self.name)
        return real_path_open(self, *a, **k)
    monkeypatch.setattr(Path, "read_text", spy_read_text)
    monkeypatch.setattr(Path, "open", spy_path_open)
    ad = load_adapter(d)
    assert ad.kind == "lcfx"
    names = {n for n in opened if isinstance(n, str) and n in {p.name for p in d.iterdir()}}
    assert names <= {F.META_FILE, F.TENSORS_FILE}, names


def test_wrong_format_version_is_named(exported, tmp_path):
    d = _copy(exported[0], tmp_path / "a")
    _edit_meta(d, lambda m: m.update(format_version=F.FORMAT_VERSION + 1))
    with pytest.raises(FormatVersionError, match=rf"format_version {F.FORMAT_VERSION + 1}"):
        load_adapter(d)
    _edit_meta(d, lambda m: m.update(format_version=F.FORMAT_VERSION, format="something.else"))
    with pytest.raises(AdapterFormatError, match="something.else"):
        load_adapter(d)


def test_missing_files_and_bad_json_are_named(exported, tmp_path):
    with pytest.raises(AdapterFormatError, match="adapter.json"):
        load_adapter(tmp_path)
    d = _copy(exported[0], tmp_path / "a")
    (d / F.META_FILE).write_text("{not json")
    with pytest.raises(AdapterFormatError, match="not valid JSON"):
        load_adapter(d)
    d = _copy(exported[0], tmp_path / "b")
    (d / F.TENSORS_FILE).unlink()
    with pytest.raises(AdapterFormatError, match="adapter.safetensors"):
        load_adapter(d)
    d = _copy(exported[0], tmp_path / "c")
    _edit_meta(d, lambda m: m["config"].update(bogus=1))
    with pytest.raises(AdapterFormatError, match="bogus"):
        load_adapter(d)


def test_model_whose_config_hash_differs_is_named(exported):
    from transformers import Gemma3TextConfig, LlamaConfig
    out, s, r = exported
    good_sharer = LlamaConfig(vocab_size=s.vocab_size, hidden_size=s.hidden_size,
                              intermediate_size=s.intermediate_size, num_hidden_layers=s.num_layers,
                              num_attention_heads=s.num_heads, num_key_value_heads=s.num_kv_heads,
                              head_dim=s.head_dim, max_position_embeddings=s.max_position_embeddings,
                              rms_norm_eps=s.rms_eps, rope_theta=s.rope_theta, bos_token_id=1, eos_token_id=2,
                              pad_token_id=0, tie_word_embeddings=True)
    ad = load_adapter(out, sharer_model=good_sharer)              # the right architecture passes
    bad = LlamaConfig(**{**good_sharer.to_dict(), "num_hidden_layers": 3})
    with pytest.raises(ConfigHashMismatchError, match=r"sharer.*num_layers: adapter 2 vs model 3"):
        load_adapter(out, sharer_model=bad)
    with pytest.raises(ConfigHashMismatchError, match="receiver"):
        check_model(ad, "receiver", good_sharer)
    g = Gemma3TextConfig(vocab_size=r.vocab_size, hidden_size=r.hidden_size, intermediate_size=64,
                         num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=1, head_dim=8)
    with pytest.raises(ConfigHashMismatchError, match="tiny-gemma3"):
        load_adapter(out, receiver_model=g)


def test_edited_model_config_in_the_json_is_caught(exported, tmp_path):
    d = _copy(exported[0], tmp_path / "a")
    _edit_meta(d, lambda m: m["receiver"]["config"].update(num_layers=4, layer_types=["full"] * 4))
    with pytest.raises(ConfigHashMismatchError, match="receiver.config hashes to"):
        load_adapter(d)


def test_tensor_of_the_wrong_shape_is_named(exported, tmp_path):
    from safetensors.numpy import load_file, save_file
    d = _copy(exported[0], tmp_path / "a")
    t = load_file(str(d / F.TENSORS_FILE))
    t["decoder.layers.1.k.weight"] = np.zeros((3, 8), np.float32)
    save_file(t, str(d / F.TENSORS_FILE))
    with pytest.raises(TensorMismatchError, match=r"decoder\.layers\.1\.k\.weight.*\(3, 8\)"):
        load_adapter(d)
    t = load_file(str(exported[0] / F.TENSORS_FILE))
    del t["encoder.queries"]
    save_file(t, str(d / F.TENSORS_FILE))
    with pytest.raises(TensorMismatchError, match=r"encoder\.queries.*missing"):
        load_adapter(d)
    t = load_file(str(exported[0] / F.TENSORS_FILE))
    t["encoder.extra"] = np.zeros(2, np.float32)
    save_file(t, str(d / F.TENSORS_FILE))
    with pytest.raises(TensorMismatchError, match=r"encoder\.extra"):
        load_adapter(d)
    t = load_file(str(exported[0] / F.TENSORS_FILE))
    t["encoder.queries"] = t["encoder.queries"].astype(np.float16)
    save_file(t, str(d / F.TENSORS_FILE))
    with pytest.raises(TensorMismatchError, match=r"encoder\.queries.*float16"):
        load_adapter(d)
