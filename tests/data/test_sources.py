"""Readers against every real file in the shared data dir (skipped when it is absent)."""
import json

import pytest

from lcf_jax.data import sources, splits

DATA_DIR = sources.resolve_data_dir(None)
needs_data = pytest.mark.skipif(
    not (DATA_DIR / "qa_context" / "squad_v1.1_dev.json").exists(),
    reason=f"shared data dir {DATA_DIR} is absent (set $LCF_DATA_DIR or place it at "
           "../shared/data from the repo root)",
)

QA_KEYS = {"id", "sharer_context", "question", "answers", "target"}
MC_KEYS = {"id", "question", "choices", "gold", "subject"}


def _check_qa(ex):
    assert set(ex) == QA_KEYS
    assert ex["sharer_context"].strip() and ex["question"].strip()
    assert ex["answers"] and all(isinstance(a, str) and a for a in ex["answers"])
    assert ex["target"] == ex["answers"][0]


@needs_data
def test_squad_counts_and_article_split():
    all_ex = sources.read("squad")
    assert len(all_ex) == 10_570
    for ex in all_ex[::50]:
        _check_qa(ex)
    raw = json.loads((DATA_DIR / "qa_context/squad_v1.1_dev.json").read_text())["data"]
    assert len(raw) == 48
    assert sum(len(a["paragraphs"]) for a in raw) == 2_067
    dev_ids = {q["id"] for a in raw[:24] for p in a["paragraphs"] for q in p["qas"]}
    test_ids = {q["id"] for a in raw[24:] for p in a["paragraphs"] for q in p["qas"]}
    dev, test = sources.read("squad", "dev"), sources.read("squad", "test")
    assert {e["id"] for e in dev} == dev_ids and len(dev) == len(dev_ids)
    assert {e["id"] for e in test} == test_ids and len(test) == len(test_ids)
    assert len(dev) + len(test) == 10_570
    assert dev[0]["target"] == "Denver Broncos"


@needs_data
def test_nq_openbook():
    all_ex = sources.read("nq_openbook")
    assert len(all_ex) == 824
    for ex in all_ex:
        _check_qa(ex)
        assert not ex["sharer_context"].startswith("Context:")
        assert "\nQuestion:" not in ex["sharer_context"]
        assert not ex["question"].endswith("Answer:")
    dev, test = sources.read("nq_openbook", "dev"), sources.read("nq_openbook", "test")
    assert len(dev) == len(test) == 412
    assert dev[-1]["id"] == "nq_openbook-411" and test[0]["id"] == "nq_openbook-412"
    assert all_ex[0]["question"] == "what do the 3 dots mean in math"
    assert all_ex[0]["answers"][0] == "the therefore sign"


@needs_data
def test_hotpotqa_and_quac():
    hp = sources.read("hotpotqa", "test")
    assert len(hp) == 500
    for ex in hp:
        _check_qa(ex)
    assert hp[0]["sharer_context"].startswith("Title: Meet Corliss Archer\n")
    assert hp[0]["answers"] == ["Chief of Protocol"]
    quac = sources.read("quac", "test")
    assert len(quac) == 1000
    for ex in quac:
        _check_qa(ex)
        assert "\n\nQuestion: " not in ex["sharer_context"]
        assert not ex["question"].startswith("Question: ")
    assert quac[0]["sharer_context"].startswith("Title: Anna Vissi")
    assert quac[0]["question"].endswith("did she have any other children?")
    assert quac[0]["answers"][0] == "CANNOTANSWER"
    with pytest.raises(splits.SplitError):
        sources.read("hotpotqa", "dev")
    sp = sources.read("hotpotqa_supporting", "test")
    assert [e["question"] for e in sp] == [e["question"] for e in hp]
    for short, full in zip(sp, hp):
        assert short["sharer_context"].count("Title: ") == 2
        assert all(p in full["sharer_context"] for p in short["sharer_context"].split("\n\n"))
    with pytest.raises(splits.SplitError):
        sources.read("hotpotqa_supporting", "dev")


# kept counts as measured on the shipped files (BIG-bench 1.0.0)
QA_TRAIN_EXPECTED = {
    "qa_train/drop": 6_500,
    "qa_train/quoref": 6_500,
    "qa_train/ropes": 6_500,
    "qa_train/multirc": 3_623,
    "qa_train/cosmosqa": 6_500,
    "qa_train/disfl_qa": 0,  # every passage is a SQuAD v1.1 dev paragraph: dropped by default
}


@needs_data
@pytest.mark.parametrize("name", splits.QA_TRAIN_SETS)
def test_qa_train_files(name):
    stats = {}
    exs = sources.read(name, "train", stats=stats)
    print(f"{name}: kept {len(exs)} of {stats['total']}  {stats}")
    assert len(exs) == QA_TRAIN_EXPECTED[name]
    assert stats.get("kept", 0) == len(exs)
    assert stats["total"] == len(exs) + stats.get("dropped_unsplittable", 0) + stats.get(
        "dropped_squad_overlap", 0)
    for ex in exs:
        _check_qa(ex)
        assert "\nQuestion: " not in ex["sharer_context"]
    if name in ("qa_train/quoref", "qa_train/ropes"):  # extractive: the un-dotted span is there
        assert all(ex["target"] in ex["sharer_context"] + ex["question"] for ex in exs)
    if name == "qa_train/multirc":
        assert "Sent 1:" not in exs[0]["sharer_context"]
        assert "(A)" in exs[0]["question"]


