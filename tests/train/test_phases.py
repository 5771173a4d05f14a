"""Pre-training stages run through the main loop's step, NaN guard and checkpoints (`train.phase`)."""
import dataclasses

import jax
import numpy as np
import optax
import pytest

from lcf_jax.train import config as config_lib, loop, stage, token_translation
from lcf_jax.train.run_log import RunLog, read_metrics
from lcf_jax.train.step import NonFiniteLossError
from tests.offset_tok import OffsetTok
from tests.train.test_token_stages import PASSAGES, window_setup

STEPS = 12


def _cfg(tmp_path, *extra):
    return config_lib.parse_argv(["--config=configs/tiny.py", f"--config.train.workdir={tmp_path}",
                                  "--config.train.async_checkpoint=False", "--config.train.ckpt_every=5",
                                  "--config.train.log_every=2", *extra])


def _translation_phase():
    setup, frozen, params = window_setup()
    feed = token_translation.TokenBatches(PASSAGES, OffsetTok("chars", bos=False), OffsetTok("words", vocab=64),
                                          max_len=24, batch_size=4, seed=0)
    return token_translation.make_phase(frozen, feed, setup, steps=STEPS, lr=3e-3), params


class _Preempted(Exception):
    pass


def _stop_after(feed, n):
    """The feed, raising _Preempted when batch n + 1 is asked for (a kill mid-phase)."""
    class Stopping:
        def __init__(self):
            self.served = 0

        def __next__(self):
            if self.served == n:
                raise _Preempted
            self.served += 1
            return next(feed)

        def state(self):
            return feed.state()

        def restore(self, s):
            feed.restore(s)
    return Stopping()


def test_a_stage_killed_mid_phase_resumes_from_its_checkpoint_bit_for_bit(tmp_path):
    cfg = _cfg(tmp_path / "whole")
    ph, params = _translation_phase()
    log = RunLog(str(tmp_path / "whole"), True)
    whole = loop.run_pretraining_phase(ph, params, cfg, str(tmp_path / "whole"), log, lead=False)
    # the same stage, killed after 7 steps (checkpoint at 5), then rerun: it resumes at step 5, not 0
    cut = _cfg(tmp_path / "cut")
    ph2, params2 = _translation_phase()
    killed = dataclasses.replace(ph2, feed=_stop_after(ph2.feed, 7))
    log2 = RunLog(str(tmp_path / "cut"), True)
    with pytest.raises(_Preempted):
        loop.run_pretraining_phase(killed, params2, cut, str(tmp_path / "cut"), log2, lead=False)
    assert sorted(int(p.name) for p in (tmp_path / "cut" / "stages" / "translation").iterdir()
                  if p.name.isdigit()) == [5]
    ph3, params3 = _translation_phase()
    resumed = loop.run_pretraining_phase(ph3, params3, cut, str(tmp_path / "cut"), log2, lead=False)
    jax.tree.map(np.testing.assert_array_equal, whole, resumed)
    assert not all(np.array_equal(whole[k], params[k]) for k in token_translation.TRAINED_KEYS)
    # every logged step of the resumed run matches the uninterrupted one
    a = {r["step"]: r["loss"] for r in read_metrics(tmp_path / "whole") if r["kind"] == "pretrain"}
    b = {r["step"]: r["loss"] for r in read_metrics(tmp_path / "cut") if r["kind"] == "pretrain"}
    assert sorted(a) == list(range(2, STEPS + 1, 2)) and a == b
    assert {"loss", "grad_norm", "rel_err", "seconds"} <= set(read_metrics(tmp_path / "whole")[-1])
    # the checkpoint-free run of a stage (tests, benchmarks) takes the same steps
    ph4, params4 = _translation_phase()
    jax.tree.map(np.testing.assert_array_equal, whole, stage.run(ph4, params4, log_every=STEPS))


def test_a_non_finite_stage_loss_names_the_stage_the_step_and_the_fix():
    ph, params = _translation_phase()
    ph = dataclasses.replace(ph, optimizer=optax.sgd(1e30))
    with pytest.raises(NonFiniteLossError, match=r"^translation: non-finite loss or gradient at step \d+.*pretrain.lr"):
        stage.run(ph, params, log_every=1)


@pytest.mark.real_models
def test_the_window_recipe_runs_its_stages_through_the_loop_and_a_rerun_redoes_nothing(tmp_path):
    """The shipped recipe's two stages (token translation, locator), a few steps each on the bundled models:
    each stage checkpoints in stages/<name>, the locator's rows follow the translation's in metrics.jsonl, step 0
    of the main stage holds the result, and the same command again resumes there instead of pre-training again."""
    args = ["--config=configs/smollm2_to_gemma3_lcfx_window.py", f"--config.train.workdir={tmp_path}",
            "--config.train.async_checkpoint=False", "--config.train.log_every=1", "--config.train.ckpt_every=2",
            "--config.data.max_train_examples=24", "--config.data.batch_size=8", "--config.pretrain.steps=3",
            "--config.pretrain.batch_size=2", "--config.pretrain.max_len=32", "--config.pretrain.locator_steps=2",
            "--config.pretrain.locator_batch_size=2"]
    loop.train(config_lib.parse_argv(args))
    for name, last in (("translation", 3), ("locator", 2)):
        steps = sorted(int(p.name) for p in (tmp_path / "stages" / name).iterdir() if p.name.isdigit())
        assert steps[-1] == last, (name, steps)
    rows = [r for r in read_metrics(tmp_path) if r["kind"] == "pretrain"]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]
    assert "rel_err" in rows[2] and "locator_window_recall" in rows[4]
    assert (tmp_path / "checkpoints" / "0").is_dir()
    before = (tmp_path / "metrics.jsonl").read_text()
    loop.train(config_lib.parse_argv(args))   # resumes at step 0 of the main stage: no stage runs again
    assert (tmp_path / "metrics.jsonl").read_text() == before
