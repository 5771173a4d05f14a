"""Every protocol on tiny models: one reply per task, bytes accounted, latency phases, quantized messages."""
import jax
import numpy as np
import pytest

from lcf_jax.adapters import LCFXConfig, init_lcfx
from lcf_jax.comm import protocols
from tests.comm.tiny_agents import tiny_agent

TASKS = [protocols.QATask(str(i), f"The river number {i} flows into the sea near Paris in 1889.",
                          f"Where does river {i} flow?", ("the sea",)) for i in range(5)]


@pytest.fixture(scope="module")
def session():
    sharer, receiver = tiny_agent("tiny-llama", bos=False), tiny_agent("tiny-gemma3", bos=True, seed=1)
    cfg = LCFXConfig(rank=16, slots=4, pool_heads=2, value_gate_init=1.0)
    params = init_lcfx(jax.random.PRNGKey(0), cfg, sharer.config, receiver.config)
    return protocols.Session(receiver=receiver, sharer=sharer, adapter=(cfg, params), max_new_tokens=4,
                             max_context_tokens=32, batch_size=2)


@pytest.mark.parametrize("proto", ["alone", "oracle", "text", "lcfx", "lcfx_control"])
def test_each_protocol_answers_every_task(session, proto):
    kw = {"budget": 6} if proto == "text" else {}
    replies = protocols.run_protocol(session, proto, TASKS, **kw)
    assert [r.id for r in replies] == [t.id for t in TASKS]
    assert all(isinstance(r.answer, str) for r in replies)
    if proto in ("alone", "oracle"):
        assert all(r.bytes_sent == 0 for r in replies)
    elif proto == "text":  # the bytes of the message the sharer wrote (greedy: the same message again)
        msgs = session.text_messages(TASKS[:2], 6, with_question=False)
        assert [r.bytes_sent for r in replies[:2]] == [len(m.encode("utf-8")) for m in msgs]
    else:
        assert all(r.bytes_sent == 4 * 16 * 4 for r in replies)  # m x r float32


def test_lcfx_message_changes_the_answer_and_control_differs_from_lcfx(session):
    """A strong value gate makes the message matter: real and control passages give different logits."""
    from lcf_jax.comm import lcfx_channel
    cfg, params = session.adapter
    q = session.question_rows(TASKS[:2])
    a = lcfx_channel.send(session.sharer, session.receiver, params, cfg, session.sharer_rows([TASKS[0].sharer_context] * 2), q)
    b = lcfx_channel.send(session.sharer, session.receiver, params, cfg, session.sharer_rows(["completely different words here"] * 2), q)
    assert float(np.abs(np.asarray(a) - np.asarray(b)).max()) > 1e-4


def test_quantized_message_is_smaller(session):
    full = session.lcfx(TASKS[:2])
    q8 = session.lcfx(TASKS[:2], quantize="int8")
    assert q8[0].bytes_sent < full[0].bytes_sent


def test_latency_phases(session):
    lat = session.time_one("lcfx", TASKS[0], repeats=1)
    assert set(lat) == {"sharer_prefill", "adapter", "receiver_prefill", "receiver_decode"}
    assert all(v >= 0 for v in lat.values())
    lat = session.time_one("text", TASKS[0], repeats=1, budget=4)
    assert {"sharer_prefill", "sharer_decode", "receiver_prefill", "receiver_decode"} == set(lat)


def test_multi_sharer_and_two_rounds(session):
    multi = session.lcfx_multi(TASKS[:2], [t.sharer_context for t in TASKS[:2]], ["other text"] * 2)
    assert len(multi) == 2 and multi[0].bytes_sent == 2 * 4 * 16 * 4
    two = session.lcfx_two_rounds(TASKS[:2])
    assert len(two) == 2 and two[0].bytes_sent > 4 * 16 * 4


def test_unknown_protocol(session):
    with pytest.raises(ValueError, match="unknown protocol"):
        protocols.run_protocol(session, "telepathy", TASKS)
