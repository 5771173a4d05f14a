"""The token-translation and locator stages of a window-pooled LCF-X adapter, on tiny models with local
offset tokenizers."""
import jax
import numpy as np
import pytest

from lcf_jax.adapters import lcfx
from lcf_jax.models import registry
from lcf_jax.train import config as config_lib
from lcf_jax.train import locator, token_translation
from lcf_jax.train.objective import Setup
from tests.offset_tok import OffsetTok

PASSAGES = ["The 3 cats sat on 12 mats in Paris.", "Rivers run to the sea and the sea is salt",
            "a b c d e f g h i j k l m n o p", "Marie Curie won two Nobel prizes in 1903 and 1911."]


def window_setup(**kw):
    """(setup, frozen models, calibrated params) of a tiny conditioned window-pooled LCF-X adapter."""
    s, r = registry.TINY_CONFIGS["tiny-llama"], registry.TINY_CONFIGS["tiny-gemma3"]
    cfg = lcfx.LCFXConfig(**{"rank": 16, "slots": 4, "pool_heads": 2, "conditioned": True, "pooling": "window",
                             "locator_rank": 8, "injection": "positioned", "decoder": "embed", "embed_hidden": 32,
                             "sharer_layers": (0, 1), "cond_layers": (0,), **kw})
    frozen = (registry.load_any("tiny-llama")[1], registry.load_any("tiny-gemma3")[1])
    params = lcfx.init_lcfx(jax.random.key(0), cfg, s, r)
    params = lcfx.calibrate_embed_decoder(params, frozen[1], cfg=cfg, receiver_cfg=r)
    return Setup("lcfx", cfg, s, r), frozen, params


def test_each_sharer_token_targets_the_receiver_token_of_its_own_text():
    s_tok, r_tok = OffsetTok("bare"), OffsetTok("words")
    text = "one two  three\n"
    ids, targets, weight = token_translation.token_targets(text, s_tok, r_tok, max_len=32)
    # the sharer's offsets leave out whitespace; each piece runs from the previous token's end, so the
    # receiver sees " two" (its own token with the space), not "two"
    pieces = ["one", " two", "  three"]
    assert len(ids) == 3 and weight == [True] * 3
    assert targets == [r_tok(p, add_special_tokens=False)["input_ids"][0] for p in pieces]
    assert targets[1] != r_tok("two", add_special_tokens=False)["input_ids"][0]
    assert len(token_translation.token_targets(text, s_tok, r_tok, max_len=2)[0]) == 2
    # a whitespace-only piece (a chunk of spaces) is not supervised
    _, _, weight = token_translation.token_targets("ab    cd", OffsetTok("chars", bos=False), r_tok, max_len=8)
    assert weight == [True, False, False, True]


def test_answer_tokens_mark_the_first_occurrence_case_insensitively():
    text = "Paris is in France. paris again."
    offsets = OffsetTok("words", bos=False)(text)["offset_mapping"]
    got = locator.answer_tokens(text, ["berlin", "PARIS"], offsets)
    assert got.tolist() == [True] + [False] * (len(offsets) - 1)
    assert not locator.answer_tokens(text, ["Rome"], offsets).any()
    span = locator.answer_tokens(text, ["in France"], offsets)
    assert [text[a:b].strip() for (a, b), t in zip(offsets, span) if t] == ["in", "France."]


def test_token_translation_learns_and_touches_only_its_parameters():
    setup, frozen, params = window_setup()
    feed = token_translation.TokenBatches(PASSAGES, OffsetTok("chars", bos=False), OffsetTok("words", vocab=64),
                                          max_len=24, batch_size=4, seed=0)
    logs = []
    out = token_translation.pretrain(params, frozen, feed, setup, steps=60, lr=3e-3, log=lambda s, m: logs.append(m),
                                     log_every=5)
    assert logs[-1]["loss"] < 0.6 * logs[0]["loss"], [m["loss"] for m in logs]
    assert logs[-1]["batch_top1"] > logs[0]["batch_top1"]
    for k in params:
        same = np.array_equal(np.asarray(out[k]), np.asarray(params[k]))
        assert same == (k not in token_translation.TRAINED_KEYS), k


