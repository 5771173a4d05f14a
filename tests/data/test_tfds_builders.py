"""TFDS (array_record, no TensorFlow) build + load round trips into a temp dir."""
import json
import os

import pytest

from lcf_jax.data import sources, splits
from lcf_jax.data import tfds_builders as tb

DATA_DIR = sources.resolve_data_dir(None)
needs_data = pytest.mark.skipif(
    not (DATA_DIR / "qa_context" / "squad_v1.1_dev.json").exists(),
    reason=f"shared data dir {DATA_DIR} is absent",
)


def _nq_fixture(root):
    (root / "qa_context").mkdir(parents=True)
    rows = [{"context": f"Context: Passage {i} ü.\n\nQuestion: q{i}?\nAnswer:",
             "answer": f"a{i}", "aliases": [f"b{i}"]} for i in range(824)]
    (root / "qa_context/nq_openbook.jsonl").write_text(
        "\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")


def test_round_trip_on_fixture_and_second_build_is_noop(tmp_path):
    raw, cache = tmp_path / "raw", tmp_path / "cache"
    _nq_fixture(raw)
    builder = tb.build("nq_openbook", raw, cache, max_examples=7)
    info = os.path.join(builder.data_dir, "dataset_info.json")
    mtime = os.stat(info).st_mtime_ns
    assert tb.is_built(builder)
    tb.build("nq_openbook", raw, cache, max_examples=7)  # no-op
    assert os.stat(info).st_mtime_ns == mtime
    for split in ("dev", "test"):
        ds = tb.load("nq_openbook", split, raw, cache, max_examples=7)
        ref = sources.read("nq_openbook", split, raw, max_examples=7)
        assert len(ds) == 7
        assert [ds[i] for i in range(len(ds))] == ref  # same values, same (file) order
        assert ds[-1] == ref[-1] and ds[1:3] == ref[1:3]
        assert isinstance(ds[0]["sharer_context"], str) and isinstance(ds[0]["answers"][0], str)
    assert tb.load("nq_openbook", "test", raw, cache, max_examples=7)[0]["id"] == "nq_openbook-412"
    with pytest.raises(splits.SplitError):
        tb.load("nq_openbook", "train", raw, cache, max_examples=7)


def test_missing_raw_data_names_setting(tmp_path):
    with pytest.raises(FileNotFoundError, match="data_dir"):
        tb.build("nq_openbook", tmp_path / "nowhere", tmp_path / "cache", max_examples=3)


def test_config_names():
    assert tb.config_name("squad") == "squad"
    assert tb.config_name("qa_train/drop", 5) == "qa_train-drop-max5"
    assert tb.config_name("qa_train/disfl_qa", squad_overlap="keep") == \
        "qa_train-disfl_qa-squad_overlap_keep"


@needs_data
@pytest.mark.parametrize("name", ["squad", "hotpotqa", "qa_train/quoref", "mc/mmlu_redux",
                                  "mc/piqa", "instruct/gpteacher"])
def test_round_trip_real_subsets(tmp_path, name):
    for split in splits.available_splits(name):
        ds = tb.load(name, split, DATA_DIR, tmp_path, max_examples=12)
        ref = sources.read(name, split, DATA_DIR, max_examples=12)
        assert len(ds) == len(ref) == 12
        assert list(ds) == ref
    if splits.kind_of(name) == "mc":
        assert isinstance(ds[0]["gold"], int) and isinstance(ds[0]["choices"], list)


@needs_data
def test_empty_split_is_explained(tmp_path):
    with pytest.raises(tb.EmptySplitError, match="squad_overlap"):
        tb.build("qa_train/disfl_qa", DATA_DIR, tmp_path)
    ds = tb.load("qa_train/disfl_qa", "train", DATA_DIR, tmp_path, max_examples=3,
                 squad_overlap="keep")
    assert len(ds) == 3
