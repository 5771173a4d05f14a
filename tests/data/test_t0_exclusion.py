"""T0 templates built on an evaluated set are never read (hand-made fixture; no shared data needed)."""
import json

import pytest

from lcf_jax.data import sources, splits
from lcf_jax.data import tfds_builders as tb

# template file stem -> whether training may read it
TEMPLATES = {
    "commonsense_qa_question_answering": False,      # CommonsenseQA
    "cos_e_v1.11_explain_why_human": False,          # CoS-E: CommonsenseQA's questions
    "social_i_qa_Generate_answer": False,            # SIQA
    "piqa_what_is_the_correct_ending": False,        # PIQA
    "ai2_arc_ARC_Challenge_pick_the_most_correct_option": False,
    "openbookqa_main_choose_an_answer_with_options": False,
    "hendrycks_test_abstract_algebra_multiple_choice": False,
    "common_gen_Put_together": True,                 # a name that starts like "commonsense_qa", another set
    "cosmos_qa_context_answer_to_question": True,    # starts like "cos_e", another set
    "sciq_Multiple_Choice": True,                    # multiple choice on a set nobody evaluates: welcome
}


def _t0_fixture(root):
    d = root / "instruct" / "t0"
    d.mkdir(parents=True)
    for stem in TEMPLATES:
        rows = [{"prompt": f"{stem} prompt {i}", "completion": f"answer {i}<|endoftext|>"} for i in range(3)]
        (d / f"{stem}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_evaluated_templates_are_named_with_a_reason():
    for stem, allowed in TEMPLATES.items():
        reason = splits.evaluated_t0_source(stem)
        assert (reason is None) == allowed, stem
    assert "CommonsenseQA" in splits.evaluated_t0_source("cos_e_v1.11_explain_why_human")
    assert all(reason for _, reason in splits.EVALUATED_T0_SOURCES)


def test_reading_t0_leaves_out_templates_built_on_evaluated_sets(tmp_path):
    _t0_fixture(tmp_path)
    stats = {}
    rows = sources.read("instruct/t0", "train", data_dir=tmp_path, stats=stats)
    read = {r["id"].split("/", 1)[1].rsplit("-", 1)[0] for r in rows}
    assert read == {stem for stem, allowed in TEMPLATES.items() if allowed}
    assert len(rows) == 3 * len(read)
    n_excluded = sum(not allowed for allowed in TEMPLATES.values())
    assert stats["excluded_templates"] == n_excluded and stats["excluded_rows"] == 3 * n_excluded
    assert rows[0]["completion"] == "answer 0"


def test_the_tfds_build_training_reads_leaves_them_out_too(tmp_path):
    """What `train.feed` loads: the TFDS build of instruct/t0 (a version of its own, so an older cache that
    still holds the evaluated templates is not reused)."""
    raw, cache = tmp_path / "raw", tmp_path / "cache"
    _t0_fixture(raw)
    ds = tb.load("instruct/t0", "train", raw, cache)
    assert sorted(ds[i]["id"] for i in range(len(ds))) == sorted(
        r["id"] for r in sources.read("instruct/t0", data_dir=raw))
    assert not any(splits.evaluated_t0_source(ds[i]["id"][3:].rsplit("-", 1)[0]) for i in range(len(ds)))
    assert str(tb.build("instruct/t0", raw, cache).version) != tb.VERSION


@pytest.mark.parametrize("name", ["commonsense_qa", "social_i_qa_Show_choices_and_generate_index", "mmlu"])
def test_bare_and_prefixed_names_match(name):
    assert splits.evaluated_t0_source(name) is not None
