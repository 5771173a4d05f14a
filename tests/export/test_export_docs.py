"""The usage example in docs/pytorch_usage.md runs as written (in a subprocess where JAX cannot be imported),
with tiny random transformers models that use the bundled tokenizers, and with the bundled models."""
import os
import re
import subprocess
import sys
from pathlib import Path

import jax
import pytest

from lcf_jax.adapters import lcfx
from lcf_jax.adapters.export_jax import export_adapter
from lcf_jax.models import convert, registry
from lcf_jax.paths import repo_root

ROOT = repo_root()
DOC = ROOT / "docs" / "pytorch_usage.md"
PAIR = ("smollm2-135m-instruct", "gemma3-270m")


def usage_example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert blocks, "docs/pytorch_usage.md has no python code block"
    code = blocks[0]
    assert "answer_with_lcfx" in code and "load_adapter" in code
    assert len([l for l in code.splitlines() if l.strip()]) <= 12
    return code


def _tokenizer_dir(name: str) -> Path:
    d = registry.cache_dir() / "tokenizers" / name
    if not (d / "tokenizer_config.json").exists():
        pytest.skip(f"the {name} tokenizer is not cached (run scripts/setup.sh)")
    return d


def _with_tokenizer(model_dir: Path, name: str, dst: Path) -> Path:
    """A model directory that also holds the tokenizer (links to the cached files)."""
    dst.mkdir(parents=True, exist_ok=True)
    for src in list(model_dir.iterdir()) + list(_tokenizer_dir(name).iterdir()):
        (dst / src.name).symlink_to(src.resolve())
    return dst


def _tiny_model(name: str, out: Path) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, Gemma3TextConfig, LlamaConfig
    tok = registry.load_tokenizer(name)
    common = dict(hidden_size=16, intermediate_size=32, num_attention_heads=2, num_key_value_heads=1, head_dim=8,
                  num_hidden_layers=2, max_position_embeddings=512, pad_token_id=tok.pad_token_id or 0,
                  eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)
    if name.startswith("gemma3"):
        cfg = Gemma3TextConfig(vocab_size=len(tok), sliding_window=64, layer_types=["sliding_attention",
                               "full_attention"], query_pre_attn_scalar=8, **common)
    else:
        cfg = LlamaConfig(vocab_size=len(tok), **common)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg)
    model.save_pretrained(str(out / "model"))
    return _with_tokenizer(out / "model", name, out / "with_tok")


def _run_example(sharer_dir: Path, receiver_dir: Path, tmp_path: Path, s_cfg, r_cfg) -> str:
    cfg = lcfx.LCFXConfig(rank=16, slots=4, pool_heads=2, value_gate_init=1.0)
    adapter_dir = export_adapter(tmp_path / "adapter", lcfx.init_lcfx(jax.random.key(0), cfg, s_cfg, r_cfg), cfg,
                                 s_cfg, r_cfg)
    prelude = ("import sys\n"
               "for m in ('jax', 'jaxlib', 'flax', 'orbax'):\n"
               "    sys.modules[m] = None\n"
               f"SHARER_DIR, RECEIVER_DIR, ADAPTER_DIR = {str(sharer_dir)!r}, {str(receiver_dir)!r}, "
               f"{str(adapter_dir)!r}\n")
    script = tmp_path / "example.py"
    script.write_text(prelude + usage_example())
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=str(tmp_path), env=env,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-4000:]
    return res.stdout


def test_usage_example_runs_with_tiny_models(tmp_path):
    dirs = [_tiny_model(n, tmp_path / n) for n in PAIR]
    from transformers import AutoConfig
    cfgs = [convert.ModelConfig.from_hf_config(AutoConfig.from_pretrained(str(d))) for d in dirs]
    out = _run_example(dirs[0], dirs[1], tmp_path, *cfgs)
    assert len(out.splitlines()) == 1, out   # one answer line (tiny random models: any text)


@pytest.mark.real_models
def test_usage_example_runs_with_the_bundled_models(tmp_path):
    dirs = []
    for n in PAIR:
        registry.load_hf_model(n)  # makes sure the transformers directory exists
        dirs.append(_with_tokenizer(registry.cache_dir() / "hf" / n, n, tmp_path / n))
    out = _run_example(dirs[0], dirs[1], tmp_path, registry.PRESET_CONFIGS[PAIR[0]], registry.PRESET_CONFIGS[PAIR[1]])
    assert len(out.splitlines()) == 1, out


def test_readme_shows_the_same_example():
    """The README's PyTorch section carries the example the tests above run, verbatim."""
    readme = (ROOT / "README.md").read_text()
    assert usage_example().strip() in readme, "README.md's PyTorch example differs from docs/pytorch_usage.md"
