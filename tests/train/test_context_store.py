"""The context store (train/context_store.py): a step reading both models' stored context caches gives the loss and
gradient of the step that computes them; a killed build resumes; a store that does not fit fails with one line."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lcf_jax.adapters import ADAPTER_KINDS
from lcf_jax.adapters.c2c import C2CConfig
from lcf_jax.adapters.lcf import LCFConfig
from lcf_jax.data.batches import leaves
from lcf_jax.data.shared_context import SharedContextBatches, SharedContextFeatures
from lcf_jax.models import registry
from lcf_jax.train import context_store, objective
from lcf_jax.train.objective import Setup
from tests.offset_tok import OffsetTok

PROMPTS = ["Name three colours.", "What is 2 + 2?", "Translate ünïcode text please", "Say hi",
           "Write a short line about cats and 12 mats, then a longer one about dogs", "Count to five"]
EXAMPLES = [{"id": f"e{i}", "prompt": p, "completion": f"answer {i} " * (1 + i % 3)}
            for i, p in enumerate(PROMPTS * 3)]


def _pieces(kind="lcf"):
    s, r = registry.load_any("tiny-llama"), registry.load_any("tiny-gemma3")
    acfg = LCFConfig(rank=16) if kind == "lcf" else C2CConfig(hidden_dim=32, intermediate_dim=32)
    setup = Setup(kind, acfg, s[0], r[0])
    params = ADAPTER_KINDS[kind].init(jax.random.key(0), acfg, s[0], r[0])
    params = jax.tree.map(lambda x: x + 0.05 * jax.random.normal(jax.random.key(1), x.shape, x.dtype), params)
    features = SharedContextFeatures(OffsetTok("words"), OffsetTok("chars"), max_context_len=48, max_target_len=8)
    return setup, params, (s[1], r[1]), features, features.tokenize_many(EXAMPLES)


@pytest.mark.parametrize("kind", ["lcf", "c2c"])
def test_stored_caches_give_the_computed_loss_and_gradient(tmp_path, kind):
    setup, params, frozen, features, toks = _pieces(kind)
    store = context_store.build(tmp_path, features, toks, setup, frozen, dtype="float32", batch_size=4,
                                chunk_examples=5, log=lambda m: None)
    plain = SharedContextBatches(features, toks, batch_size=3, seed=1)
    stored = context_store.StoredContextBatches(SharedContextBatches(features, toks, batch_size=3, seed=1), store)
    grad = jax.jit(jax.value_and_grad(objective.loss_fn, has_aux=True), static_argnames=("setup", "train"))
    for _ in range(4):
        a, b = next(plain), next(stored)
        assert b.sharer_kv is not None and b.receiver_kv is not None
        for name, x in leaves(a).items():   # the same batch, plus the caches
            np.testing.assert_array_equal(x, leaves(b)[name])
        (la, _), ga = grad(params, *frozen, jax.tree.map(jnp.asarray, a), setup, train=False)
        (lb, _), gb = grad(params, *frozen, jax.tree.map(jnp.asarray, b), setup, train=False)
        np.testing.assert_allclose(float(lb), float(la), rtol=1e-5)
        for x, y in zip(jax.tree.leaves(gb), jax.tree.leaves(ga)):
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-3, atol=1e-5)
    # resuming the stored feed replays the same batch
    state = stored.state()
    first = next(stored)
    stored.restore(state)
    for name, x in leaves(next(stored)).items():
        np.testing.assert_array_equal(x, leaves(first)[name])


def test_bfloat16_store_is_the_float32_one_rounded(tmp_path):
    setup, _, frozen, features, toks = _pieces()
    f32 = context_store.build(tmp_path / "a", features, toks, setup, frozen, dtype="float32", log=lambda m: None)
    bf16 = context_store.build(tmp_path / "b", features, toks, setup, frozen, dtype="bfloat16", log=lambda m: None)
    for side in ("sharer", "receiver"):
        x, y = f32.example(3, side), bf16.example(3, side)
        assert y.dtype.name == "bfloat16" and x.shape == y.shape
        np.testing.assert_allclose(y.astype(np.float32), x, rtol=1e-2, atol=1e-2)
        assert not np.array_equal(y.astype(np.float32), x)


def test_a_killed_build_resumes_at_its_first_missing_chunk(tmp_path):
    setup, _, frozen, features, toks = _pieces()
    whole = context_store.build(tmp_path / "whole", features, toks, setup, frozen, dtype="float32", chunk_examples=4,
                                log=lambda m: None)
    calls, kill = [], True
    real = context_store.compute_chunk

    class Killed(Exception):
        pass

    def dies_on_third(*args, **kw):
        calls.append(1)
        if len(calls) == 3 and kill:
            raise Killed
        return real(*args, **kw)

    context_store.compute_chunk = dies_on_third
    try:
        with pytest.raises(Killed):
            context_store.build(tmp_path / "part", features, toks, setup, frozen, dtype="float32", chunk_examples=4,
                                log=lambda m: None)
        (path,) = (tmp_path / "part").iterdir()
        manifest = json.loads((path / "manifest.json").read_text())
        assert manifest["chunks"] == [[0, 4], [4, 8]] and not manifest["complete"]
        with pytest.raises(context_store.ContextStoreError, match="incomplete"):
            context_store.ContextStore(path)
        calls.clear()
        kill = False
        resumed = context_store.build(tmp_path / "part", features, toks, setup, frozen, dtype="float32",
                                      chunk_examples=4, log=lambda m: None)
    finally:
        context_store.compute_chunk = real
    assert len(calls) == -(-len(toks) // 4) - 2   # only the missing chunks were computed
    for i in range(len(toks)):
        for side in ("sharer", "receiver"):
            np.testing.assert_array_equal(resumed.example(i, side), whole.example(i, side))


def test_a_store_that_does_not_fit_fails_naming_the_size_and_the_fixes(tmp_path, monkeypatch):
    setup, _, frozen, features, toks = _pieces()
    monkeypatch.setattr(context_store.shutil, "disk_usage", lambda p: type("U", (), {"free": 1000})())
    with pytest.raises(context_store.ContextStoreError, match="needs .* GB .* free: train on fewer examples"):
        context_store.build(tmp_path, features, toks, setup, frozen, log=lambda m: None)
    assert not any(tmp_path.iterdir())


def test_stored_needs_a_shared_context_run():
    from lcf_jax.train import config as config_lib
    with pytest.raises(ValueError, match="sharer_cache='stored' stores shared contexts"):
        config_lib.apply_overrides(config_lib.pair_config("tiny-llama", "tiny-gemma3", "lcfx"),
                                   {"train.sharer_cache": "stored"})
