"""Tokenisation layout, buckets and the resumable batch iterator, with tiny local tokenizers."""
import json

import numpy as np
import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from lcf_jax.data import pipeline
from lcf_jax.data.batches import PromptBatch, leaves

CORPUS = [
    "Super Bowl 50 was an American football game to determine the champion of the NFL.",
    "The Denver Broncos defeated the Carolina Panthers to earn their third title.",
    "Question: Which team won? Answer: Denver Broncos",
    "The cat sat on the mat while the dog slept in the sun near the river bank.",
    "Who wrote the song Photograph by Ringo Starr? George Harrison and Ringo Starr.",
]


def sharer_tokenizer():
    """WordLevel tokenizer that adds [BOS] (like Gemma)."""
    words = sorted({w for line in CORPUS for w in pre_tokenizers.Whitespace()
                    .pre_tokenize_str(line) for w in [w[0]]})
    vocab = {t: i for i, t in enumerate(["[PAD]", "[BOS]", "[EOS]", "[UNK]"] + words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[BOS] $A", special_tokens=[("[BOS]", vocab["[BOS]"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="[BOS]", eos_token="[EOS]",
                                   pad_token="[PAD]", unk_token="[UNK]")


def receiver_tokenizer():
    """Byte-level BPE trained in memory, no BOS (like SmolLM2)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<pad>", "<eos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS * 3, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>")


@pytest.fixture(scope="module")
def toks():
    return sharer_tokenizer(), receiver_tokenizer()


def _example(i, passage_words=20, answer="Denver Broncos"):
    words = (CORPUS[0] + " " + CORPUS[1] + " " + CORPUS[3]).split()
    passage = " ".join((words * 10)[i: i + passage_words])
    return {"id": f"ex{i}", "sharer_context": passage, "question": "Which team won?",
            "answers": [answer, "Broncos"], "target": answer}


def test_bucket_helpers():
    assert pipeline.default_buckets(512) == (32, 64, 128, 256, 512)
    assert pipeline.default_buckets(96) == (32, 64, 96)
    assert pipeline.bucket_for(33, (32, 64, 128)) == 64
    assert pipeline.bucket_for(32, (128, 32, 64)) == 32
    with pytest.raises(ValueError):
        pipeline.bucket_for(129, (32, 64, 128))


def test_train_layout(toks):
    s_tok, r_tok = toks
    feats = pipeline.QAFeatures(s_tok, r_tok, max_sharer_len=64, max_prompt_len=24,
                                max_target_len=8, sharer_buckets=(16, 32, 64),
                                receiver_buckets=(16, 32))
    ex = _example(0, passage_words=20)
    tok = feats.tokenize(ex)
    out = feats.pad(tok)
    assert tok.sharer[0] == s_tok.bos_token_id
    ls, lr = feats.bucket_key(tok)
    assert ls == pipeline.bucket_for(len(tok.sharer), (16, 32, 64))
    assert out.sharer.ids.shape == (ls,) and out.sharer.ids.dtype == np.int32
    assert out.sharer.mask.dtype == bool
    n_s = len(tok.sharer)
    # left padding
    assert not out.sharer.mask[: ls - n_s].any() and out.sharer.mask[ls - n_s:].all()
    assert (out.sharer.ids[: ls - n_s] == s_tok.pad_token_id).all()
    np.testing.assert_array_equal(out.sharer.ids[ls - n_s:], tok.sharer)
    assert out.sharer.positions[ls - n_s] == 0 and out.sharer.positions[-1] == n_s - 1
    # receiver: prompt + target, right padding, loss on target only
    n_p, n_t = len(tok.prompt), len(tok.target)
    assert out.receiver_ids.shape == (lr,) and lr == pipeline.bucket_for(n_p + n_t, (16, 32))
    np.testing.assert_array_equal(out.receiver_ids[:n_p], tok.prompt)
    np.testing.assert_array_equal(out.receiver_ids[n_p:n_p + n_t], tok.target)
    assert (out.receiver_ids[n_p + n_t:] == r_tok.pad_token_id).all()
    assert out.receiver_mask.sum() == n_p + n_t and out.receiver_mask[: n_p + n_t].all()
    assert out.loss_mask.sum() == n_t and out.loss_mask[n_p:n_p + n_t].all()
    assert tok.target[-1] == r_tok.eos_token_id
    assert r_tok.decode(tok.prompt) == "Question: Which team won?\nAnswer:"
    assert r_tok.decode(tok.target[:-1]) == " Denver Broncos"
    assert r_tok.decode(out.receiver_ids[out.loss_mask][:-1]) == " Denver Broncos"


def test_truncation(toks):
    s_tok, r_tok = toks
    feats = pipeline.QAFeatures(s_tok, r_tok, max_sharer_len=10, max_prompt_len=6,
                                max_target_len=3, prompt_template="{question}")
    ex = _example(0, passage_words=40)
    ex["question"] = "The cat sat on the mat while the dog slept in the sun"
    ex["target"] = "the cat sat on the mat"
    tok = feats.tokenize(ex)
    assert len(tok.sharer) == 10 and tok.sharer[0] == s_tok.bos_token_id
    full = s_tok(ex["sharer_context"], add_special_tokens=False)["input_ids"]
    np.testing.assert_array_equal(tok.sharer[1:], full[:9])  # the passage start is kept
    full_q = r_tok(ex["question"], add_special_tokens=False)["input_ids"]
    np.testing.assert_array_equal(tok.prompt, full_q[-6:])  # the question end is kept
    assert len(tok.target) == 3 and tok.target[-1] != r_tok.eos_token_id
    out = feats.pad(tok)
    assert out.sharer.mask.all() and out.sharer.ids.shape == (10,)
    left = pipeline.QAFeatures(s_tok, r_tok, max_sharer_len=10, sharer_truncation="left")
    np.testing.assert_array_equal(left.tokenize(ex).sharer[1:], full[-9:])


def test_generate_layout(toks):
    s_tok, r_tok = toks
    feats = pipeline.QAFeatures(s_tok, r_tok, max_sharer_len=64, max_prompt_len=24,
                                max_target_len=8, receiver_buckets=(8, 16, 32))
    tok = feats.tokenize(_example(1))
    out = feats.pad(tok, mode="generate")
    n_p = len(tok.prompt)
    lr = out.prompt_ids.shape[0]
    assert lr == pipeline.bucket_for(n_p, (8, 16, 32))
    np.testing.assert_array_equal(out.prompt_ids[lr - n_p:], tok.prompt)
    assert out.prompt_mask.sum() == n_p and out.prompt_mask[-1]
    assert isinstance(out, PromptBatch) and out.sharer.mask.sum() == len(tok.sharer)


def test_bucket_validation(toks):
    s_tok, r_tok = toks
    with pytest.raises(ValueError):
        pipeline.QAFeatures(s_tok, r_tok, max_sharer_len=100, sharer_buckets=(32, 64))
    with pytest.raises(ValueError):
        pipeline.QAFeatures(s_tok, r_tok, max_prompt_len=64, max_target_len=32,
                            receiver_buckets=(64,))


def test_bucketed_batches_cover_and_group():
    keys = [(i % 3, 0) for i in range(50)]
    it = pipeline.BucketedBatches(keys, batch_size=4, seed=1, drop_remainder=False, num_epochs=1)
    seen = []
    for b in it:
        assert len({keys[i] for i in b}) == 1
        seen.extend(b.tolist())
    assert sorted(seen) == list(range(50))
    dropped = pipeline.BucketedBatches(keys, batch_size=4, seed=1, num_epochs=1)
    assert all(len(b) == 4 for b in dropped) and len(dropped.epoch_plan(0)) == 4 * 3
    a = pipeline.BucketedBatches(keys, 4, seed=1)
    plan0, plan1 = a.epoch_plan(0), a.epoch_plan(1)
    assert [x.tolist() for x in plan0] == [x.tolist() for x in
                                           pipeline.BucketedBatches(keys, 4, seed=1).epoch_plan(0)]
    assert [x.tolist() for x in plan0] != [x.tolist() for x in plan1]
    assert [x.tolist() for x in plan0] != [x.tolist() for x in
                                           pipeline.BucketedBatches(keys, 4, seed=2).epoch_plan(0)]
    with pytest.raises(ValueError, match="no batch fits"):
        next(pipeline.BucketedBatches([(0,)] * 3, batch_size=4))


def test_state_restore_gives_identical_batches():
    keys = [(i % 4,) for i in range(37)]
    ref = pipeline.BucketedBatches(keys, batch_size=3, seed=7)
    per_epoch = len(ref.epoch_plan(0))
    expected = [next(ref).tolist() for _ in range(3 * per_epoch + 2)]  # crosses epochs
    for cut in (0, 1, per_epoch - 1, per_epoch, per_epoch + 3, 2 * per_epoch + 1):
        it = pipeline.BucketedBatches(keys, batch_size=3, seed=7)
        for _ in range(cut):
            next(it)
        state = json.loads(json.dumps(it.state()))
        assert set(state) >= {"epoch", "position"}
        resumed = pipeline.BucketedBatches(keys, batch_size=3, seed=7)
        resumed.restore(state)
        got = [next(resumed).tolist() for _ in range(len(expected) - cut)]
        assert got == expected[cut:]
    with pytest.raises(ValueError):
        pipeline.BucketedBatches(keys, 3, seed=8).restore(state)


def test_qa_batch_iterator(toks):
    s_tok, r_tok = toks
    feats = pipeline.QAFeatures(s_tok, r_tok, max_sharer_len=64, max_prompt_len=24,
                                max_target_len=8, sharer_buckets=(16, 32, 64),
                                receiver_buckets=(32,))
    exs = [_example(i, passage_words=5 + (i * 7) % 50) for i in range(30)]
    tokd = feats.tokenize_many(exs)
    assert [t.id for t in tokd] == [e["id"] for e in exs]
    it = pipeline.QABatchIterator(feats, tokd, batch_size=4, seed=3)
    b = next(it)
    assert b.sharer.ids.shape[0] == 4 and b.receiver_ids.shape == (4, 32)
    assert b.sharer.ids.dtype == np.int32 and b.loss_mask.dtype == bool
    assert b.example_mask.all() and b.example_rows.shape == (4,) and len(set(b.example_rows)) == 4
    for r, row in zip(b.example_rows, b.receiver_ids):   # example_rows names each row's example
        np.testing.assert_array_equal(row[:len(tokd[r].prompt)], tokd[r].prompt)
    state = it.state()
    nxt = next(it)
    it2 = pipeline.QABatchIterator(feats, tokd, batch_size=4, seed=3)
    it2.restore(state)
    nxt2 = next(it2)
    assert leaves(nxt).keys() == leaves(nxt2).keys()
    for name, x in leaves(nxt).items():   # the restored iterator gives the same batch, every array
        np.testing.assert_array_equal(x, leaves(nxt2)[name])
    # eval-style: no shuffling, nothing dropped, short batches padded with masked rows
    ev = pipeline.QABatchIterator(feats, tokd, batch_size=4, mode="generate", shuffle=False,
                                  drop_remainder=False, num_epochs=1)
    ids = []
    for b in ev:
        assert b.prompt_ids.shape[0] == 4
        ids += [tokd[r].id for r, m in zip(b.example_rows, b.example_mask) if m]
    assert sorted(ids) == sorted(e["id"] for e in exs)
