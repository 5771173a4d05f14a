"""The ladder on tiny random models with a character tokenizer: every rung runs, R2 (own K/V through the
positioned convention) answers exactly as R1 (reading), and the table carries paired intervals."""
import jax
import jax.numpy as jnp
import pytest

from lcf_jax.adapters import lcfx
from lcf_jax.comm.agents import Agent
from lcf_jax.comm.protocols import QATask, Session
from lcf_jax.eval import ladder
from lcf_jax.models import registry


class CharTokenizer:
    """ids 3.. for characters; BOS (1) prepended with special tokens when `bos`."""
    chat_template = None

    def __init__(self, bos: bool, vocab: int = 96):
        self.bos, self.vocab = bos, vocab

    def __call__(self, text, add_special_tokens=True):
        ids = [3 + (ord(c) % (self.vocab - 3)) for c in text]
        return {"input_ids": ([1] if self.bos and add_special_tokens else []) + ids}

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(97 + (i - 3) % 26) for i in ids if i > 2)


def _agent(name, bos):
    cfg, params = registry.load_any(name)
    return Agent(name, cfg, jax.tree.map(jnp.asarray, params), CharTokenizer(bos))


@pytest.fixture(scope="module")
def session():
    sharer, receiver = _agent("tiny-llama", False), _agent("tiny-gemma3", True)
    cfg = lcfx.LCFXConfig(rank=16, slots=4, pool_heads=2, injection="positioned", decoder="embed", embed_hidden=16)
    params = lcfx.calibrate_embed_decoder(lcfx.init_lcfx(jax.random.key(0), cfg, sharer.config, receiver.config),
                                          receiver.params, cfg=cfg, receiver_cfg=receiver.config)
    return Session(receiver=receiver, sharer=sharer, adapter=(cfg, params), max_new_tokens=4, max_context_tokens=24,
                   batch_size=3)


def test_every_rung_runs_and_r2_equals_r1(session):
    tasks = [QATask(str(i), f"passage number {i} says the answer is {i * 7}", f"what is {i}?", (str(i * 7),))
             for i in range(5)]
    rungs = [r for r in ladder.RUNGS if r != "R3"]          # R3 is for window-pooled adapters (below)
    results = ladder.run_ladder(session, {"toy": tasks}, rungs=rungs, log=lambda *_: None)
    toy = results["toy"]
    assert set(toy) == set(rungs)
    assert toy["R2"]["answers"] == toy["R1"]["answers"]          # the convention loses nothing
    assert all(len(r["f1"]) == 5 and len(r["em"]) == 5 for r in toy.values())
    table = ladder.ladder_table(results, {"n": 5})
    assert [r[0] for r in table.rows][:3] == [ladder.RUNG_LABELS[k] for k in ("R0", "R1", "R2")]
    assert "[" in table.rows[1][1]                                 # intervals are printed


def test_rungs_that_need_an_adapter_say_so(session):
    bare = Session(receiver=session.receiver, sharer=session.sharer)
    with pytest.raises(ValueError, match="need an LCF-X adapter"):
        ladder.run_ladder(bare, {"toy": []}, rungs=["R5"])
    with pytest.raises(ValueError, match="unknown ladder rungs"):
        ladder.run_ladder(session, {"toy": []}, rungs=["R9"])


def test_r3_reads_the_excerpt_the_window_selects(session):
    cfg = lcfx.LCFXConfig(rank=16, slots=3, pool_heads=2, conditioned=True, pooling="window", locator_rank=8,
                          injection="positioned", decoder="embed", embed_hidden=16)
    params = lcfx.init_lcfx(jax.random.key(1), cfg, session.sharer.config, session.receiver.config)
    win = Session(receiver=session.receiver, sharer=session.sharer, adapter=(cfg, params), max_new_tokens=4,
                  max_context_tokens=24, batch_size=3)
    tasks = [QATask(str(i), f"passage {i} holds {i * 3}", f"what is {i}?", (str(i * 3),)) for i in range(4)]
    excerpts = ladder.window_excerpts(win.sharer, win.receiver, win.adapter, win.sharer_rows([t.sharer_context for t in tasks]),
                                      win.question_rows(tasks))
    for e, t in zip(excerpts, tasks):                   # 3 consecutive characters of the passage (decoded a-z)
        assert len(e) == 3 and e in win.sharer.decode(win.sharer.encode(t.sharer_context, special=False))
    results = ladder.run_ladder(win, {"toy": tasks}, rungs=["R0", "R3", "R5", "R5 control"], log=lambda *_: None)
    assert len(results["toy"]["R3"]["answers"]) == 4
    with pytest.raises(ValueError, match="leave R3 out"):
        ladder.run_ladder(session, {"toy": tasks}, rungs=["R3"])


def test_earlier_rungs_are_kept_on_the_same_first_questions():
    earlier = {"squad": {"R0": {"f1": [1.0, 2.0, 3.0], "em": [0.0, 0.0, 1.0], "answers": ["a", "b", "c"]},
                         "R5": {"f1": [9.0, 9.0, 9.0], "em": [1.0, 1.0, 1.0], "answers": ["x", "y", "z"]}},
               "nq_openbook": {"R0": {"f1": [1.0], "em": [0.0], "answers": ["a"]}}}
    now = {"squad": {"R5": {"f1": [5.0, 6.0], "em": [0.0, 1.0], "answers": ["p", "q"]}}, "nq_openbook": {}}
    out = ladder.keep_earlier_rungs(now, earlier, {"squad": 2, "nq_openbook": 2})
    assert out["squad"]["R0"] == {"f1": [1.0, 2.0], "em": [0.0, 0.0], "answers": ["a", "b"]}   # its first 2 rows
    assert out["squad"]["R5"]["f1"] == [5.0, 6.0]       # a rung run now is never replaced
    assert "R0" not in out["nq_openbook"]                # 1 earlier row cannot stand for 2
