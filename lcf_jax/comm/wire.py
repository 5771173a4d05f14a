"""An LCF-X message as bytes: what crosses from the sharer's process to the receiver's (no JAX here).

A message is only meaningful to the adapter that encoded it: another adapter's decoder (or the same adapter
between other models) turns it into confident nonsense, not an error. So the bytes carry the adapter's
identity, and `from_bytes` / `load` refuse a message from another adapter or pair, a wrong shape or dtype,
a truncated file or non-finite values, each with one clear sentence (`MessageError`).

Layout (little-endian):

  b"LCFXMSG\\0"  uint32 header length  header (UTF-8 JSON)  latents bytes  [scale bytes]

  header = {"format": "lcf_jax.lcfx_message", "version": 1,
            "adapter": {"sharer", "receiver", "slots", "rank", "config_sha256", "params_sha256"},
            "ids": [one row id per message row],
            "latents": {"dtype": "float32" | "bfloat16" | "float16" | "int8", "shape": [B, slots, rank]},
            "scale": null | {"dtype": "float32", "shape": [B, slots, 1]}}      (int8 only)

The latents are what `lcf_jax.adapters.lcfx.quantize_message` produces: a cast, or int8 with a per-slot scale.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import struct
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import ml_dtypes
import numpy as np

MAGIC = b"LCFXMSG\x00"
FORMAT = "lcf_jax.lcfx_message"
VERSION = 1
LATENT_DTYPES = {"float32": np.dtype("<f4"), "bfloat16": np.dtype(ml_dtypes.bfloat16),
                 "float16": np.dtype("<f2"), "int8": np.dtype("i1")}
_HEADER_LEN = struct.Struct("<I")
_MAX_HEADER = 1 << 26


class MessageError(ValueError):
    """The bytes are not a message this receiver can decode (another adapter, wrong shape, corrupt)."""


def _sha256_json(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=list).encode()).hexdigest()


def _config_dict(cfg: Any) -> dict:
    d = dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else dict(cfg)
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


def _flat(tree: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(tree, Mapping):
        return [kv for k in sorted(tree) for kv in _flat(tree[k], f"{prefix}{k}/")]
    return [(prefix.rstrip("/"), tree)]


def params_sha256(params: Any) -> str:
    """Hash of the adapter weights as float32 (the same file loaded in two processes hashes the same)."""
    h = hashlib.sha256()
    for name, leaf in _flat(params):
        x = np.ascontiguousarray(np.asarray(leaf, np.float32))
        h.update(f"{name}:{x.shape};".encode())
        h.update(x.astype("<f4", copy=False).tobytes())
    return h.hexdigest()


@dataclasses.dataclass(frozen=True)
class AdapterIdentity:
    """Which adapter, between which two models, encoded a message; and so which shape it has."""
    sharer: str
    receiver: str
    slots: int
    rank: int
    config_sha256: str
    params_sha256: str

    @classmethod
    def of(cls, cfg: Any, params: Any, sharer: str, receiver: str) -> "AdapterIdentity":
        """`cfg`: the LCFXConfig (or adapter.json's config dict); `params`: its weights."""
        d = _config_dict(cfg)
        return cls(sharer, receiver, int(d["slots"]), int(d["rank"]), _sha256_json(d), params_sha256(params))

    def describe(self) -> str:
        return (f"the {self.sharer} -> {self.receiver} adapter with config {self.config_sha256[:12]} and weights "
                f"{self.params_sha256[:12]}")

    def difference(self, other: "AdapterIdentity") -> Optional[str]:
        """What differs from `other` (in the words a user needs), or None when they are the same adapter."""
        if (self.sharer, self.receiver) != (other.sharer, other.receiver):
            return f"it was made for {self.sharer} -> {self.receiver}, not {other.sharer} -> {other.receiver}"
        if self.config_sha256 != other.config_sha256:
            return f"it was made by an adapter with another config ({self.config_sha256[:12]}, not {other.config_sha256[:12]})"
        if self.params_sha256 != other.params_sha256:
            return f"it was made by an adapter with other weights ({self.params_sha256[:12]}, not {other.params_sha256[:12]})"
        if (self.slots, self.rank) != (other.slots, other.rank):
            return f"it has {self.slots} x {self.rank} slots, not {other.slots} x {other.rank}"
        return None


@dataclasses.dataclass(frozen=True)
class Message:
    """One message per row: latents [B, slots, rank] in their wire dtype (+ int8's scale [B, slots, 1])."""
    identity: AdapterIdentity
    ids: tuple[str, ...]
    latents: np.ndarray
    scale: Optional[np.ndarray] = None

    @property
    def dtype(self) -> str:
        return next(k for k, v in LATENT_DTYPES.items() if v == self.latents.dtype)

    def float32(self) -> np.ndarray:
        """The latents as float32 (`lcfx.dequantize_message`)."""
        x = self.latents.astype(np.float32)
        return x if self.scale is None else x * self.scale.astype(np.float32)

    def row_nbytes(self) -> int:
        """Bytes of one row's message on the wire (latents + scale, without the header)."""
        n = self.latents[:1].nbytes
        return int(n + (0 if self.scale is None else self.scale[:1].nbytes))


def from_latents(latents, identity: AdapterIdentity, ids: Sequence[str], dtype: str = "float32") -> Message:
    """Float latents [B, m, r] -> a Message in `dtype` (quantized with `lcfx.quantize_message`)."""
    from lcf_jax.adapters import lcfx  # JAX: only the sharer's side needs it
    if dtype not in LATENT_DTYPES:
        raise MessageError(f"message dtype must be one of {sorted(LATENT_DTYPES)}, got {dtype!r}")
    q, scale = lcfx.quantize_message(latents, dtype)
    msg = Message(identity, tuple(str(i) for i in ids), np.asarray(q), None if scale is None else np.asarray(scale))
    check(msg)
    return msg


# ------------------------------------------------------------------------------------------------
# Checks: a message is refused, never decoded into a silently wrong answer
# ------------------------------------------------------------------------------------------------
def check(msg: Message, expect: Optional[AdapterIdentity] = None, where: str = "the message") -> None:
    ident = msg.identity
    if expect is not None:
        diff = ident.difference(expect)
        if diff is not None:
            raise MessageError(f"{where} does not fit this receiver's adapter: {diff}; run both halves with the same "
                               "--adapter, --sharer and --receiver")
    if len(set(msg.ids)) != len(msg.ids):
        raise MessageError(f"{where} repeats row ids")
    want = (len(msg.ids), ident.slots, ident.rank)
    if msg.latents.dtype not in LATENT_DTYPES.values():
        raise MessageError(f"{where} has latents of dtype {msg.latents.dtype}; allowed: {sorted(LATENT_DTYPES)}")
    if tuple(msg.latents.shape) != want:
        raise MessageError(f"{where} has latents of shape {list(msg.latents.shape)}, expected {list(want)} "
                           f"({len(msg.ids)} rows x {ident.slots} slots x rank {ident.rank})")
    if (msg.latents.dtype == LATENT_DTYPES["int8"]) != (msg.scale is not None):
        raise MessageError(f"{where}: int8 latents need a scale and other dtypes have none")
    if msg.scale is not None:
        if msg.scale.dtype != np.float32 or tuple(msg.scale.shape) != want[:2] + (1,):
            raise MessageError(f"{where} has a scale of {msg.scale.dtype} {list(msg.scale.shape)}, expected float32 "
                               f"{list(want[:2] + (1,))}")
        if not np.all(np.isfinite(msg.scale)) or np.any(msg.scale < 0):
            raise MessageError(f"{where} has a non-finite or negative int8 scale: the file is corrupt")
    if msg.latents.dtype != LATENT_DTYPES["int8"]:
        bad = ~np.isfinite(msg.latents.astype(np.float32))
        if bad.any():
            rows = sorted({msg.ids[i] for i in np.nonzero(bad.any(axis=(1, 2)))[0]})
            raise MessageError(f"{where} holds {int(bad.sum())} non-finite values (NaN/inf) in rows {rows[:5]}: "
                               "the sharer's side overflowed (try --message-dtype float32) or the file is corrupt")


def _field(d: Any, key: str, kind: type, where: str):
    if not isinstance(d, dict) or key not in d or not isinstance(d[key], kind) or isinstance(d[key], bool):
        raise MessageError(f"{where}: header field {key!r} is missing or not a {kind.__name__}")
    return d[key]


def _identity_from(header: dict, where: str) -> AdapterIdentity:
    a = _field(header, "adapter", dict, where)
    kinds = {"slots": int, "rank": int}
    return AdapterIdentity(**{f.name: _field(a, f.name, kinds.get(f.name, str), where)
                              for f in dataclasses.fields(AdapterIdentity)})


def _array(spec: Any, data: memoryview, offset: int, where: str, what: str) -> tuple[np.ndarray, int]:
    dtype_name = _field(spec, "dtype", str, f"{where} ({what})")
    shape = _field(spec, "shape", list, f"{where} ({what})")
    if dtype_name not in LATENT_DTYPES or not all(isinstance(n, int) and n >= 0 for n in shape):
        raise MessageError(f"{where}: {what} has dtype {dtype_name!r} and shape {shape}; dtypes: {sorted(LATENT_DTYPES)}")
    dtype = LATENT_DTYPES[dtype_name]
    n = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if offset + n > len(data):
        raise MessageError(f"{where} is truncated: {what} needs {n} bytes, {max(len(data) - offset, 0)} remain")
    return np.frombuffer(data[offset:offset + n], dtype=dtype).reshape(shape).copy(), offset + n


# ------------------------------------------------------------------------------------------------
# Bytes and files
# ------------------------------------------------------------------------------------------------
def to_bytes(msg: Message) -> bytes:
    check(msg)
    spec = lambda x: None if x is None else {"dtype": next(k for k, v in LATENT_DTYPES.items() if v == x.dtype),
                                             "shape": list(x.shape)}
    header = json.dumps({"format": FORMAT, "version": VERSION, "adapter": dataclasses.asdict(msg.identity),
                         "ids": list(msg.ids), "latents": spec(msg.latents), "scale": spec(msg.scale)}).encode()
    parts = [MAGIC, _HEADER_LEN.pack(len(header)), header, np.ascontiguousarray(msg.latents).tobytes()]
    if msg.scale is not None:
        parts.append(np.ascontiguousarray(msg.scale, "<f4").tobytes())
    return b"".join(parts)


def from_bytes(data: bytes, *, expect: Optional[AdapterIdentity] = None, where: str = "the message") -> Message:
    """Bytes -> Message, refusing anything that is not a whole, finite message of `expect`'s adapter."""
    data = memoryview(data)
    if len(data) < len(MAGIC) + _HEADER_LEN.size or bytes(data[:len(MAGIC)]) != MAGIC:
        raise MessageError(f"{where} is not an LCF-X message (write one with `python -m lcf_jax.answer --protocol lcfx "
                           "--save-message PATH`)")
    (n,) = _HEADER_LEN.unpack_from(data, len(MAGIC))
    start = len(MAGIC) + _HEADER_LEN.size
    if n > _MAX_HEADER or start + n > len(data):
        raise MessageError(f"{where} is truncated or corrupt (its header claims {n} bytes)")
    try:
        header = json.loads(bytes(data[start:start + n]).decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MessageError(f"{where}: the header is not valid JSON ({e}); the file is corrupt") from e
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise MessageError(f"{where}: format is {header.get('format') if isinstance(header, dict) else None!r}, "
                           f"expected {FORMAT!r}")
    if header.get("version") != VERSION:
        raise MessageError(f"{where} has format version {header.get('version')!r}; this reader reads version {VERSION}")
    identity = _identity_from(header, where)
    ids = _field(header, "ids", list, where)
    if not all(isinstance(i, str) for i in ids):
        raise MessageError(f"{where}: header field 'ids' must list strings")
    latents, offset = _array(header.get("latents"), data, start + n, where, "latents")
    scale = None
    if header.get("scale") is not None:
        scale, offset = _array(header["scale"], data, offset, where, "scale")
    if offset != len(data):
        raise MessageError(f"{where} has {len(data) - offset} bytes after its arrays: the file is corrupt")
    msg = Message(identity, tuple(ids), latents, scale)
    check(msg, expect, where)
    return msg


def save(path: str | os.PathLike, msg: Message) -> Path:
    """Writes the message atomically (a reader never sees half a file)."""
    path = Path(path)
    data = to_bytes(msg)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_bytes(data)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load(path: str | os.PathLike, *, expect: Optional[AdapterIdentity] = None) -> Message:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"message file {path} does not exist")
    if not path.is_file():
        raise IsADirectoryError(f"message path {path} is not a file")
    return from_bytes(path.read_bytes(), expect=expect, where=f"message {path}")
