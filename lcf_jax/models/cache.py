"""The KV cache as a plain pytree: returned by every forward, never mutated.

Keys are stored *after* RoPE, exactly as attention uses them, so an adapter reading a cache sees what
the model sees. Layers are stacked on the leading axis (one array per field), which lets the forward
scan over layers and lets adapters index layers with plain array ops.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from lcf_jax.models.config import ModelConfig


class KVCache(NamedTuple):
    """keys, values: [layers, batch, kv_heads, capacity, head_dim] (keys rotated by RoPE);
    positions: [batch, capacity] int32 (the RoPE position of each slot);
    mask: [batch, capacity] bool (slot holds a real token);
    index: [] int32, the number of slots written (the next write starts here; shared by the batch).
    """

    keys: jax.Array
    values: jax.Array
    positions: jax.Array
    mask: jax.Array
    index: jax.Array

    @classmethod
    def empty(cls, config: ModelConfig, batch: int, capacity: int, dtype=jnp.float32) -> "KVCache":
        shape = (config.num_layers, batch, config.num_kv_heads, capacity, config.head_dim)
        return cls(keys=jnp.zeros(shape, dtype), values=jnp.zeros(shape, dtype),
                   positions=jnp.zeros((batch, capacity), jnp.int32),
                   mask=jnp.zeros((batch, capacity), bool), index=jnp.zeros((), jnp.int32))

    @property
    def capacity(self) -> int:
        return self.keys.shape[3]

    @property
    def num_layers(self) -> int:
        return self.keys.shape[0]

    def replace_kv(self, keys: jax.Array, values: jax.Array) -> "KVCache":
        """Per-token K/V replacements for the tokens the cache holds (C2C and LCF fuse this way);
        positions and mask are unchanged, gradients flow into `keys`/`values`."""
        if keys.shape != self.keys.shape or values.shape != self.values.shape:
            raise ValueError(f"replacement K/V shapes {keys.shape}/{values.shape} do not match the "
                             f"cache's {self.keys.shape}")
        return self._replace(keys=keys.astype(self.keys.dtype), values=values.astype(self.values.dtype))

    def first_rows(self, n: int) -> "KVCache":
        """The cache of the first n batch rows."""
        return self._replace(keys=self.keys[:, :n], values=self.values[:, :n], positions=self.positions[:n],
                             mask=self.mask[:n])

    def repeat_rows(self, n: int) -> "KVCache":
        """Each row's cache given to n consecutive rows (rows that share a context share its cache)."""
        return self._replace(keys=jnp.repeat(self.keys, n, axis=1), values=jnp.repeat(self.values, n, axis=1),
                             positions=jnp.repeat(self.positions, n, axis=0), mask=jnp.repeat(self.mask, n, axis=0))

    def add_kv_delta(self, dk: jax.Array, dv: jax.Array) -> "KVCache":
        """Per-token additive deltas; shapes as `replace_kv`."""
        return self.replace_kv(self.keys + dk, self.values + dv)


class ExtraKV(NamedTuple):
    """Foreign KV entries a receiver attends to in addition to its own tokens (LCF-X summary slots).

    keys, values: [layers, batch, kv_heads, slots, head_dim]; mask: [batch, slots] bool.

    Position convention: extra entries carry no position. The receiver applies no RoPE to them and
    every query may attend to every valid slot, ignoring causality and sliding windows; the producer
    is responsible for whatever rotation the keys carry (LCF-X emits position-free keys).
    """

    keys: jax.Array
    values: jax.Array
    mask: jax.Array


def check_cache(cache: KVCache, config: ModelConfig) -> None:
    want = (config.num_layers, config.num_kv_heads, config.head_dim)
    got = (cache.keys.shape[0], cache.keys.shape[2], cache.keys.shape[4])
    if got != want:
        raise ValueError(f"cache (layers, kv_heads, head_dim)={got} does not match the model's {want}")


def check_extra(extra: ExtraKV, config: ModelConfig, batch: int) -> None:
    want = (config.num_layers, batch, config.num_kv_heads, config.head_dim)
    k = extra.keys.shape
    if (k[0], k[1], k[2], k[4]) != want or extra.values.shape != k or extra.mask.shape != (k[1], k[3]):
        raise ValueError(f"extra KV keys {k}, values {extra.values.shape}, mask {extra.mask.shape} do not "
                         f"match (layers, batch, kv_heads, head_dim)={want}")
