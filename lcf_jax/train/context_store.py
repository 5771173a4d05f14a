"""Both models' caches of every shared context, computed once and read by every step after (LCF, C2C).

A shared-context step otherwise spends most of its time on two frozen forwards over the context: the sharer's
and the receiver's (docs/experiments.md has the arithmetic). Neither depends on the adapter, so the store
computes them once per data set and model pair, and any number of runs (LCF and C2C, reruns, resumes, epochs)
read them: a step then runs only the fusion and the receiver over the continuation.

Per example it holds what `objective.receiver_hidden` would compute: the sharer's K/V over its context tokens
(`objective.sharer_cache`) and the receiver's K/V over its context but the last token
(`objective.receiver_context_cache`). Layout of a store directory:

    manifest.json                  models, tokenization, the examples' digest, dtype, per-chunk example ranges
    chunk_00000.sharer.npy         [tokens, layers, 2, kv_heads, head_dim]: the chunk's examples, valid tokens only,
    chunk_00000.receiver.npy       concatenated along tokens (float32, or bfloat16 kept as its uint16 bits)

Each chunk is written under a temporary name and renamed, and the manifest lists only finished chunks, so a
killed build resumes at the first missing chunk and a reader never sees half a file. The directory name is the
digest of everything the caches depend on: a different tokenization or model is a different store.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from lcf_jax.data.batches import ReceiverKV, SharedContextBatch, SharerKV
from lcf_jax.data.shared_context import SharedContextBatches, SharedContextFeatures, TokenizedShared

DTYPES = ("float32", "bfloat16")
FORMAT = 1


class ContextStoreError(ValueError):
    """A store that cannot be built or read as asked (no room, unfinished, another feed's)."""


def default_root() -> Path:
    from lcf_jax.paths import repo_root
    return repo_root() / ".cache" / "lcf_jax" / "context_store"


def digest(tokenized: Sequence[TokenizedShared], sharer: str, receiver: str, dtype: str) -> str:
    """What the stored caches depend on: the two models and every example's context tokens."""
    h = hashlib.sha256(json.dumps({"format": FORMAT, "sharer": sharer, "receiver": receiver, "dtype": dtype}).encode())
    for t in tokenized:
        h.update(np.asarray(t.sharer, np.int32).tobytes() + b"|" + np.asarray(t.receiver_ctx[:-1], np.int32).tobytes()
                 + b";")
    return h.hexdigest()[:16]


def store_bytes(tokenized: Sequence[TokenizedShared], sharer_cfg, receiver_cfg, dtype: str) -> int:
    tokens = sum(len(t.sharer) for t in tokenized), sum(len(t.receiver_ctx) - 1 for t in tokenized)
    width = lambda c: c.num_layers * 2 * c.num_kv_heads * c.head_dim  # noqa: E731
    return (tokens[0] * width(sharer_cfg) + tokens[1] * width(receiver_cfg)) * (4 if dtype == "float32" else 2)


def _encode(x: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "float32":
        return np.asarray(x, np.float32)
    import ml_dtypes
    return np.asarray(x, np.float32).astype(ml_dtypes.bfloat16).view(np.uint16)


def _decode(x: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "float32":
        return x
    import ml_dtypes
    return x.view(ml_dtypes.bfloat16)


def _save_atomic(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        np.save(f, array)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _write_json_atomic(path: Path, obj: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


class ContextStore:
    """A finished store, read through memory maps."""

    def __init__(self, path: Path):
        self.path = Path(path)
        manifest = json.loads((self.path / "manifest.json").read_text())
        if not manifest.get("complete"):
            raise ContextStoreError(f"context store {self.path} is incomplete: rerun the build (it resumes)")
        self.manifest, self.dtype = manifest, manifest["dtype"]
        self._arrays: dict[tuple[int, str], np.ndarray] = {}
        # example -> (chunk, first token, token count) for each model
        self._where: dict[str, np.ndarray] = {}
        for side in ("sharer", "receiver"):
            where = np.zeros((manifest["examples"], 3), np.int64)
            for c, (lo, hi) in enumerate(manifest["chunks"]):
                lengths = np.asarray(manifest[f"{side}_lengths"][lo:hi], np.int64)
                where[lo:hi, 0] = c
                where[lo:hi, 1] = np.concatenate([[0], np.cumsum(lengths)[:-1]])
                where[lo:hi, 2] = lengths
            self._where[side] = where

    def _chunk(self, c: int, side: str) -> np.ndarray:
        key = (c, side)
        if key not in self._arrays:
            self._arrays[key] = np.load(self.path / f"chunk_{c:05d}.{side}.npy", mmap_mode="r")
        return self._arrays[key]

    def example(self, i: int, side: str) -> np.ndarray:
        """[tokens, layers, 2, kv_heads, head_dim] of example i (float32 or bfloat16)."""
        c, start, n = self._where[side][i]
        return _decode(np.asarray(self._chunk(int(c), side)[start:start + n]), self.dtype)

    def left_padded(self, rows: Sequence[int], side: str, width: int) -> tuple[np.ndarray, np.ndarray]:
        """(keys, values) [layers, B, kv_heads, width, head_dim] of `rows`, each right-aligned as the collator
        left-pads its tokens; padding slots are zeros."""
        parts = [self.example(int(i), side) for i in rows]
        _, layers, _, heads, dim = parts[0].shape
        out = np.zeros((layers, 2, len(rows), heads, width, dim), parts[0].dtype)
        for b, p in enumerate(parts):
            if len(p) > width:
                raise ValueError(f"stored example {rows[b]} has {len(p)} {side} tokens, more than the batch's {width}")
            out[:, :, b, :, width - len(p):, :] = p.transpose(1, 2, 3, 0, 4)
        return out[:, 0], out[:, 1]


def _manifest_base(key: str, tokenized, sharer_cfg, receiver_cfg, dtype: str) -> dict:
    return {"format": FORMAT, "digest": key, "sharer": sharer_cfg.name, "receiver": receiver_cfg.name,
            "dtype": dtype, "examples": len(tokenized),
            "sharer_lengths": [int(len(t.sharer)) for t in tokenized],
            "receiver_lengths": [int(len(t.receiver_ctx) - 1) for t in tokenized],
            "chunks": [], "complete": False}


def build(root: Path, features: SharedContextFeatures, tokenized: Sequence[TokenizedShared], setup, frozen: tuple, *,
          dtype: str = "bfloat16", batch_size: int = 16, chunk_examples: int = 128,
          log: Callable[[str], None] = print) -> ContextStore:
    """The store of `tokenized` under `root` (built now, or resumed, or found finished). `setup` and `frozen`
    = (sharer params, receiver params) are the run's: the caches are computed in its compute dtype, exactly as
    a step would compute them."""
    if dtype not in DTYPES:
        raise ContextStoreError(f"context store dtype must be one of {DTYPES}, got {dtype!r}")
    if not tokenized:
        raise ContextStoreError("no shared-context examples to store")
    key = digest(tokenized, setup.sharer.name, setup.receiver.name, dtype)
    path = Path(root) / key
    manifest_path = path / "manifest.json"
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("complete"):
            return ContextStore(path)
    else:
        need = store_bytes(tokenized, setup.sharer, setup.receiver, dtype)
        path.parent.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(path.parent).free
        if need > 0.95 * free:
            raise ContextStoreError(f"the context store of {len(tokenized)} examples needs {need / 1e9:.1f} GB and {path.parent} "
                          f"has {free / 1e9:.1f} GB free: train on fewer examples (data.max_train_examples), shorter "
                          "contexts (data.max_sharer_len), store bfloat16 (data.context_store_dtype), or point "
                          "data.context_store at a larger disk")
        path.mkdir(parents=True, exist_ok=True)
        manifest = _manifest_base(key, tokenized, setup.sharer, setup.receiver, dtype)
        _write_json_atomic(manifest_path, manifest)
        log(f"context store {path}: {len(tokenized)} examples, {need / 1e9:.2f} GB ({dtype})")

    compute = _cache_fns(setup, frozen)
    starts = list(range(0, len(tokenized), chunk_examples))
    t0, done_before = time.perf_counter(), len(manifest["chunks"])
    for c, lo in enumerate(starts):
        if c < len(manifest["chunks"]):
            continue
        hi = min(lo + chunk_examples, len(tokenized))
        sharer_part, receiver_part = compute_chunk(features, tokenized[lo:hi], compute, batch_size, dtype)
        _save_atomic(path / f"chunk_{c:05d}.sharer.npy", sharer_part)
        _save_atomic(path / f"chunk_{c:05d}.receiver.npy", receiver_part)
        manifest["chunks"].append([lo, hi])
        _write_json_atomic(manifest_path, manifest)
        rate = (hi - starts[done_before]) / max(time.perf_counter() - t0, 1e-9)
        log(f"context store: {hi}/{len(tokenized)} examples ({rate:.1f} examples/s)")
    manifest["complete"] = True
    _write_json_atomic(manifest_path, manifest)
    return ContextStore(path)


def _cache_fns(setup, frozen: tuple):
    """(sharer rows -> sharer K/V) and (receiver context rows -> receiver K/V), the step's own functions, jitted
    with the weights as arguments (closed over, XLA would fold them into the program as constants)."""
    import functools

    import jax

    from lcf_jax.train import objective, run_setup

    @jax.jit
    def receiver(params, ids, mask):
        params = jax.tree.map(lambda x: x.astype(setup.dtype), params)
        cache = objective.receiver_context_cache(params, ids, mask, 0, setup)
        return cache.keys, cache.values

    r_params = jax.tree.map(jax.numpy.asarray, frozen[1])
    return run_setup.sharer_cache_fn(setup, frozen[0]), functools.partial(receiver, r_params)


def compute_chunk(features: SharedContextFeatures, toks: Sequence[TokenizedShared], compute, batch_size: int,
                  dtype: str = "float32") -> tuple[np.ndarray, np.ndarray]:
    """[tokens, layers, 2, heads, dim] for the sharer and the receiver, examples in order, valid tokens only, in the
    store's encoding (each batch is converted as soon as it is computed: a chunk never sits in memory as float32)."""
    sharer_fn, receiver_fn = compute
    order = sorted(range(len(toks)), key=lambda i: (features.bucket_key(toks[i])[:2], i))
    lengths = {"sharer": [len(t.sharer) for t in toks], "receiver": [len(t.receiver_ctx) - 1 for t in toks]}
    out, starts = {}, {}
    for side, n in lengths.items():
        starts[side] = np.concatenate([[0], np.cumsum(n)]).astype(np.int64)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        keys = [features.bucket_key(toks[i]) for i in idx]
        shape = (max(k[0] for k in keys), max(k[1] for k in keys), max(k[2] for k in keys))
        batch = features.collate([toks[i] for i in idx], key=shape)
        computed = {"sharer": sharer_fn(batch.sharer),
                    "receiver": receiver_fn(batch.receiver_ctx_ids, batch.receiver_ctx_mask)}
        for side, (k, v) in computed.items():
            kv = _encode(np.stack([np.asarray(k), np.asarray(v)], 1), dtype)      # [L, 2, B, H, T, D]
            if side not in out:
                total, (layers, _, _, heads, _, dim) = int(starts[side][-1]), kv.shape
                out[side] = np.empty((total, layers, 2, heads, dim), kv.dtype)
            width = kv.shape[4]
            for b, i in enumerate(idx):
                n = lengths[side][i]
                out[side][starts[side][i]:starts[side][i] + n] = kv[:, :, b, :, width - n:].transpose(3, 0, 1, 2, 4)
    return out["sharer"], out["receiver"]


class StoredContextBatches(SharedContextBatches):
    """`SharedContextBatches` (the same batches in the same order, resumable the same way) with both models'
    context caches read from a store instead of computed by the step."""

    def __init__(self, inner: SharedContextBatches, store: ContextStore):
        if store.manifest["examples"] != len(inner.tokenized):
            raise ContextStoreError(f"context store {store.path} holds {store.manifest['examples']} examples, the feed "
                             f"{len(inner.tokenized)}")
        self.features, self.tokenized, self.index, self.store = inner.features, inner.tokenized, inner.index, store

    def collate_rows(self, rows) -> SharedContextBatch:
        batch = super().collate_rows(rows)
        ls, lc = batch.sharer.ids.shape[1], batch.receiver_ctx_ids.shape[1]
        return batch._replace(sharer_kv=SharerKV(*self.store.left_padded(rows, "sharer", ls)),
                              receiver_kv=ReceiverKV(*self.store.left_padded(rows, "receiver", lc)))


def attach(feed: SharedContextBatches, setup, frozen: tuple, *, root: str = "", dtype: str = "bfloat16",
           log: Callable[[str], None] = print) -> StoredContextBatches:
    """`feed` reading both context caches from the store of its examples (built first if missing)."""
    if not isinstance(feed, SharedContextBatches):
        raise ContextStoreError("train.sharer_cache='stored' reads stored shared-context caches: it needs a shared-context "
                         "adapter (lcf, c2c) trained on data.task='instruct'")
    store = build(Path(root) if root else default_root(), feed.features, feed.tokenized, setup, frozen, dtype=dtype,
                  log=log)
    return StoredContextBatches(feed, store)


def main(argv: Optional[Sequence[str]] = None) -> None:
    """python -m lcf_jax.train.context_store --config=configs/X.py [--config.key=value ...]: builds (or resumes)
    the store a run with train.sharer_cache='stored' reads, and prints its path."""
    import sys

    from lcf_jax.cli_errors import run_main

    run_main(_main, list(sys.argv[1:] if argv is None else argv))


def _main(argv: list[str]) -> None:
    from lcf_jax.models import registry
    from lcf_jax.train import feed as feed_lib, run_setup
    from lcf_jax.train.__main__ import parse_config, preflight

    cfg = parse_config(argv)
    preflight(cfg)
    run = run_setup.build(cfg)
    tokenizers = (registry.load_tokenizer(cfg.model.sharer), registry.load_tokenizer(cfg.model.receiver))
    feed, _ = feed_lib.make_feed(cfg, run.setup.kind, run.setup.sharer, run.setup.receiver, tokenizers)
    stored = attach(feed, run.setup, run.frozen, root=cfg.data.context_store, dtype=cfg.data.context_store_dtype)
    print(stored.store.path)


if __name__ == "__main__":
    main()
