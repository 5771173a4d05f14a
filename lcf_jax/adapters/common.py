"""Helpers shared by the adapter modules: the Flax init, logical axes and shape check derived from a spec's
`param_layout`, RoPE tables per layer, cache checks."""
from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lcf_jax.adapters.specs.base import Init, Param
from lcf_jax.models.cache import KVCache
from lcf_jax.models.config import ModelConfig
from lcf_jax.models.layers import rope_cos_sin


def declare(module: nn.Module, name: str, init: Callable, shape: Sequence[int],
            axes: tuple[str | None, ...], dtype=jnp.float32) -> jax.Array:
    """A parameter created through `nn.with_logical_partitioning` (logical axis names attached)."""
    if len(axes) != len(shape):
        raise ValueError(f"param {name}: {len(axes)} axis names {axes} for shape {tuple(shape)}")
    return module.param(name, nn.with_logical_partitioning(init, axes), tuple(int(s) for s in shape), dtype)


def flax_initializer(init: Init) -> Callable:
    """The JAX initialiser a spec's `Init` names."""
    if init.name == "zeros":
        return nn.initializers.zeros
    if init.name == "ones":
        return nn.initializers.ones
    if init.name == "constant":
        return constant(*init.args)
    if init.name == "normal":
        return nn.initializers.normal(*init.args)
    if init.name == "lecun_normal":
        in_axis, out_axis, batch_axis = init.args
        return nn.initializers.lecun_normal(in_axis=in_axis, out_axis=out_axis, batch_axis=batch_axis)
    if init.name == "torch_linear":
        return torch_linear_init(*init.args)
    raise ValueError(f"unknown initialiser {init.name!r}")


class LayoutModule(nn.Module):
    """Declares a spec's parameters: leaves of this level in layout order, deeper paths as named submodules
    (Flax draws a parameter's key from its module path and its rank among that module's own parameters)."""
    layout: tuple[Param, ...]

    @nn.compact
    def __call__(self):
        out, children = {}, {}
        for p in self.layout:
            if len(p.path) == 1:
                out[p.path[0]] = declare(self, p.path[0], flax_initializer(p.init), p.shape, p.axes)
            else:
                children.setdefault(p.path[0], []).append(p._replace(path=p.path[1:]))
        for name, sub in children.items():
            out[name] = LayoutModule(tuple(sub), name=name)()
        return out


def init_from_layout(layout: Sequence[Param], key: jax.Array) -> dict:
    """Plain (unboxed) params of a spec's layout."""
    module = LayoutModule(tuple(layout))
    return nn.meta.unbox(jax.jit(module.init)(key).get("params", {}))


def _nest(layout: Sequence[Param], leaf: Callable[[Param], Any]) -> dict:
    tree: dict = {}
    for p in layout:
        node = tree
        for k in p.path[:-1]:
            node = node.setdefault(k, {})
        node[p.path[-1]] = leaf(p)
    return tree


def axes_from_layout(layout: Sequence[Param]) -> dict:
    """The params tree, each leaf its tuple of logical axis names."""
    return _nest(layout, lambda p: p.axes)


def check_params(params: Any, layout: Sequence[Param], what: str) -> None:
    """`params` has exactly the leaves and shapes of the spec's `layout`; else a ValueError naming the leaves
    that differ."""
    got = {tuple(getattr(k, "key", k) for k in path): tuple(x.shape)
           for path, x in jax.tree_util.tree_flatten_with_path(params)[0]}
    want = {p.path: p.shape for p in layout}
    missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    show = lambda paths: ["/".join(map(str, p)) for p in paths]  # noqa: E731
    if missing or extra:
        raise ValueError(f"{what} params lack {show(missing)} and have unexpected {show(extra)}; the config implies "
                         f"{show(sorted(want))}")
    for k, shape in want.items():
        if got[k] != shape:
            raise ValueError(f"{what} params {'/'.join(k)} has shape {got[k]}, the config implies {shape}")


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