@needs_data
def test_disfl_qa_overlap_with_squad():
    stats = {}
    kept = sources.read("qa_train/disfl_qa", stats=stats, squad_overlap="keep")
    assert len(kept) == 7_999 and stats["dropped_unsplittable"] == 1
    keys = sources.squad_paragraph_keys(DATA_DIR)
    assert all(sources._squad_paragraph_key(ex["sharer_context"]) in keys for ex in kept)
    with pytest.raises(ValueError):
        sources.read("qa_train/disfl_qa", squad_overlap="maybe")


MC_EXPECTED = {  # total rows, kept rows
    "mc/mmlu_redux": (5_700, 5_330),
    "mc/arc_challenge": (1_172, 1_172),
    "mc/arc_easy": (2_376, 2_376),
    "mc/openbook_qa": (500, 500),
    "mc/piqa": (1_838, 1_838),
    "mc/siqa": (1_954, 1_954),
    "mc/commonsense_qa": (1_221, 1_221),
}


@needs_data
@pytest.mark.parametrize("name", splits.MC_SETS)
def test_mc_files(name):
    total, kept = MC_EXPECTED[name]
    exs = sources.read(name)
    assert len(exs) == kept
    for ex in exs:
        assert set(ex) == MC_KEYS
        assert 0 <= ex["gold"] < len(ex["choices"])
    # one MMLU sociology item ("ok" in MMLU-Redux) has an empty question in the source; kept
    empty = [ex["id"] for ex in exs if not ex["question"].strip()]
    assert empty == (["mmlu_redux-5338"] if name == "mc/mmlu_redux" else [])
    dev, test = sources.read(name, "dev"), sources.read(name, "test")
    assert len(dev) + len(test) == kept
    # ids carry the raw row index; parity decides the split even after filtering
    assert all(int(e["id"].rsplit("-", 1)[1]) % 2 == 0 for e in dev)
    assert all(int(e["id"].rsplit("-", 1)[1]) % 2 == 1 for e in test)
    if name == "mc/mmlu_redux":
        assert len(sources.read(name, mmlu_redux_only_ok=False)) == total
        assert exs[0]["subject"] == "abstract_algebra"
    with pytest.raises(splits.SplitError):
        sources.read(name, "train")


@needs_data
def test_instruct_files():
    stats = {}
    t0 = sources.read("instruct/t0", "train", stats=stats)
    # 55,185 rows in 294 templates; 11 templates (2,200 rows: CommonsenseQA's 5, Social IQa's 6) are built on
    # evaluated sets and left out; 1,400 (seven TREC templates) have an empty completion and are dropped
    assert len(t0) == 51_585 and stats["dropped"] == 1_400
    assert stats["excluded_templates"] == 11 and stats["excluded_rows"] == 2_200
    assert not any(ex["id"].startswith(("t0/commonsense_qa", "t0/social_i_qa")) for ex in t0)
    assert all(not ex["completion"].endswith("<|endoftext|>") for ex in t0)
    gp = sources.read("instruct/gpteacher", "train")
    assert len(gp) == 14_131
    for ex in t0[::500] + gp[::200]:
        assert set(ex) == {"id", "prompt", "completion"} and ex["prompt"] and ex["completion"]
    assert len({ex["id"] for ex in t0}) == len(t0)


def test_missing_file_names_path_and_setting(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        sources.read("squad", data_dir=tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "qa_context" / "squad_v1.1_dev.json") in msg
    assert "data_dir" in msg


def test_fixture_nq_and_quac(tmp_path):
    """Parsing rules on hand-made rows (runs without the shared data)."""
    (tmp_path / "qa_context").mkdir()
    rows = [{"context": f"Context: Passage {i}.\n\nQuestion: q{i}?\nAnswer:",
             "answer": f"a{i}", "aliases": [f"a{i}", f"b{i}"]} for i in range(824)]
    (tmp_path / "qa_context/nq_openbook.jsonl").write_text(
        "\n".join(json.dumps(r) for r in rows) + "\n")
    ex = sources.read("nq_openbook", "test", data_dir=tmp_path)
    assert len(ex) == 412
    assert ex[0] == {"id": "nq_openbook-412", "sharer_context": "Passage 412.",
                     "question": "q412?", "answers": ["a412", "b412"], "target": "a412"}
    quac = {"context": "Title: T\n\nContext: S.\n\nQuestion: q1\nAnswer: a1\n\nQuestion: q2",
            "answer": "x", "aliases": []}
    (tmp_path / "qa_context/quac.jsonl").write_text(json.dumps(quac) + "\n")
    (q,) = sources.read("quac", data_dir=tmp_path)
    assert q["sharer_context"] == "Title: T\n\nContext: S."
    assert q["question"] == "q1\nAnswer: a1\n\nQuestion: q2"
    assert "Question: {}\nAnswer:".format(q["question"]) == quac["context"][len(
        q["sharer_context"]) + 2:] + "\nAnswer:"
