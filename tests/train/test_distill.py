"""Distillation from the teacher that reads the passage, with the positioned LCF-X message (tiny models)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lcf_jax.models import registry
from lcf_jax.train import config as config_lib
from lcf_jax.train import loop, objective, run_log

POSITIONED = ["--config.adapter.lcfx.injection='positioned'", "--config.data.teacher_context_len=16",
              "--config.distill.kl_weight=1.0", "--config.distill.hidden_weight=1.0"]


def _cfg(tmp_path, name, *extra):
    return config_lib.parse_argv(["--config=configs/tiny.py", f"--config.train.workdir={tmp_path / name}",
                                  "--config.train.async_checkpoint=False", "--config.mesh.num_devices=1",
                                  "--config.mesh.data=1", *extra])


@pytest.mark.parametrize("decoder", ["embed", "kv"])
def test_positioned_message_learns_the_teacher(tmp_path, decoder):
    cfg = _cfg(tmp_path, decoder, *POSITIONED, f"--config.adapter.lcfx.decoder='{decoder}'",
               "--config.adapter.lcfx.embed_hidden=32", "--config.train.steps=30", "--config.train.ckpt_every=30")
    loop.train(cfg)
    rows = [r for r in run_log.read_metrics(tmp_path / decoder) if r["kind"] == "train"]
    assert len(rows) == 30 and all(np.isfinite(r["loss"]) for r in rows)
    kl = [r["kl"] for r in rows]
    assert np.mean(kl[-5:]) < 0.8 * np.mean(kl[:5]), kl   # the student moves toward the teacher


def test_distill_terms_vanish_when_the_student_is_the_teacher():
    r_cfg, r_params = registry.load_any("tiny-gemma3")
    setup = objective.Setup("lcfx", None, r_cfg, r_cfg, loss_positions=4, kl_weight=1.0, hidden_weight=1.0)
    h = jax.random.normal(jax.random.key(0), (2, 8, r_cfg.hidden_size))
    ids = jnp.ones((2, 8), jnp.int32)
    w = jnp.arange(8)[None].repeat(2, 0) >= 5
    out = objective.distill_losses(h, h, r_params, ids, w, jnp.ones((2, 8), bool), setup)
    assert float(out["kl"]) == pytest.approx(0.0, abs=1e-6) and float(out["hidden"]) == 0.0
    other = objective.distill_losses(h, h + 1.0, r_params, ids, w, jnp.ones((2, 8), bool), setup)
    assert float(other["kl"]) > 0 and float(other["hidden"]) > 0


def test_distillation_without_teacher_rows_is_refused():
    with pytest.raises(ValueError, match="teacher_context_len"):
        config_lib.parse_argv(["--config=configs/tiny.py", "--config.distill.kl_weight=1.0"])