def test_locator_learns_where_answers_sit_and_touches_only_its_parameters():
    setup, frozen, params = window_setup()
    s_tok, r_tok = OffsetTok("words", bos=False), OffsetTok("chars", vocab=64)
    rows = [{"sharer_context": p, "question": f"where is {w}?", "answers": [w]}
            for p in PASSAGES for w in p.split()[2:6]]
    rows.append({"sharer_context": PASSAGES[0], "question": "q", "answers": ["absent"]})   # skipped
    feed = locator.LocatorBatches(rows, s_tok, r_tok, max_len=16, max_prompt_len=12,
                                  prompt_template="Question: {question}\nAnswer:", batch_size=8, seed=0)
    assert len(feed) == len(rows) - 1
    logs = []
    out = locator.pretrain(params, frozen, feed, setup, steps=80, lr=1e-2, log=lambda s, m: logs.append(m), log_every=10)
    assert logs[-1]["loss"] < 0.7 * logs[0]["loss"], [m["loss"] for m in logs]
    for k in params:
        if k not in locator.TRAINED_KEYS:
            np.testing.assert_array_equal(np.asarray(out[k]), np.asarray(params[k]), err_msg=k)


def test_an_unconditioned_locator_trains_its_prior_alone():
    """Unconditioned window pooling: the locator learns the prior z . w_b (no receiver summary to train)."""
    setup, frozen, params = window_setup(conditioned=False)
    s_tok, r_tok = OffsetTok("words", bos=False), OffsetTok("chars", vocab=64)
    rows = [{"sharer_context": p, "question": "q?", "answers": [p.split()[3]]} for p in PASSAGES]
    feed = locator.LocatorBatches(rows, s_tok, r_tok, max_len=16, max_prompt_len=12,
                                  prompt_template="Question: {question}\nAnswer:", batch_size=4, seed=0)
    logs = []
    out = locator.pretrain(params, frozen, feed, setup, steps=60, lr=3e-2, log=lambda s, m: logs.append(m), log_every=10)
    assert logs[-1]["loss"] < 0.7 * logs[0]["loss"], [m["loss"] for m in logs]
    for k in params:
        same = np.array_equal(np.asarray(out[k]), np.asarray(params[k]))
        assert same == (k != "loc_wb"), k


def test_a_translation_is_loaded_from_an_exported_adapter_and_nothing_else(tmp_path):
    """pretrain.translation_from: the token translation of another (here conditioned) adapter replaces
    stage 1; the locator's parameters stay this run's own; a different translation is refused by name."""
    from lcf_jax.adapters.export_jax import export_adapter
    setup, _, trained = window_setup()
    trained = {k: v + 0.25 for k, v in trained.items()}
    export_adapter(tmp_path / "a", trained, setup.adapter, setup.sharer, setup.receiver)
    fresh_setup, _, fresh = window_setup(conditioned=False)
    out = token_translation.load_translation(fresh, str(tmp_path / "a"), fresh_setup)
    assert set(out) == set(fresh)
    for k in fresh:
        want = trained[k] if k in token_translation.TRAINED_KEYS else fresh[k]
        np.testing.assert_array_equal(np.asarray(out[k]), np.asarray(want), err_msg=k)
    other_setup, _, other = window_setup(sharer_layers=(1,))
    with pytest.raises(ValueError, match="sharer_layers=\\(0, 1\\)"):
        token_translation.load_translation(other, str(tmp_path / "a"), other_setup)


def test_config_names_the_stage_a_setting_needs():
    base = config_lib.pair_config("tiny-llama", "tiny-gemma3", "lcfx", pretrain={"method": "tokens", "steps": 5})
    with pytest.raises(ValueError, match="decoder='embed'"):
        config_lib.validate(base)
    c = config_lib.pair_config("tiny-llama", "tiny-gemma3", "lcfx", pretrain={"method": "sgd", "locator_steps": 5})
    with pytest.raises(ValueError, match="locator_steps"):
        config_lib.validate(c)
    c = config_lib.pair_config("tiny-llama", "tiny-gemma3", "lcfx", pretrain={"translation_from": "x"})
    with pytest.raises(ValueError, match="translation_from"):
        config_lib.validate(c)


def test_the_curve_shows_both_pre_training_stages(tmp_path):
    import json

    from lcf_jax.train import run_log
    rows = [{"step": s, "kind": "pretrain", "loss": 2.0 / s} for s in (10, 20)]
    rows += [{"step": s, "kind": "pretrain", "locator_loss": 3.0 / s, "locator_window_recall": 0.5,
              "locator_top1_in_answer": 0.2} for s in (30, 40)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    out = run_log.plot_curve(tmp_path)
    assert out is not None and out.stat().st_size > 1000
    assert run_log.plot_curve(tmp_path / "empty") is None
