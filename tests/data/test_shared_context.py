"""Shared-context batches (LCF, C2C training and T1 scoring) on tiny models with local tokenizers."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lcf_jax.adapters import ADAPTER_KINDS
from lcf_jax.adapters.lcf import LCFConfig
from lcf_jax.adapters.c2c import C2CConfig
from lcf_jax.data.batches import leaves
from lcf_jax.data import shared_context
from lcf_jax.data.shared_context import SharedContextBatches, SharedContextFeatures
from lcf_jax.eval import shared_mc
from lcf_jax.models import registry, transformer
from lcf_jax.train import objective
from lcf_jax.train.objective import Setup
from tests.offset_tok import OffsetTok

EXAMPLES = [{"id": f"e{i}", "prompt": p, "completion": c} for i, (p, c) in enumerate([
    ("Name three colours.", "red green blue"), ("What is 2 + 2?", "4"), ("Translate ünïcode text please", "ok"),
    ("Write a short line about cats and 12 mats", "cats sit on mats"), ("Say hi", "hi there friend"),
    ("Count to five", "one two three four five")])]


def _features(**kw):
    return SharedContextFeatures(OffsetTok("words"), OffsetTok("chars"), max_context_len=32, max_target_len=8, **kw)


def test_batch_layout_context_alignment_and_continuation():
    f = _features()
    toks = f.tokenize_many(EXAMPLES)
    t = toks[0]
    b = f.collate([t])
    text = "Name three colours.\n"
    r_ids = OffsetTok("chars")(text)["input_ids"]
    nc = len(r_ids) - 1
    lc = b.receiver_ctx_ids.shape[1]
    # the receiver context holds all context tokens but the last, left-padded
    assert b.receiver_ctx_ids[0, lc - nc:].tolist() == r_ids[:-1] and b.receiver_ctx_mask[0].sum() == nc
    # the continuation opens with the last context token; the loss covers exactly the target (+ EOS)
    n_t = len(t.target)
    assert b.receiver_ids[0, 0] == r_ids[-1] and t.target[-1] == 2
    assert b.loss_mask[0].tolist() == [False] + [True] * n_t + [False] * (b.loss_mask.shape[1] - n_t - 1)
    # each receiver context slot reads a real sharer slot; the receiver's BOS reads the sharer's first token
    al, sm = b.alignment[0], b.sharer.mask[0]
    assert (al[~b.receiver_ctx_mask[0]] == -1).all()
    real = al[b.receiver_ctx_mask[0]]
    assert sm[real].all() and real[0] == np.argmax(sm) and (np.diff(real) >= 0).all()


def test_iterator_is_resumable_and_batches_share_a_bucket():
    f = _features()
    it = SharedContextBatches(f, f.tokenize_many(EXAMPLES * 4), batch_size=2, seed=3)
    next(it)
    state = it.state()
    a = next(it)
    it.restore(state)
    b = next(it)
    assert leaves(a).keys() == leaves(b).keys()
    for name, x in leaves(a).items():
        np.testing.assert_array_equal(x, leaves(b)[name])


@pytest.mark.parametrize("kind", ["lcf", "c2c"])
def test_shared_context_loss_trains_the_adapter(kind):
    s, r = registry.load_any("tiny-llama"), registry.load_any("tiny-gemma3")
    acfg = LCFConfig(rank=16) if kind == "lcf" else C2CConfig(hidden_dim=32, intermediate_dim=32)
    setup = Setup(kind, acfg, s[0], r[0])
    spec = ADAPTER_KINDS[kind]
    params = spec.init(jax.random.key(0), acfg, s[0], r[0])
    params = jax.tree.map(lambda x: x + 0.05 * jax.random.normal(jax.random.key(1), x.shape, x.dtype), params)
    f = _features()
    batch = jax.tree.map(jnp.asarray, f.collate([t for t in f.tokenize_many(EXAMPLES)][:1]))
    (loss, aux), g = jax.value_and_grad(objective.loss_fn, has_aux=True)(params, s[1], r[1], batch, setup,
                                                                        train=False)
    assert np.isfinite(float(loss)) and float(aux["target_tokens"]) == batch.loss_mask.sum()
    assert float(jnp.sqrt(sum(jnp.sum(x ** 2) for x in jax.tree.leaves(g)))) > 0


def test_mc_scoring_with_a_no_op_adapter_equals_the_receiver_reading_the_prompt_itself():
    s, r = registry.load_any("tiny-llama"), registry.load_any("tiny-gemma3")
    acfg = LCFConfig(rank=16)   # zero-initialised up-projection: the fused cache is the receiver's own
    setup = Setup("lcf", acfg, s[0], r[0])
    params = ADAPTER_KINDS["lcf"].init(jax.random.key(0), acfg, s[0], r[0])
    f = shared_mc.mc_features(OffsetTok("words"), OffsetTok("chars"), max_context_len=64, max_choice_len=16)
    question, choices = "Which is a colour?", ["red", "a cat", "twelve mats"]
    ll, lens = shared_mc.mc_loglik_fused(setup, params, (s[1], r[1]), f, question, choices)
    tok = OffsetTok("chars")
    prompt = shared_mc.MC_PROMPT.format(question=question)
    for c, got, n in zip(choices, ll, lens):
        ids = tok(prompt)["input_ids"] + tok(" " + c, add_special_tokens=False)["input_ids"]
        logits, _ = transformer.forward(r[1], jnp.asarray([ids]), jnp.arange(len(ids))[None], None, config=r[0])
        logp = jax.nn.log_softmax(logits[0], -1)
        p = len(tok(prompt)["input_ids"])
        want = sum(float(logp[t - 1, ids[t]]) for t in range(p, len(ids)))
        assert n == len(ids) - p
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", ["lcf", "c2c"])
def test_choices_read_their_shared_context_once_as_every_row_reading_it(kind):
    # T1 scores a question's choices from one reading of its context; a trained (non-zero) adapter must give the
    # same receiver states as when every row reads the context itself.
    s, r = registry.load_any("tiny-llama"), registry.load_any("tiny-gemma3")
    acfg = LCFConfig(rank=16) if kind == "lcf" else C2CConfig(hidden_dim=32, intermediate_dim=32)
    setup = Setup(kind, acfg, s[0], r[0])
    params = ADAPTER_KINDS[kind].init(jax.random.key(0), acfg, s[0], r[0])
    params = jax.tree.map(lambda x: x + 0.05 * jax.random.normal(jax.random.key(1), x.shape, x.dtype), params)
    f = shared_mc.mc_features(OffsetTok("words"), OffsetTok("chars"), max_context_len=64, max_choice_len=16)
    prompt = shared_mc.MC_PROMPT.format(question="Which is a colour?")
    choices = ["red", "a cat", "twelve mats", "ok"]
    toks = [f.tokenize({"prompt": prompt, "completion": c}) for c in choices]
    others = [f.tokenize({"prompt": shared_mc.MC_PROMPT.format(question="Is a mat a cat?"), "completion": c})
              for c in choices]
    keys = [f.bucket_key(t) for t in toks + others]
    ctx = max(max(k[0], k[1]) for k in keys)
    key = (ctx, ctx, 16)
    batch = jax.tree.map(jnp.asarray, f.collate(toks, key=key))
    once = shared_mc.context_read_once(s[1], r[1], batch, setup)
    assert once.sharer_kv is not None and once.receiver_kv is not None
    want = objective.receiver_hidden(params, s[1], r[1], batch, setup, train=False)
    got = objective.receiver_hidden(params, s[1], r[1], once, setup, train=False)
    m = np.asarray(batch.receiver_mask, bool)
    np.testing.assert_allclose(np.asarray(got)[m], np.asarray(want)[m], rtol=1e-4, atol=1e-4)
    # ... and fused once for every row (what T1 scoring does)
    fused_once = objective.receiver_hidden(params, s[1], r[1], once, setup, train=False, same_context=True)
    np.testing.assert_allclose(np.asarray(fused_once)[m], np.asarray(want)[m], rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="train=False"):
        objective.receiver_hidden(params, s[1], r[1], once, setup, train=True, rng=jax.random.key(2), same_context=True)
    # another question's context read once gives other states (the comparison can fail)
    other = shared_mc.context_read_once(s[1], r[1], jax.tree.map(jnp.asarray, f.collate(others, key=key)), setup)
    wrong = objective.receiver_hidden(params, s[1], r[1], once._replace(receiver_kv=other.receiver_kv,
                                                                         sharer_kv=other.sharer_kv), setup, train=False)
    assert not np.allclose(np.asarray(wrong)[m], np.asarray(want)[m], atol=1e-3)


def test_the_control_changes_only_what_the_sharer_reads():
    # T1's control: the sharer reads another question, cut or repeated to its own length; the receiver's rows,
    # alignment and targets are the question's own, so only the fused part can move the scores.
    f = shared_mc.mc_features(OffsetTok("words"), OffsetTok("chars"), max_context_len=64, max_choice_len=16)
    question, choices = "Which is a colour of the sky at noon?", ["red", "a cat", "blue"]
    own, _ = shared_mc.choice_batch(f, question, choices)
    for other_q in ("Is a mat a cat?", "Which animal sits on twelve mats in the old house by the river today?"):
        ctl, _ = shared_mc.choice_batch(f, question, choices, sharer_question=other_q)
        for field in ("receiver_ctx_ids", "receiver_ctx_mask", "alignment", "receiver_ids", "loss_mask"):
            np.testing.assert_array_equal(getattr(ctl, field), getattr(own, field))
        np.testing.assert_array_equal(ctl.sharer.mask, own.sharer.mask)      # the same length
        assert not np.array_equal(np.asarray(ctl.sharer.ids), np.asarray(own.sharer.ids))
    same, _ = shared_mc.choice_batch(f, question, choices, sharer_question=question)
    np.testing.assert_array_equal(same.sharer.ids, own.sharer.ids)
    assert shared_context.unrelated_sharer_tokens(np.array([1, 7, 8]), 6).tolist() == [1, 7, 8, 7, 8, 7]
    assert shared_context.unrelated_sharer_tokens(np.array([1, 7, 8, 9]), 2).tolist() == [1, 7]


@pytest.mark.parametrize("bos", [False, True])
def test_a_sharer_prefix_changes_only_what_the_sharer_reads_and_keeps_each_token_aligned(bos):
    # The hint probe: the sharer reads a text before the context; the receiver's rows are the question's own and
    # each receiver token stays fused with the sharer token of its own characters, now after the prefix.
    f = SharedContextFeatures(OffsetTok("bare", bos=bos), OffsetTok("chars"), max_context_len=32, max_target_len=8,
                              context_template="{prompt}", target_template=" {completion}", append_eos=False)
    ex = {"prompt": "Question: which is red?\nAnswer:", "completion": "a rose"}
    own, hinted = f.tokenize(ex), f.tokenize_sharer_prefixed(ex, "Hint: the answer is a rose.\n")
    np.testing.assert_array_equal(hinted.receiver_ctx, own.receiver_ctx)
    np.testing.assert_array_equal(hinted.target, own.target)
    m = len(hinted.sharer) - len(own.sharer)
    assert m == 6                                                   # six words of hint
    assert hinted.sharer[0] == own.sharer[0] or not bos             # the BOS stays first
    np.testing.assert_array_equal(hinted.sharer[hinted.alignment], own.sharer[own.alignment])
    assert (hinted.alignment[own.alignment >= int(bos)] == own.alignment[own.alignment >= int(bos)] + m).all()
    with pytest.raises(ValueError, match="changes how the context"):
        f.tokenize_sharer_prefixed(ex, "Hint:glued")                 # glued to the first word: another tokenization
    long = f.tokenize_sharer_prefixed(ex, "Hint: " + "very " * 40 + "long.\n")   # the hint's start is cut off
    assert 24 < len(long.sharer) <= 32
    np.testing.assert_array_equal(long.sharer[long.alignment], own.sharer[own.alignment])


def test_a_sharer_prefix_reaches_the_receiver_only_through_the_adapter():
    s, r = registry.load_any("tiny-llama"), registry.load_any("tiny-gemma3")
    acfg = LCFConfig(rank=16)
    setup = Setup("lcf", acfg, s[0], r[0])
    noop = ADAPTER_KINDS["lcf"].init(jax.random.key(0), acfg, s[0], r[0])
    moved = jax.tree.map(lambda x: x + 0.05 * jax.random.normal(jax.random.key(1), x.shape, x.dtype), noop)
    f = shared_mc.mc_features(OffsetTok("bare"), OffsetTok("chars"), max_context_len=64, max_choice_len=16)
    question, choices = "Which is a colour?", ["red", "a cat", "twelve mats"]
    score = lambda p, prefix: shared_mc.mc_loglik_fused(setup, p, (s[1], r[1]), f, question, choices,  # noqa: E731
                                                        sharer_prefix=prefix)[0]
    np.testing.assert_allclose(score(noop, "Hint: red.\n"), score(noop, ""), rtol=1e-5, atol=1e-5)
    assert not np.allclose(score(moved, "Hint: red.\n"), score(moved, ""), atol=1e-4)
    with pytest.raises(ValueError, match="not both"):
        shared_mc.choice_batch(f, question, choices, sharer_question="Is a mat a cat?", sharer_prefix="Hint: red.\n")
