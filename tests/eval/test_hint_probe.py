import jax
import pytest

from lcf_jax.eval import hint_probe as H
from tests.comm.tiny_agents import tiny_agent


def test_the_hint_names_the_gold_choice_or_the_one_after_it():
    ex = {"question": "q", "choices": ["a", "b", "c"], "gold": 2}
    assert [H.hinted_choice(ex, h) for h in H.HINTS] == [None, "c", "a"]
    assert H.hint_text(ex, "none") == "" and H.hint_text(ex, "wrong") == "Hint: the answer is a.\n"
    with pytest.raises(ValueError, match="hint must be"):
        H.hinted_choice(ex, "silver")


def test_hint_probe_rows_each_subject_with_every_hint(tmp_path):
    from lcf_jax.adapters import ADAPTER_KINDS
    from lcf_jax.adapters.lcf import LCFConfig
    from lcf_jax.eval import shared_mc
    from lcf_jax.train.objective import Setup

    s, r = tiny_agent("tiny-llama", bos=False), tiny_agent("tiny-gemma3", bos=True, seed=1)
    cfg = LCFConfig(rank=8)
    params = ADAPTER_KINDS["lcf"].init(jax.random.PRNGKey(0), cfg, s.config, r.config)
    params = jax.tree.map(lambda x: x + 0.05 * jax.random.normal(jax.random.PRNGKey(1), x.shape, x.dtype), params)
    adapter = dict(setup=Setup("lcf", cfg, s.config, r.config), params=params, frozen=(s.params, r.params),
                   features=shared_mc.mc_features(s.tokenizer, r.tokenizer), mb=0.1, source="tiny")
    table, res = H.table_hint_probe({"tiny alone": r}, {"lcf": adapter}, {"mc/arc_easy": "dev"}, n=3,
                                    rows_dir=tmp_path)
    assert [row[:2] for row in table.rows] == [["tiny alone", "itself"], ["lcf", "sharer"]]
    assert all(cell is not None for row in table.rows for cell in row)
    assert sorted((x["method"], x["hint"]) for x in res) == sorted((m, h) for m in ("tiny alone", "lcf")
                                                                   for h in H.HINTS)
    gold = next(x for x in res if x["method"] == "lcf" and x["hint"] == "gold")
    assert gold["split"] == "dev" and len(gold["hinted_per_question"]) == 3 and gold["n"] == 3
    assert len(gold["gold_logprob_per_question"]) == 3 and max(gold["gold_logprob_per_question"]) <= 0.0
    assert len(list(tmp_path.glob("*.json"))) == 6                 # every subject and hint kept apart
    again, _ = H.table_hint_probe({"tiny alone": r}, {"lcf": adapter}, {"mc/arc_easy": "dev"}, n=3, rows_dir=tmp_path)
    assert again.rows == table.rows                                   # read back from the kept rows
