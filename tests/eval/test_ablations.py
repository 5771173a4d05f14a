"""Ablation tables: finished tiny training runs (joint/separate LCF, LCF-X) re-scored on real dev data."""
import json

import pytest

from lcf_jax.train.export_run import export_checkpoint
from lcf_jax.adapters.lcf import lcf_groups
from lcf_jax.data import sources
from lcf_jax.eval import ablations as A
from lcf_jax.reproduce import main as reproduce_main
from lcf_jax.train import config as config_lib
from lcf_jax.train import loop
from tests.comm.tiny_agents import tiny_agent

pytestmark = pytest.mark.skipif(not sources.resolve_data_dir().exists(), reason="../shared/data is absent")


def _train(tmp_path, name, kind, *extra):
    cfg = config_lib.parse_argv(["--config=configs/tiny.py", f"--config.train.workdir={tmp_path / name}",
                                 "--config.train.async_checkpoint=False", "--config.train.steps=2",
                                 "--config.train.ckpt_every=2", f"--config.adapter.kind='{kind}'", *extra])
    loop.train(cfg)
    return str(tmp_path / name)


def test_ablation_tables_score_each_run_against_the_receiver_alone(tmp_path):
    agents = {"tiny-llama": tiny_agent("tiny-llama", bos=False), "tiny-gemma3": tiny_agent("tiny-gemma3", bos=True, seed=1)}
    paths = {"joint": _train(tmp_path, "joint", "lcf", "--config.adapter.lcf.rank=8"),
             "separate": _train(tmp_path, "sep", "lcf", "--config.adapter.lcf.rank=8", "--config.adapter.lcf.joint_kv=False"),
             "m4": _train(tmp_path, "m4", "lcfx", "--config.adapter.lcfx.slots=4", "--config.adapter.lcfx.rank=8")}
    runs = {k: A.load_run(p, agents) for k, p in paths.items()}
    joint = runs["joint"]
    n_layers = len(lcf_groups(joint["config"], joint["sharer"].config, joint["receiver"].config)[0].receiver_layers)
    assert runs["separate"]["params_count"] == joint["params_count"] + 2 * 8 * n_layers  # equal up to a 2nd norm/bias

    export_checkpoint(paths["joint"], tmp_path / "pruned", prune={"target_rank": 4})
    runs["pruned"] = A.load_run(str(tmp_path / "pruned"), agents)  # an exported adapter dir loads too
    assert runs["pruned"]["step"] == 2 and runs["pruned"]["params_count"] < joint["params_count"]

    shared = A.table_shared_context_ablations({k: runs[k] for k in ("joint", "separate", "pruned")}, n=2)
    names = [r[0] for r in shared.rows]
    assert names == ["tiny-gemma3 alone", "joint", "separate", "pruned"]
    assert [r[2] for r in shared.rows[1:]] == ["joint K/V, r=8", "separate K/V, r=8", "joint K/V, r=4 (pruned)"]
    for row in shared.rows:
        accs, nlls = row[6::2], row[7::2]
        assert len(accs) == len(A.ABLATION_MC_SETS) and all(0 <= a <= 100 for a in accs) and all(x > 0 for x in nlls)
    cross = A.table_cross_context_ablations({"m4": runs["m4"]}, n=2)
    assert [r[0] for r in cross.rows] == ["tiny-gemma3 alone", "m4"]
    assert cross.rows[1][1].startswith("m=4, r=8") and all(0 <= v <= 100 for v in cross.rows[1][5:])

    reproduce_main(["--table", "ablations", "--out", str(tmp_path / "out"), "--ablation-n", "2",
                    "--ablation-runs", f"joint={paths['joint']}"], agents=agents)
    assert "| joint | lcf | joint K/V, r=8 |" in (tmp_path / "out" / "ablations_shared_context.md").read_text()

    # T1 through the same exported adapters: each adapter row paired against its receiver alone, and the plot
    reproduce_main(["--table", "t1", "--n", "3", "--out", str(tmp_path / "t1"),
                    "--t1-adapters", f"LCF={paths['joint']},LCF pruned=" + str(tmp_path / "pruned")], agents=agents)
    saved = json.loads((tmp_path / "t1" / "t1_shared_context.json").read_text())
    lcf = {r["set"]: r for r in saved if r["method"] == "LCF"}
    alone = {r["set"]: r for r in saved if r["method"] == "tiny-gemma3 alone"}
    assert set(lcf) == set(alone) and all(len(r["correct_per_question"]) == 3 for r in saved)
    pooled = lambda rows: [x for s in sorted(rows) for x in rows[s]["correct_per_question"]]  # noqa: E731
    want = sum(a - b for a, b in zip(pooled(lcf), pooled(alone))) / len(pooled(lcf))
    row = next(line for line in (tmp_path / "t1" / "t1_shared_context.md").read_text().splitlines()
               if line.startswith("| LCF |"))
    assert f"| {want:.1f} [" in row     # the paired Δ against tiny-gemma3 alone, over every question
    assert (tmp_path / "t1" / "t1_size_accuracy.png").stat().st_size > 1000


def test_ablations_need_runs(capsys):
    with pytest.raises(SystemExit) as exit_info:
        reproduce_main(["--table", "ablations"])
    assert exit_info.value.code == 2 and "--ablation-runs" in capsys.readouterr().err
