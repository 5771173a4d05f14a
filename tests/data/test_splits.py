import pytest

from lcf_jax.data import splits


def test_squad_article_boundary():
    assert splits.split_of("squad", 0) == "dev"
    assert splits.split_of("squad", 23) == "dev"
    assert splits.split_of("squad", 24) == "test"
    assert splits.split_of("squad", 47) == "test"
    assert splits.squad_split_of_article(23) == "dev"
    with pytest.raises(splits.SplitError):
        splits.split_of("squad", 48)


def test_nq_row_boundary():
    assert splits.split_of("nq_openbook", 0) == "dev"
    assert splits.split_of("nq_openbook", 411) == "dev"
    assert splits.split_of("nq_openbook", 412) == "test"
    assert splits.split_of("nq_openbook", 823) == "test"
    with pytest.raises(splits.SplitError):
        splits.split_of("nq_openbook", 824)
    with pytest.raises(splits.SplitError):
        splits.split_of("nq_openbook", -1)


@pytest.mark.parametrize("name", splits.MC_SETS)
def test_mc_parity(name):
    assert [splits.split_of(name, i) for i in range(4)] == ["dev", "test", "dev", "test"]
    assert splits.in_split(name, "dev", 10) and not splits.in_split(name, "test", 10)
    with pytest.raises(splits.SplitError):
        splits.in_split(name, "train", 0)


def test_test_only_and_train_only_sets():
    for name in ("hotpotqa", "quac"):
        assert splits.available_splits(name) == ("test",)
        assert splits.split_of(name, 123) == "test"
        with pytest.raises(splits.SplitError, match="has no 'dev' split"):
            splits.check_split(name, "dev")
    for name in splits.QA_TRAIN_SETS + splits.INSTRUCT_SETS:
        assert splits.available_splits(name) == ("train",)
        with pytest.raises(splits.SplitError):
            splits.check_split(name, "test")
        with pytest.raises(splits.SplitError):
            splits.check_split(name, "dev")
    with pytest.raises(splits.SplitError):
        splits.check_split("squad", "train")
    with pytest.raises(splits.SplitError, match="unknown split"):
        splits.check_split("squad", "validation")


def test_unknown_dataset_and_kinds():
    with pytest.raises(splits.UnknownDatasetError, match="unknown data set"):
        splits.available_splits("squad2")
    assert splits.kind_of("squad") == "qa"
    assert splits.kind_of("qa_train/drop") == "qa"
    assert splits.kind_of("mc/piqa") == "mc"
    assert splits.kind_of("instruct/t0") == "instruct"
    assert set(splits.DATASETS) == set(
        splits.QA_CONTEXT_SETS + splits.QA_TRAIN_SETS + splits.MC_SETS + splits.INSTRUCT_SETS)
