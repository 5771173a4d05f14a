"""Sharer-continuation targets: what a continuation keeps, how contexts are cut, and how a run reads the file."""
import json

import pytest

from lcf_jax.models.generate import first_line, in_length_order
from lcf_jax.train import feed as feed_lib
from lcf_jax.train.sharer_targets import context_rows


def test_a_continuation_keeps_its_first_line_of_text():
    assert first_line(" \n\n1. Paris\n2. Rome") == "1. Paris"
    assert first_line(" Paris  ") == "Paris"
    assert first_line("\n\n") == ""


def test_batches_go_shortest_first_and_results_come_back_in_the_rows_order():
    rows = [[1] * n for n in (5, 1, 3, 1, 4)]
    seen, done = [], []
    out = in_length_order(rows, 2, lambda batch: seen.append([len(r) for r in batch]) or [len(r) * 10 for r in batch],
                          lambda d, t: done.append((d, t)))
    assert seen == [[1, 1], [3, 4], [5]]
    assert out == [50, 10, 30, 10, 40]
    assert done == [(2, 5), (4, 5), (5, 5)]


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


def test_continuations_give_each_row_what_decoding_it_alone_gives():
    """Batched shortest first, the last batch padded with copies: every row's continuation is the one it gets alone."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from lcf_jax.models import transformer
    from lcf_jax.models.config import ModelConfig
    from lcf_jax.models.generate import generate, pad_batch
    from lcf_jax.train.sharer_targets import continuations

    cfg = ModelConfig(family="llama", vocab_size=40, hidden_size=32, intermediate_size=48, num_layers=2, num_heads=2,
                      num_kv_heads=1, head_dim=16, max_position_embeddings=128, pad_token_id=0, eos_token_ids=(39,))
    params = transformer.init_params(cfg, jax.random.PRNGKey(0), scale=0.5)

    class Letters:
        def decode(self, ids, skip_special_tokens=True):
            return "".join(chr(ord("a") + int(i) % 26) for i in ids if int(i) not in (0, 39))

    rng = np.random.RandomState(0)
    rows = [list(rng.randint(1, 39, n)) for n in (7, 2, 5, 3, 9)]
    got = continuations(params, cfg, Letters(), rows, max_new_tokens=5, batch_size=2, log=lambda _: None)
    for row, text in zip(rows, got):
        tokens, mask = pad_batch([row], 0, multiple=16)
        gen = generate(params, jnp.asarray(tokens), jnp.asarray(mask), jax.random.PRNGKey(0), config=cfg,
                       max_new_tokens=5)
        alone = Letters().decode(np.asarray(gen.tokens)[0, :int(gen.lengths[0])])
        assert text == alone.strip().split("\n")[0].strip()
    assert len(set(got)) > 1   # the rows do not all decode alike, so a mixed-up order would show
