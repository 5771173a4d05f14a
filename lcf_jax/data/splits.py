"""The one place that says which rows of which data set belong to which split.

The rules come from `shared/data/README.md` ("what may be used for what"):

| data set                      | unit the rule looks at             | train | dev                 | test                 |
| ----------------------------- | ---------------------------------- | ----- | ------------------- | -------------------- |
| `squad`                       | article index, in file order (0-47)| -     | articles 0-23       | articles 24-47       |
| `nq_openbook`                 | row index in the file (0-823)      | -     | rows 0-411          | rows 412-823         |
| `hotpotqa`, `quac`            | -                                  | -     | -                   | every row            |
| `hotpotqa_supporting`         | - (hotpotqa, 2 supporting paragraphs only) | - | -             | every row            |
| `mc/<name>`                   | row index in the raw file          | -     | index % 2 == 0      | index % 2 == 1       |
| `qa_train/<name>`             | -                                  | all   | -                   | -                    |
| `instruct/<name>`             | -                                  | all   | -                   | -                    |

One thing is never trained on at all: a T0 template (`instruct/t0`, one file per template) built on a set this
project evaluates (`EVALUATED_T0_SOURCES`: MMLU, ARC, OpenBookQA, PIQA, SIQA, CommonsenseQA). Its rows are
the same data set's train questions, often in the multiple-choice format the evaluation scores, so training on
them would tune the adapter to the benchmark; `sources.py` leaves those files out when it reads `instruct/t0`.

Indices are always positions in the *raw* file (before any filtering, e.g. MMLU-Redux's
`error_type_norm == "ok"` filter), so that filtering never moves a row across a split boundary.

Never tune anything on a `test` split; asking a data set for a split it does not have raises
`SplitError` rather than silently returning nothing.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

TRAIN = "train"
DEV = "dev"
TEST = "test"
ALL_SPLITS = (TRAIN, DEV, TEST)


class SplitError(ValueError):
    """A split that the data set does not have, or an index outside the data set."""


class UnknownDatasetError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


@dataclasses.dataclass(frozen=True)
class SplitRule:
    """How one data set is split.

    kind:
      "boundary": units < `boundary` are dev, units >= `boundary` are test (`n_units` in total).
      "parity":   even units are dev, odd units are test.
      "test":     every unit is test.
      "train":    every unit is train.
    unit: what the index passed to `split_of` means ("article" or "row").
    """

    kind: str
    unit: str = "row"
    boundary: Optional[int] = None
    n_units: Optional[int] = None

    @property
    def splits(self) -> tuple[str, ...]:
        if self.kind in ("boundary", "parity"):
            return (DEV, TEST)
        if self.kind == "test":
            return (TEST,)
        if self.kind == "train":
            return (TRAIN,)
        raise AssertionError(self.kind)


# Data sets by name. Names are the public handles used by sources.py and tfds_builders.py.
SQUAD_DEV_ARTICLES = range(0, 24)
SQUAD_TEST_ARTICLES = range(24, 48)
NQ_DEV_ROWS = range(0, 412)
NQ_TEST_ROWS = range(412, 824)

QA_CONTEXT_SETS = ("squad", "nq_openbook", "hotpotqa", "hotpotqa_supporting", "quac")
QA_TRAIN_SETS = (
    "qa_train/drop",
    "qa_train/quoref",
    "qa_train/ropes",
    "qa_train/multirc",
    "qa_train/cosmosqa",
    "qa_train/disfl_qa",
)
MC_SETS = (
    "mc/mmlu_redux",
    "mc/arc_challenge",
    "mc/arc_easy",
    "mc/openbook_qa",
    "mc/piqa",
    "mc/siqa",
    "mc/commonsense_qa",
)
INSTRUCT_SETS = ("instruct/t0", "instruct/gpteacher")

RULES: dict[str, SplitRule] = {
    "squad": SplitRule("boundary", unit="article", boundary=24, n_units=48),
    "nq_openbook": SplitRule("boundary", unit="row", boundary=412, n_units=824),
    "hotpotqa": SplitRule("test"),
    "hotpotqa_supporting": SplitRule("test"),
    "quac": SplitRule("test"),
    **{name: SplitRule("parity") for name in MC_SETS},
    **{name: SplitRule("train") for name in QA_TRAIN_SETS + INSTRUCT_SETS},
}

DATASETS: tuple[str, ...] = tuple(RULES)

# T0 template files are named "<source set>_<template>" (P3's names). A template whose source set is one this
# project evaluates on is left out of instruct/t0 (a file-name prefix, and why). Prefixes of sets absent from the
# shipped mixture are listed too, so a larger T0 drop cannot bring them in.
EVALUATED_T0_SOURCES: tuple[tuple[str, str], ...] = (
    ("commonsense_qa", "CommonsenseQA (mc/commonsense_qa): its train questions with their choices"),
    ("cos_e", "CommonsenseQA: CoS-E is CommonsenseQA's questions with explanations"),
    ("social_i_qa", "Social IQa (mc/siqa): its train questions and choices"),
    ("piqa", "PIQA (mc/piqa)"),
    ("ai2_arc", "ARC-Easy / ARC-Challenge (mc/arc_easy, mc/arc_challenge)"),
    ("openbookqa", "OpenBookQA (mc/openbook_qa)"),
    ("hendrycks_test", "MMLU (mc/mmlu_redux re-annotates MMLU's test questions)"),
    ("mmlu", "MMLU (mc/mmlu_redux)"),
)


def evaluated_t0_source(template: str) -> Optional[str]:
    """Why T0 template `template` (its file stem) must not be trained on, or None when it may be."""
    for prefix, reason in EVALUATED_T0_SOURCES:
        if template == prefix or template.startswith(prefix + "_"):
            return reason
    return None


def kind_of(name: str) -> str:
    """"qa", "mc" or "instruct": which example schema the data set uses."""
    rule_for(name)
    if name in QA_CONTEXT_SETS or name in QA_TRAIN_SETS:
        return "qa"
    if name in MC_SETS:
        return "mc"
    return "instruct"


def rule_for(name: str) -> SplitRule:
    try:
        return RULES[name]
    except KeyError:
        raise UnknownDatasetError(
            f"unknown data set {name!r}; known: {', '.join(DATASETS)}"
        ) from None


def available_splits(name: str) -> tuple[str, ...]:
    """The splits the data set has, e.g. ("dev", "test") for SQuAD, ("test",) for HotpotQA."""
    return rule_for(name).splits


def check_split(name: str, split: str) -> None:
    """Raise `SplitError` unless `name` has `split`."""
    if split not in ALL_SPLITS:
        raise SplitError(f"unknown split {split!r}; splits are {ALL_SPLITS}")
    have = available_splits(name)
    if split not in have:
        raise SplitError(
            f"data set {name!r} has no {split!r} split (it has: {', '.join(have)}); "
            "see shared/data/README.md, 'what may be used for what'"
        )


def split_of(name: str, index: int) -> str:
    """The split of unit `index` of data set `name`.

    `index` is the article index (file order) for SQuAD and the raw row index otherwise.
    """
    rule = rule_for(name)
    index = int(index)
    if index < 0 or (rule.n_units is not None and index >= rule.n_units):
        raise SplitError(
            f"{rule.unit} index {index} is outside data set {name!r}"
            + (f" (0..{rule.n_units - 1})" if rule.n_units is not None else "")
        )
    if rule.kind == "boundary":
        return DEV if index < rule.boundary else TEST
    if rule.kind == "parity":
        return DEV if index % 2 == 0 else TEST
    if rule.kind == "test":
        return TEST
    return TRAIN


def in_split(name: str, split: str, index: int) -> bool:
    """Whether unit `index` of `name` is in `split`; raises `SplitError` if `name` lacks `split`."""
    check_split(name, split)
    return split_of(name, index) == split


def squad_split_of_article(article_index: int) -> str:
    return split_of("squad", article_index)
