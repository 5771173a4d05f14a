"""Shared helpers of the export tests: tiny model configs, random caches, JAX <-> torch conversions."""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import torch

from lcf_jax.models.cache import KVCache
from lcf_jax.models.config import ModelConfig
from lcf_jax.models.registry import TINY_CONFIGS


def tiny(family: str, **kw) -> ModelConfig:
    return dataclasses.replace(TINY_CONFIGS[f"tiny-{family}"], **kw)


def random_like(tree, seed: int, scale: float = 0.3):
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda x: jnp.asarray(scale * rng.standard_normal(x.shape), jnp.float32), tree)


def perturbed(params, seed: int, scale: float = 0.3):
    """Trained-looking params: init + noise, so every weight (gates, norms, biases) matters."""
    return jax.tree.map(lambda a, b: a + b, params, random_like(params, seed, scale))


def random_cache(cfg: ModelConfig, lengths, width: int, seed: int, offset: int = 0) -> KVCache:
    """Random K/V with left-padded real tokens; positions from the mask (+ offset)."""
    rng = np.random.default_rng(seed)
    mask = np.arange(width)[None, :] >= (width - np.asarray(lengths))[:, None]
    shape = (cfg.num_layers, len(lengths), cfg.num_kv_heads, width, cfg.head_dim)
    pos = np.maximum(np.cumsum(mask, axis=-1) - 1, 0) + offset
    return KVCache(keys=jnp.asarray(rng.standard_normal(shape), jnp.float32),
                   values=jnp.asarray(rng.standard_normal(shape), jnp.float32),
                   positions=jnp.asarray(pos, jnp.int32), mask=jnp.asarray(mask),
                   index=jnp.asarray(width, jnp.int32))


def random_alignment(sharer_mask, receiver_mask, seed: int, drop: float = 0.2):
    """Monotone random alignment of real receiver slots to real sharer slots; some receiver slots -1."""
    from lcf_jax.adapters.align import alignment_to_slots
    rng = np.random.default_rng(seed)
    als = []
    for b in range(receiver_mask.shape[0]):
        ns, nr = int(np.sum(sharer_mask[b])), int(np.sum(receiver_mask[b]))
        als.append(np.sort(rng.integers(0, ns, size=nr)))
    out = alignment_to_slots(als, np.asarray(sharer_mask), np.asarray(receiver_mask))
    out = np.where(rng.random(out.shape) < drop, -1, out)
    return jnp.asarray(out, jnp.int32)


def to_torch_kv(cache: KVCache):
    from lcf_jax.torch.common import KV
    return KV(torch.from_numpy(np.array(cache.keys)), torch.from_numpy(np.array(cache.values)),
              torch.from_numpy(np.array(cache.positions, np.int64)), torch.from_numpy(np.array(cache.mask)))


def np_(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def left_pad(rows, pad: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Token rows left-padded to the longest: ids int64 [B, T], mask bool [B, T]."""
    n = max(len(r) for r in rows)
    ids = np.full((len(rows), n), pad, np.int64)
    mask = np.zeros((len(rows), n), bool)
    for i, r in enumerate(rows):
        ids[i, n - len(r):] = r
        mask[i, n - len(r):] = True
    return ids, mask
