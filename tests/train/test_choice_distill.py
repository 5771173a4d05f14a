"""Choice distillation: T0 questions with options, their batches, the grouped forward and the loss (tiny models)."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lcf_jax.adapters import ADAPTER_KINDS
from lcf_jax.adapters.lcf import LCFConfig
from lcf_jax.data import choice_questions as cq
from lcf_jax.data.shared_context import mc_features
from lcf_jax.models import registry
from lcf_jax.train import objective
from lcf_jax.train.objective import Setup
from tests.offset_tok import OffsetTok

SCIQ = ("Q: What type of organism is used to make yogurt?\n\n Choices:\n\n- viruses\n\n- gymnosperms\n\n"
        "- protozoa\n\n- mesophilic organisms\n\nA:\n")
WIQA = ("Process:\n\n- A tree produces seeds\n- The seeds are dispersed\n- \n\nsuppose fewer trees, how will it "
        "affect forests.\n\nWhich of the following is the supposed perturbation?\n\n- directly impacting a step\n"
        "- indirectly impacting a step\n- not impacting any step\n")


def test_the_last_option_block_is_the_choices_and_the_rest_stays_in_the_question():
    q, opts = cq.option_block(SCIQ)
    assert opts == ["viruses", "gymnosperms", "protozoa", "mesophilic organisms"]
    assert q.startswith("Q: What type") and q.endswith("A:") and "viruses" not in q
    q, opts = cq.option_block(WIQA)   # the process's steps are an earlier block, not the options
    assert opts == ["directly impacting a step", "indirectly impacting a step", "not impacting any step"]
    assert "A tree produces seeds" in q and "directly" not in q
    assert cq.option_block("Is this a question?\n- only one") is None


def test_a_label_set_template_becomes_questions_and_a_choice_cut_keeps_the_answer():
    rows = [{"prompt": f"Review {i}: good or bad?", "completion": ["good", "bad"][i % 2]} for i in range(6)]
    qs = cq.template_questions("reviews", rows, np.random.default_rng(0), max_choices=4)
    assert [q["choices"] for q in qs] == [["bad", "good"]] * 6
    assert [q["choices"][q["gold"]] for q in qs] == [r["completion"] for r in rows]
    free = [{"prompt": f"Say {i}", "completion": f"word {i}"} for i in range(6)]   # free text: not a question
    assert cq.template_questions("free", free, np.random.default_rng(0), max_choices=4) == []
    eight = [{"prompt": "Pick one:\n" + "\n".join(f"- o{k}" for k in range(8)), "completion": f"o{j}"} for j in range(8)]
    for q, r in zip(cq.template_questions("eight", eight, np.random.default_rng(1), max_choices=3), eight):
        assert len(q["choices"]) == 3 and q["choices"][q["gold"]] == r["completion"]


def test_questions_leave_out_evaluated_sets_and_repeat_no_question(tmp_path):
    t0 = tmp_path / "instruct" / "t0"
    t0.mkdir(parents=True)
    row = {"prompt": SCIQ, "completion": "mesophilic organisms<|endoftext|>"}
    for stem in ("sciq_a", "sciq_b", "commonsense_qa_x"):
        (t0 / f"{stem}.jsonl").write_text(json.dumps(row) + "\n")
    stats = {}
    qs = cq.t0_choice_questions(tmp_path, per_template=5, stats=stats)
    assert [q["id"] for q in qs] == ["t0/sciq_a-0"]   # sciq_b repeats it; CommonsenseQA is evaluated
    assert stats == {"excluded_templates": 1, "templates": 1, "questions": 1}


def test_a_missing_or_unscored_choice_file_is_one_clear_error(tmp_path):
    with pytest.raises(cq.ChoiceFileError, match="does not exist: write it with python -m lcf_jax.train.choice_targets"):
        cq.read_scored(str(tmp_path / "none.jsonl"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "q", "choices": ["a", "b"], "teacher": [0.0]}) + "\n")
    with pytest.raises(cq.ChoiceFileError, match="line 1 lacks"):
        cq.read_scored(str(bad))


QUESTIONS = [{"question": "Which is a colour?", "choices": ["red", "a cat", "twelve mats"], "teacher": [-1.0, -3.0, -4.0]},
             {"question": "Is a mat a cat?", "choices": ["yes", "no"], "teacher": [-2.0, -0.5]},
             {"question": "Which number is even?", "choices": ["3", "4", "5", "7"], "teacher": [-3.0, -0.2, -2.0, -2.5]},
             {"question": "Pick the animal", "choices": ["dog", "rock"], "teacher": [-0.1, -4.0]}]


def _features():
    return mc_features(OffsetTok("words"), OffsetTok("chars"), max_context_len=64, max_choice_len=8)


def test_a_batch_holds_each_question_as_a_group_of_rows_with_its_teacher():
    it = cq.ChoiceBatches(_features(), QUESTIONS, group=4, batch_size=2, seed=0)
    seen = []
    for _ in range(2):
        b = next(it)
        assert b.receiver_ids.shape[0] == 8 and b.choice_teacher.shape == (8,)
        for g in range(2):
            rows = slice(4 * g, 4 * g + 4)
            ctx = np.asarray(b.receiver_ctx_ids[rows])
            assert (ctx == ctx[:1]).all() and (np.asarray(b.sharer.ids[rows]) == np.asarray(b.sharer.ids[4 * g])).all()
            n = int(np.asarray(b.example_mask[rows]).sum())
            assert list(np.asarray(b.example_mask[rows])) == [True] * n + [False] * (4 - n)
            seen.append(tuple(np.asarray(b.choice_teacher[rows])[:n]))
    assert sorted(seen) == sorted(tuple(np.float32(q["teacher"])) for q in QUESTIONS)
    with pytest.raises(cq.ChoiceFileError, match="more than data.choice_group=2"):
        cq.ChoiceBatches(_features(), QUESTIONS, group=2, batch_size=2)


def _tiny():
    s, r = registry.load_any("tiny-llama"), registry.load_any("tiny-gemma3")
    acfg = LCFConfig(rank=16)
    params = ADAPTER_KINDS["lcf"].init(jax.random.key(0), acfg, s[0], r[0])
    params = jax.tree.map(lambda x: x + 0.05 * jax.random.normal(jax.random.key(1), x.shape, x.dtype), params)
    return s, r, acfg, params


@pytest.mark.parametrize("train", [False, True])
def test_a_group_reads_and_fuses_its_context_once_as_every_row_reading_it(train):
    s, r, acfg, params = _tiny()
    setup = Setup("lcf", acfg, s[0], r[0])
    batch = jax.tree.map(jnp.asarray, next(cq.ChoiceBatches(_features(), QUESTIONS, group=4, batch_size=2)))
    rng = jax.random.key(3)
    want = objective.receiver_hidden(params, s[1], r[1], batch, setup, train=train, rng=rng)
    got = objective.receiver_hidden(params, s[1], r[1], batch, setup, train=train, rng=rng, group=4)
    m = np.asarray(batch.receiver_mask, bool)
    np.testing.assert_allclose(np.asarray(got)[m], np.asarray(want)[m], rtol=1e-4, atol=1e-4)
    # groups of 2 over rows whose contexts differ at row 2 would fuse the wrong context: the comparison can fail
    wrong = objective.receiver_hidden(params, s[1], r[1], batch, setup, train=train, rng=rng, group=8)
    assert not np.allclose(np.asarray(wrong)[m], np.asarray(want)[m], atol=1e-3)


def test_the_loss_is_zero_at_the_teacher_ignores_padding_and_trains_the_adapter():
    valid = jnp.asarray([True, True, True, False, True, True, False, False])
    teacher = jnp.asarray([-1.0, -2.0, -0.5, 0.0, -3.0, -0.1, 0.0, 0.0])
    same = objective.choice_distill_losses(teacher + 7.0 * ~valid, teacher, valid, 4, 1.0)   # padding differs
    assert float(same["loss"]) == pytest.approx(0.0, abs=1e-6) and float(same["agree"]) == 1.0
    other = objective.choice_distill_losses(-teacher, teacher, valid, 4, 1.0)
    assert float(other["loss"]) > 0.1 and float(other["agree"]) == 0.0
    s, r, acfg, params = _tiny()
    setup = Setup("lcf", acfg, s[0], r[0], choice_group=4)
    batch = jax.tree.map(jnp.asarray, next(cq.ChoiceBatches(_features(), QUESTIONS, group=4, batch_size=2)))
    (loss, aux), g = jax.value_and_grad(objective.loss_fn, has_aux=True)(params, s[1], r[1], batch, setup)
    assert np.isfinite(float(loss)) and float(aux["target_tokens"]) == float(
        np.sum(np.asarray(batch.loss_mask) * np.asarray(batch.example_mask)[:, None]))
    assert float(jnp.sqrt(sum(jnp.sum(x ** 2) for x in jax.tree.leaves(g)))) > 0


def test_choice_distillation_settings_that_cannot_run_are_refused():
    from lcf_jax.train import config as config_lib

    c = config_lib.base_config()
    c.adapter.kind, c.data.task, c.data.choice_file = "lcf", "instruct", "x.jsonl"
    c.train.sharer_cache = "stored"
    with pytest.raises(ValueError, match="reads its questions' contexts in the step"):
        config_lib.validate(c)
    c.train.sharer_cache, c.adapter.kind, c.data.task = "on_the_fly", "lcfx", "qa"
    with pytest.raises(ValueError, match="trains a shared-context adapter"):
        config_lib.validate(c)


@pytest.mark.parametrize("model", ["tiny-llama", "tiny-gemma3"])
def test_the_teacher_reading_the_prompt_once_scores_as_reading_it_per_choice(model):
    from lcf_jax.comm.agents import Agent
    from lcf_jax.eval.tables import mc_loglik
    from lcf_jax.train.choice_targets import mc_logliks_read_once

    config, params = registry.load_any(model)
    agent = Agent(model, config, params, OffsetTok("chars"))
    questions = [("Which is a colour?", ["red", "a cat", "twelve mats", "red"]),
                 ("Is a mat a cat? " * 3, ["yes", "no way at all, not ever, never"])]
    got = mc_logliks_read_once(agent, questions)
    for (question, choices), g in zip(questions, got):
        np.testing.assert_allclose(g, mc_loglik(agent, question, choices), rtol=1e-4, atol=1e-4)
    swapped = mc_logliks_read_once(agent, [(questions[1][0], questions[0][1]), (questions[0][0], questions[1][1])])
    assert not np.allclose(swapped[0], got[0], atol=1e-3)


def test_the_gold_teacher_is_the_answer_s_cross_entropy():
    q = {"question": "q", "choices": ["a", "b", "c"], "gold": 1}
    teacher = jnp.asarray(cq.gold_scores(q) + [0.0])
    scores = jnp.asarray([-1.0, -2.0, -0.5, 0.0])
    valid = jnp.asarray([True, True, True, False])
    got = objective.choice_distill_losses(scores, teacher, valid, 4, 1.0)
    assert float(got["loss"]) == pytest.approx(float(-jax.nn.log_softmax(scores[:3])[1]), rel=1e-5)
    assert float(got["agree"]) == 0.0   # the student's top choice is c, the answer b


def test_a_control_batch_repeats_each_question_with_the_sharer_reading_the_next_one():
    f = _features()
    own = cq.ChoiceBatches(f, QUESTIONS, group=4, batch_size=2, seed=0)
    both = cq.ChoiceBatches(f, QUESTIONS, group=4, batch_size=2, seed=0, controls=True)
    a, b = next(own), next(both)
    assert b.receiver_ids.shape[0] == 16
    for field in ("receiver_ids", "receiver_mask", "receiver_ctx_ids", "alignment", "loss_mask", "example_mask",
                  "choice_teacher"):
        np.testing.assert_array_equal(np.asarray(getattr(b, field))[:8], np.asarray(getattr(a, field)))
        np.testing.assert_array_equal(np.asarray(getattr(b, field))[8:], np.asarray(getattr(a, field)))
    ids, mask = np.asarray(b.sharer.ids), np.asarray(b.sharer.mask)
    np.testing.assert_array_equal(mask[8:], mask[:8])   # the control keeps each question's sharer length
    for k, other in ((0, 1), (1, 0)):                    # question k's control reads question k + 1 of the batch
        n = int(mask[4 * k].sum())
        theirs = ids[4 * other][mask[4 * other].astype(bool)]
        mine = ids[8 + 4 * k][mask[8 + 4 * k].astype(bool)]
        assert len(mine) == n and mine[0] == theirs[0]
        assert (mine[1:min(n, len(theirs))] == theirs[1:min(n, len(theirs))]).all()
        assert not np.array_equal(mine, ids[4 * k][mask[4 * k].astype(bool)])
    with pytest.raises(ValueError, match="batch_size >= 2"):
        cq.ChoiceBatches(f, QUESTIONS, group=4, batch_size=1, controls=True)


def test_the_receiver_alone_is_the_fused_receiver_of_a_no_op_adapter():
    s, r, acfg, params = _tiny()
    setup = Setup("lcf", acfg, s[0], r[0])
    batch = jax.tree.map(jnp.asarray, next(cq.ChoiceBatches(_features(), QUESTIONS, group=4, batch_size=2)))
    no_op = ADAPTER_KINDS["lcf"].init(jax.random.key(0), acfg, s[0], r[0])   # LCF starts as an exact no-op
    alone = objective.receiver_alone_hidden(r[1], batch, setup, group=4)
    m = np.asarray(batch.receiver_mask, bool)
    fused = objective.receiver_hidden(no_op, s[1], r[1], batch, setup, train=False, group=4)
    np.testing.assert_allclose(np.asarray(alone)[m], np.asarray(fused)[m], rtol=1e-4, atol=1e-4)
    moved = objective.receiver_hidden(params, s[1], r[1], batch, setup, train=False, group=4)
    assert not np.allclose(np.asarray(alone)[m], np.asarray(moved)[m], atol=1e-3)


def test_the_control_term_is_zero_for_a_no_op_adapter_and_trains_a_moved_one():
    s, r, acfg, params = _tiny()
    setup = Setup("lcf", acfg, s[0], r[0], choice_group=4, choice_control_weight=1.0)
    batch = jax.tree.map(jnp.asarray, next(cq.ChoiceBatches(_features(), QUESTIONS, group=4, batch_size=2,
                                                             controls=True)))
    no_op = ADAPTER_KINDS["lcf"].init(jax.random.key(0), acfg, s[0], r[0])
    _, aux = objective.loss_fn(no_op, s[1], r[1], batch, setup, train=False)
    assert float(aux["control_kl"]) == pytest.approx(0.0, abs=1e-5)
    plain = Setup("lcf", acfg, s[0], r[0], choice_group=4)
    _, own = objective.loss_fn(no_op, s[1], r[1], jax.tree.map(lambda x: x[:8] if x.ndim else x, batch), plain,
                               train=False)
    assert float(aux["kl"]) == pytest.approx(float(own["kl"]), rel=1e-5)   # the first half is the plain loss
    (loss, aux), g = jax.value_and_grad(objective.loss_fn, has_aux=True)(params, s[1], r[1], batch, setup,
                                                                         train=False)
    assert float(aux["control_kl"]) > 1e-4
    assert float(loss) == pytest.approx(float(aux["kl"]) + float(aux["control_kl"]), rel=1e-5)
    assert float(jnp.sqrt(sum(jnp.sum(x ** 2) for x in jax.tree.leaves(g)))) > 0


def test_the_control_weight_is_refused_without_choice_distillation_or_a_second_question():
    from lcf_jax.train import config as config_lib

    c = config_lib.base_config()
    c.adapter.kind, c.data.task, c.distill.control_weight = "lcf", "instruct", 1.0
    with pytest.raises(ValueError, match="read by choice distillation only"):
        config_lib.validate(c)
    c.data.choice_file, c.data.batch_size = "x.jsonl", 1
    with pytest.raises(ValueError, match="needs data.batch_size >= 2"):
        config_lib.validate(c)


def test_the_gold_teacher_file_is_the_answer_key_and_reads_back(tmp_path):
    from lcf_jax.train.choice_targets import main

    t0 = tmp_path / "instruct" / "t0"
    t0.mkdir(parents=True)
    (t0 / "sciq_a.jsonl").write_text(json.dumps({"prompt": SCIQ, "completion": "protozoa<|endoftext|>"}) + "\n")
    out = tmp_path / "gold.jsonl"
    main(["--config=configs/gemma3_to_smollm2_lcf_gold_control.py", f"--config.data.data_dir={tmp_path}",
          "--teacher", "gold", "--out", str(out)])
    (q,) = cq.read_scored(str(out))
    assert q["choices"][q["gold"]] == "protozoa" and q["teacher"] == cq.gold_scores(q)
    assert q["teacher"][q["gold"]] == 0.0 and sorted(q["teacher"])[:-1] == [cq.GOLD_OFF] * (len(q["choices"]) - 1)
