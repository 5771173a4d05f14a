"""Sharer-continuation targets: what a continuation keeps, how contexts are cut, and how a run reads the file."""
import json

import pytest

from lcf_jax.train import feed as feed_lib
from lcf_jax.train.sharer_targets import context_rows, first_line


def test_a_continuation_keeps_its_first_line_of_text():
    assert first_line(" \n\n1. Paris\n2. Rome") == "1. Paris"
    assert first_line(" Paris  ") == "Paris"
    assert first_line("\n\n") == ""


class CharTokenizer:
    """One token per character after a BOS (id 1, no characters), with offsets as a fast tokenizer gives them."""

    def __call__(self, text, add_special_tokens=True, return_offsets_mapping=False):
        enc = {"input_ids": [1] + [ord(c) for c in text]}
        if return_offsets_mapping:
            enc["offset_mapping"] = [(0, 0)] + [(i, i + 1) for i in range(len(text))]
        return enc


def test_contexts_keep_bos_and_their_last_tokens_as_training_does():
    rows = context_rows([{"prompt": "abcdef"}, {"prompt": "ab"}], CharTokenizer(), max_len=4)
    assert rows == [[1, ord("e"), ord("f"), ord("\n")], [1, ord("a"), ord("b"), ord("\n")]]


def test_targets_replace_completions_by_id_and_a_file_for_other_examples_is_refused(tmp_path):
    examples = [{"id": "a", "prompt": "p", "completion": "x"}, {"id": "b", "prompt": "q", "completion": "y"}]
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps({"id": "b", "completion": "B"}) + "\n" + json.dumps({"id": "a", "completion": "A"}) + "\n")
    got = feed_lib.with_targets(examples, str(path))
    assert [(e["id"], e["prompt"], e["completion"]) for e in got] == [("a", "p", "A"), ("b", "q", "B")]
    path.write_text(json.dumps({"id": "a", "completion": "A"}) + "\n")
    with pytest.raises(feed_lib.TargetsFileError, match=r"no target for 1 of the 2 training examples \(first: 'b'\)"):
        feed_lib.with_targets(examples, str(path))
