"""Helpers shared by the adapter modules: boxed-param declaration, init/axes extraction, RoPE tables
per layer, shape checks."""
from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lcf_jax.models.cache import KVCache
from lcf_jax.models.config import ModelConfig
from lcf_jax.models.layers import rope_cos_sin


def declare(module: nn.Module, name: str, init: Callable, shape: Sequence[int],
            axes: tuple[str | None, ...], dtype=jnp.float32) -> jax.Array:
    """A parameter created through `nn.with_logical_partitioning` (logical axis names attached)."""
    if len(axes) != len(shape):
        raise ValueError(f"param {name}: {len(axes)} axis names {axes} for shape {tuple(shape)}")
    return module.param(name, nn.with_logical_partitioning(init, axes), tuple(int(s) for s in shape), dtype)


def init_module(module: nn.Module, key: jax.Array) -> dict:
    """Plain (unboxed) param dict of a module whose `__call__()` takes no input."""
    return nn.meta.unbox(jax.jit(module.init)(key).get("params", {}))


def module_axes(module: nn.Module) -> dict:
    """Same tree as `init_module`, each leaf a tuple of logical axis names (no weights created)."""
    boxed = jax.eval_shape(lambda k: module.init(k).get("params", {}), jax.random.key(0))
    specs = nn.get_partition_spec(boxed)
    return jax.tree.map(lambda s: tuple(s), specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))


def check_params(params: Any, expected: Any, what: str) -> None:
    """`params` has exactly the leaves and shapes of `expected` (the adapter's `jax.eval_shape`d init); else a
    ValueError naming the leaves that differ."""
    def flat(tree):
        return {jax.tree_util.keystr(p): tuple(x.shape) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}
    got, want = flat(params), flat(expected)
    missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    if missing or extra:
        raise ValueError(f"{what} params lack {missing} and have unexpected {extra}; the config implies {sorted(want)}")
    for k, shape in want.items():
        if got[k] != shape:
            raise ValueError(f"{what} params{k} has shape {got[k]}, the config implies {shape}")


def torch_linear_init(fan_in: int) -> Callable:
    """PyTorch nn.Linear default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases."""
    bound = 1.0 / np.sqrt(max(fan_in, 1))

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)
    return init


def constant(value: float) -> Callable:
    def init(key, shape, dtype=jnp.float32):
        return jnp.full(shape, value, dtype)
    return init


def layer_rope_tables(positions: jax.Array, cfg: ModelConfig, layers: Sequence[int]) -> tuple[jax.Array, jax.Array]:
    """cos/sin [n, *positions.shape, head_dim] for each of `layers` (their own theta and scale)."""
    theta = jnp.asarray([cfg.layer_rope_theta(i) for i in layers], jnp.float32)
    scale = jnp.asarray([cfg.layer_rope_scale(i) for i in layers], jnp.float32)
    return jax.vmap(lambda t, s: rope_cos_sin(positions, cfg.head_dim, t, s))(theta, scale)


def check_kv_cache(cache: KVCache, cfg: ModelConfig, role: str) -> None:
    if not isinstance(cache, KVCache):
        raise TypeError(f"{role} cache must be a KVCache, got {type(cache).__name__}")
    k = cache.keys.shape
    want = (cfg.num_layers, cfg.num_kv_heads, cfg.head_dim)
    if len(k) != 5 or (k[0], k[2], k[4]) != want:
        raise ValueError(f"{role} cache keys {tuple(k)} do not match the {role} model's "
                         f"(layers, kv_heads, head_dim)={want}; expected [layers, batch, kv_heads, capacity, head_dim]")
    if cache.values.shape != k:
        raise ValueError(f"{role} cache values {tuple(cache.values.shape)} != keys {tuple(k)}")
    if cache.mask.shape != (k[1], k[3]) or cache.positions.shape != (k[1], k[3]):
        raise ValueError(f"{role} cache mask {tuple(cache.mask.shape)} / positions {tuple(cache.positions.shape)} "
                         f"must be [batch, capacity]={(k[1], k[3])}")


def check_alignment(alignment: jax.Array, sharer: KVCache, receiver: KVCache) -> None:
    b, s = receiver.mask.shape
    if tuple(alignment.shape) != (b, s):
        raise ValueError(f"alignment has shape {tuple(alignment.shape)}, expected [batch, receiver capacity]="
                         f"{(b, s)} (sharer cache slot per receiver slot, -1 for none; see align.alignment_to_slots)")
    if sharer.mask.shape[0] != b:
        raise ValueError(f"sharer batch {sharer.mask.shape[0]} != receiver batch {b}")
    if not jnp.issubdtype(alignment.dtype, jnp.integer):
        raise ValueError(f"alignment must be integer, got {alignment.dtype}")


def gather_aligned(x: jax.Array, alignment: jax.Array, slot_axis: int, batch_axis: int) -> jax.Array:
    """Gathers the sharer slot `alignment[b, j]` for each receiver slot j (index clipped to >= 0;
    callers mask out alignment < 0). x has a batch axis and a slot axis; result replaces the slot
    axis by the receiver's."""
    idx = jnp.maximum(alignment, 0)
    # Move batch to front and slot to position 1, gather, move back.
    xm = jnp.moveaxis(x, (batch_axis, slot_axis), (0, 1))
    out = jax.vmap(lambda xb, ib: jnp.take(xb, ib, axis=0))(xm, idx)
    return jnp.moveaxis(out, (0, 1), (batch_axis, slot_axis))


def fuse_valid(sharer: KVCache, receiver: KVCache, alignment: jax.Array) -> jax.Array:
    """[B, Sr] bool: receiver slots that hold a real token and read a real sharer token."""
    s_valid = gather_aligned(sharer.mask, alignment, 1, 0)
    return receiver.mask & (alignment >= 0) & s_valid


def param_count(tree: Any) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


def send_cache(params: Any, sharer_cache: KVCache, receiver_cache: Any = None, *, cfg: Any, sharer_cfg: ModelConfig,
               receiver_cfg: ModelConfig) -> KVCache:
    """The sharer half of a shared-context kind: the message is the sharer's own cache of the context."""
    check_kv_cache(sharer_cache, sharer_cfg, "sharer")
    return sharer_cache
