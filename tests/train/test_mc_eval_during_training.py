"""Shared-context runs evaluate dev multiple choice during training and keep the best step by it (tiny models)."""
import json

import pytest

from lcf_jax.eval import during_training
from lcf_jax.train import config as config_lib
from lcf_jax.train import loop, run_log, run_setup
from lcf_jax.train.ckpt import Checkpointer
from tests.offset_tok import OffsetTok

TOKENIZERS = (OffsetTok("words"), OffsetTok("chars"))


def _mc_fixture(root, name="arc_easy", n=16):
    (root / "mc").mkdir(parents=True, exist_ok=True)
    options = ["red", "a cat", "twelve mats", "the blue sky"]
    rows = [{"query": f"Question: which one, {i}?", "choices": options[: 2 + i % 3], "gold": i % 2} for i in range(n)]
    (root / "mc" / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _cfg(tmp_path, *extra):
    _mc_fixture(tmp_path / "data")
    return config_lib.parse_argv([
        "--config=configs/tiny.py", "--config.adapter.kind='lcf'", f"--config.train.workdir={tmp_path / 'run'}",
        "--config.train.async_checkpoint=False", "--config.train.eval_every=2", "--config.train.keep_last=1",
        f"--config.data.data_dir={tmp_path / 'data'}", "--config.data.mc_eval_sets=['mc/arc_easy']",
        "--config.data.mc_eval_examples=6", *extra])


def _evals(workdir):
    return [r for r in run_log.read_metrics(workdir) if r["kind"] == "eval"]


def test_dev_rows_split_evenly_over_the_sets(tmp_path):
    _mc_fixture(tmp_path, "arc_easy", 16)
    _mc_fixture(tmp_path, "piqa", 10)
    got = during_training.mc_eval_examples(["mc/arc_easy", "mc/piqa"], 7, tmp_path)
    assert [len(v) for v in got.values()] == [4, 3]
    assert [e["id"] for e in got["mc/piqa"]] == ["piqa-0", "piqa-4", "piqa-8"]   # dev: even rows, evenly spaced
    assert all(int(e["id"].split("-")[1]) % 2 == 0 for rows in got.values() for e in rows)


def test_a_no_op_adapter_scores_as_the_receiver_alone(tmp_path):
    """LCF starts as a no-op (zero up-projection): its accuracy is the receiver alone's, both scored as T1."""
    cfg = _cfg(tmp_path)
    b = run_setup.build(cfg)
    evaluate = during_training.make_train_evaluator(cfg, b.setup, b.frozen, None, TOKENIZERS)
    m = evaluate(b.params, 0)
    assert m["n"] == 6 and m["mc_acc"] == m["mc_acc_alone"] == m["mc_acc/arc_easy"] and m["mc_acc_delta"] == 0


def test_run_logs_accuracy_beside_the_receiver_alone_and_keeps_the_best_step(tmp_path):
    cfg = _cfg(tmp_path, "--config.train.steps=6")
    loop.train(cfg, make_evaluate=lambda cfg, setup, frozen, qa, _: during_training.make_train_evaluator(
        cfg, setup, frozen, qa, TOKENIZERS))
    rows = _evals(tmp_path / "run")
    assert [r["step"] for r in rows] == [2, 4, 6]
    assert len({r["mc_acc_alone"] for r in rows}) == 1          # scored once
    for r in rows:
        assert r["n"] == 6 and r["mc_acc_delta"] == pytest.approx(r["mc_acc"] - r["mc_acc_alone"])
    with Checkpointer(tmp_path / "run" / "checkpoints", keep_last=1, keep_best=1, best_metric="mc_acc") as ck:
        best = ck.best_step()
        assert best in ck.all_steps() and 6 in ck.all_steps()
    assert {r["step"]: r["mc_acc"] for r in rows}[best] == max(r["mc_acc"] for r in rows)


def test_the_step_with_the_highest_accuracy_is_the_one_kept(tmp_path):
    """Scripted accuracies: keep_last=1 deletes every step but the newest and the best by mc_acc."""
    accuracy = {2: 40.0, 4: 70.0, 6: 50.0, 8: 60.0}
    cfg = _cfg(tmp_path, "--config.train.steps=8", "--config.data.mc_eval_examples=0")
    loop.train(cfg, evaluate=lambda params, step: {"mc_acc": accuracy[step], "mc_acc_alone": 55.0})
    assert {r["step"]: r["mc_acc"] for r in _evals(tmp_path / "run")} == accuracy
    with Checkpointer(tmp_path / "run" / "checkpoints", keep_last=1, keep_best=1, best_metric="mc_acc") as ck:
        assert ck.best_step() == 4
        assert ck.all_steps() == [4, 8]


def test_mc_evaluation_is_for_shared_context_kinds_and_known_sets(tmp_path):
    with pytest.raises(ValueError, match="shared-context"):
        _cfg(tmp_path, "--config.adapter.kind='lcfx'")
    with pytest.raises(ValueError, match="mc_eval_sets"):
        _cfg(tmp_path, "--config.data.mc_eval_sets=['squad']")
