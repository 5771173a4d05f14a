"""LCF-X messages as bytes (`lcf_jax.comm.wire`): round trips in every wire dtype, refusals of anything a
receiver must not decode (another adapter or pair, a wrong shape, a damaged file, NaN), and the two halves of
`answer` in two "processes" giving the one-process answers."""
import dataclasses
import json

import jax
import numpy as np
import pytest

from lcf_jax.adapters import LCFXConfig, init_lcfx
from lcf_jax.comm import wire

CFG = LCFXConfig(rank=16, slots=4, pool_heads=2, value_gate_init=1.0)
IDS = ("q1", "q2", "q3")


def _identity(seed=0, cfg=CFG, pair=("tiny-llama", "tiny-gemma3")):
    rng = np.random.default_rng(seed)  # weights stand-ins: the identity hashes whatever the adapter holds
    params = {"enc_w": rng.standard_normal((2, 8, 16)), "dec": {"wk": rng.standard_normal((16, 8))}}
    return wire.AdapterIdentity.of(cfg, params, *pair)


@pytest.fixture(scope="module")
def ident():
    return _identity()


def _latents(seed=0):
    return np.random.default_rng(seed).standard_normal((len(IDS), CFG.slots, CFG.rank)).astype(np.float32) * 3


@pytest.mark.parametrize("dtype,tol", [("float32", 0.0), ("float16", 1e-2), ("bfloat16", 5e-2), ("int8", None)])
def test_round_trip_in_every_wire_dtype(ident, dtype, tol):
    x = _latents()
    msg = wire.from_latents(x, ident, IDS, dtype)
    back = wire.from_bytes(wire.to_bytes(msg), expect=ident)
    assert back.ids == IDS and back.identity == ident and back.dtype == dtype
    np.testing.assert_array_equal(back.latents, msg.latents)
    got = back.float32()
    if tol is None:  # int8: |x - q * scale| <= scale / 2, scale = max|x| per slot / 127
        assert np.all(np.abs(got - x) <= back.scale / 2 + 1e-6)
    else:
        np.testing.assert_allclose(got, x, rtol=tol, atol=tol)
    assert back.row_nbytes() == {"float32": 256, "float16": 128, "bfloat16": 128, "int8": 64 + 16}[dtype]


def test_the_same_adapter_loaded_twice_has_the_same_identity(ident):
    assert _identity() == ident
    assert _identity(seed=1).params_sha256 != ident.params_sha256
    assert _identity(cfg=dataclasses.replace(CFG, value_gate_init=0.0)).config_sha256 != ident.config_sha256


def _tampered(data: bytes, **header_changes) -> bytes:
    """The message with header fields replaced (the arrays kept)."""
    n = int.from_bytes(data[8:12], "little")
    header = {**json.loads(data[12:12 + n]), **header_changes}
    raw = json.dumps(header).encode()
    return data[:8] + len(raw).to_bytes(4, "little") + raw + data[12 + n:]


def test_refusals_name_the_problem(ident, tmp_path):
    data = wire.to_bytes(wire.from_latents(_latents(), ident, IDS))
    other_weights = _identity(seed=1)
    other_pair = dataclasses.replace(ident, sharer="tiny-qwen2")
    cases = {
        "other weights": (data, other_weights, "other weights"),
        "other pair": (data, other_pair, "made for tiny-llama -> tiny-gemma3, not tiny-qwen2 -> tiny-gemma3"),
        "not a message": (b"\x89PNG....", ident, "is not an LCF-X message"),
        "truncated": (data[:-7], ident, "is truncated"),
        "trailing bytes": (data + b"\0" * 4, ident, "4 bytes after its arrays"),
        "newer version": (_tampered(data, version=2), ident, "format version 2"),
        "wrong shape": (_tampered(data, latents={"dtype": "float32", "shape": [3, 4, 8]})[:-3 * 4 * 8 * 4], ident,
                        "latents of shape [3, 4, 8], expected [3, 4, 16]"),
        "wrong dtype": (_tampered(data, latents={"dtype": "float64", "shape": [3, 4, 16]}), ident, "dtype 'float64'"),
        "fewer ids": (_tampered(data, ids=["q1", "q2"]), ident, "shape [3, 4, 16], expected [2, 4, 16]"),
        "no identity": (_tampered(data, adapter={"sharer": "tiny-llama"}), ident, "header field 'receiver' is missing"),
    }
    for name, (raw, expect, words) in cases.items():
        with pytest.raises(wire.MessageError) as e:
            wire.from_bytes(raw, expect=expect)
        assert words in str(e.value), (name, str(e.value))


def test_non_finite_values_and_scales_are_refused(ident):
    x = _latents()
    x[1, 2, 3] = np.inf
    with pytest.raises(wire.MessageError, match=r"1 non-finite values \(NaN/inf\) in rows \['q2'\]"):
        wire.from_bytes(wire.to_bytes(wire.Message(ident, IDS, x)), expect=ident)
    q = wire.from_latents(_latents(), ident, IDS, "int8")
    bad_scale = q.scale.copy()
    bad_scale[0, 0, 0] = np.nan
    with pytest.raises(wire.MessageError, match="non-finite or negative int8 scale"):
        wire.to_bytes(dataclasses.replace(q, scale=bad_scale))
    with pytest.raises(wire.MessageError, match="int8 latents need a scale"):
        wire.to_bytes(dataclasses.replace(q, scale=None))


def test_files_are_written_whole(ident, tmp_path):
    path = wire.save(tmp_path / "m.lcfx", wire.from_latents(_latents(), ident, IDS, "float16"))
    assert [p.name for p in tmp_path.iterdir()] == ["m.lcfx"]  # no temporary file left
    assert wire.load(path, expect=ident).dtype == "float16"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        wire.load(tmp_path / "none.lcfx")


@pytest.mark.parametrize("injection", ["extra", "positioned"])
def test_two_processes_give_the_one_process_answers(tmp_path, injection):
    """answer --save-message on the sharer's side, then --message on the receiver's, equals one process's
    LCF-X answers, for either injection of the message: the message (float32) is the same bytes and the
    receiver half decodes it the same way."""
    from lcf_jax import answer
    from lcf_jax.comm import protocols
    from tests.comm.tiny_agents import tiny_agent
    sharer, receiver = tiny_agent("tiny-llama", bos=False), tiny_agent("tiny-gemma3", bos=True, seed=1)
    cfg = dataclasses.replace(CFG, injection=injection)
    params = init_lcfx(jax.random.PRNGKey(0), cfg, sharer.config, receiver.config)
    session = protocols.Session(receiver=receiver, sharer=sharer, adapter=(cfg, params), max_new_tokens=4,
                                max_context_tokens=32, batch_size=2)
    tasks = [protocols.QATask(str(i), f"The river number {i} flows into the sea near Paris in 1889.",
                              f"Where does river {i} flow?") for i in range(4)]  # two batches of the same shape
    identity = wire.AdapterIdentity.of(cfg, params, sharer.name, receiver.name)
    path = wire.save(tmp_path / "m.lcfx", answer.sharer_half(session, tasks, identity))
    receiving = protocols.Session(receiver=receiver, adapter=(cfg, params), max_new_tokens=4, batch_size=2)
    split = answer.receiver_half(receiving, tasks, wire.load(path, expect=identity))
    whole = session.lcfx(tasks)
    assert [(r.id, r.answer, r.bytes_sent) for r in split] == [(r.id, r.answer, r.bytes_sent) for r in whole]
