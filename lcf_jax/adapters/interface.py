"""The one interface every adapter kind implements, in two halves that can run in different processes.

    sharer half    send(params, sharer_cache, receiver_cache=None, *, cfg, sharer_cfg, receiver_cfg) -> message
    receiver half  receive(params, message, receiver_state, *, cfg, sharer_cfg, receiver_cfg, ...) -> KVCache

Every receiver half returns a receiver cache (`models.cache.KVCache`) that the receiver's own forward
continues; what the message is and what `receiver_state` holds depends on the kind's role:

  shared context (`shared_context=True`: lcf, c2c): both models read the same context. The message is the
    sharer's cache of it (LCF's per-token latents are formed inside its fused compress-translate kernel, so
    they never leave the receiver half); receiver_state = (the receiver's own cache of the context, the
    alignment [B, Sr] of sharer slots per receiver slot). The result is the fused cache.
  different contexts (`shared_context=False`: lcfx): the receiver has not read the passage. The message is
    what the sharer sends (m x r latents for LCF-X; `receiver_cache` is the receiver's prompt cache when the
    kind conditions on it); receiver_state = (the receiver's params, its special-prefix ids [B, P]) and
    `capacity`; the result is a cache holding [prefix | message slots], the prompt continuing after them.
    The message is an array of n slots [B, n, ...]. (LCF-X's first, position-free convention, injection="extra",
    returns `ExtraKV` instead: keys every query sees, kept to be compared against.)

Keyword options every receiver half accepts: train (dropout and soft gates while training), rng, step
(C2C anneals its gate temperature by step); different contexts also take capacity.

A kind is registered once (`adapters.ADAPTER_KINDS`, or `register` for one defined elsewhere, e.g. a test);
objective, feed and export read the registry and the role, never a kind string.
"""
from __future__ import annotations

import dataclasses
from types import ModuleType
from typing import Any, Callable


def _unchanged(params: Any, receiver_params: Any, *, cfg: Any, receiver_cfg: Any) -> Any:
    return params


@dataclasses.dataclass(frozen=True)
class AdapterKind:
    spec: ModuleType             # the kind's JAX-free spec (`adapters/specs/`): KIND, CONFIG, SHARED_CONTEXT,
                                 # param_layout, tensor_table, TORCH_HALF
    init: Callable[..., Any]     # (key, cfg, sharer_cfg, receiver_cfg) -> params
    param_axes: Callable[..., Any]   # (cfg, sharer_cfg, receiver_cfg) -> tree of logical axis-name tuples
    send: Callable[..., Any]     # the sharer half (above)
    receive: Callable[..., Any]  # the receiver half (above) -> KVCache
    # A fresh adapter's params once both models are known (LCF-X scales its embed decoder to the receiver's
    # input vectors); runs at the start of training, after init.
    prepare: Callable[..., Any] = _unchanged
    # Different contexts: whether `send` reads the receiver's prompt cache (LCF-X's conditioned variants).
    reads_receiver_prompt: Callable[[Any], bool] = lambda cfg: False

    @property
    def kind(self) -> str:
        return self.spec.KIND

    @property
    def config(self) -> type:
        return self.spec.CONFIG

    @property
    def shared_context(self) -> bool:
        """The role: fuse into the receiver's own cache of a shared context, or send a message."""
        return self.spec.SHARED_CONTEXT


def register(adapter: AdapterKind) -> None:
    """Adds a kind defined outside this package (its spec and its two halves) to every registry."""
    from lcf_jax.adapters import ADAPTER_KINDS
    from lcf_jax.adapters import specs
    if adapter.kind in ADAPTER_KINDS:
        raise ValueError(f"adapter kind {adapter.kind!r} is already registered")
    ADAPTER_KINDS[adapter.kind] = adapter
    specs.SPECS[adapter.kind] = adapter.spec
    specs.CONFIGS[adapter.kind] = adapter.config


def unregister(kind: str) -> None:
    """Removes a kind added by `register` (tests)."""
    from lcf_jax.adapters import ADAPTER_KINDS
    from lcf_jax.adapters import specs
    for table in (ADAPTER_KINDS, specs.SPECS, specs.CONFIGS):
        table.pop(kind, None)
