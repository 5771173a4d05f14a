"""Which sharer layer feeds each receiver layer.

`layer_map(n_sharer, n_receiver, kind)` returns a tuple with one entry per receiver layer: the index
of the sharer layer whose K/V it reads, or -1 for "no source" (the receiver layer is left unchanged).

Kinds
-----
"last_aligned" (C2C's default, `last_aligned_sources(..., k=1)` in thu-nics/C2C): the last receiver
    layer reads the last sharer layer and the two stacks are walked towards the front together,
    i.e. receiver layer t reads sharer layer (n_sharer - n_receiver) + t, clamped to [0, n_sharer-1].
    * sharer deeper than receiver: the first n_sharer - n_receiver sharer layers are never read;
    * receiver deeper than sharer: the first n_receiver - n_sharer + 1 receiver layers all read
      sharer layer 0 (C2C clamps; every receiver layer gets a source and a projector, which is what
      makes C2C's Qwen2.5-0.5B -> Qwen3-0.6B fuser 28 projectors = 956 MB in bf16).
"last_aligned_strict": as "last_aligned" but without the clamp: receiver layers in front of the
    aligned block get -1 (no source) instead of all reading sharer layer 0.
"proportional": depth-proportional; receiver layer t reads the sharer layer nearest to it when both
    stacks are placed uniformly on [0, 1] (C2C's `k_nearest_sources` with k=1; ties go to the lower
    sharer index). First maps to first, last to last.
"""
from __future__ import annotations

LAYER_MAP_KINDS = ("last_aligned", "last_aligned_strict", "proportional")


def layer_map(n_sharer: int, n_receiver: int, kind: str = "last_aligned") -> tuple[int, ...]:
    if n_sharer <= 0 or n_receiver <= 0:
        raise ValueError(f"layer counts must be positive, got n_sharer={n_sharer}, n_receiver={n_receiver}")
    if kind in ("last_aligned", "last_aligned_strict"):
        offset = n_sharer - n_receiver
        out = []
        for t in range(n_receiver):
            s = offset + t
            if s < 0:
                s = 0 if kind == "last_aligned" else -1
            out.append(min(s, n_sharer - 1))
        return tuple(out)
    if kind == "proportional":
        def pos(i, n):
            return 0.0 if n <= 1 else i / (n - 1)
        out = []
        for t in range(n_receiver):
            tp = pos(t, n_receiver)
            # min() keeps the first (lowest) index among equal distances, as C2C's stable sort does.
            out.append(min(range(n_sharer), key=lambda j: abs(pos(j, n_sharer) - tp)))
        return tuple(out)
    raise ValueError(f"unknown layer map kind {kind!r}; known: {LAYER_MAP_KINDS}")


def layers_with_source(mapping: tuple[int, ...]) -> tuple[int, ...]:
    """Receiver layers that have a sharer source (entry >= 0)."""
    return tuple(i for i, s in enumerate(mapping) if s >= 0)


def select_layers(selection, n: int, what: str) -> tuple[int, ...]:
    """An explicit layer selection (None: all n layers), checked: non-empty, increasing, unique, in range."""
    layers = tuple(range(n)) if selection is None else tuple(int(l) for l in selection)
    if not layers:
        raise ValueError(f"{what} is empty")
    if any(not 0 <= l < n for l in layers) or list(layers) != sorted(set(layers)):
        raise ValueError(f"{what}={layers} must be increasing unique indices in [0, {n})")
    return layers


def adapter_layer_plan(kind: str, n_sharer: int, n_receiver: int, layers=None, ranks=None, rank: int = 0):
    """(receiver layers carrying an adapter, their sharer sources, their ranks) for a per-layer adapter.

    layers=None: every receiver layer with a source under `kind`; ranks=None: `rank` everywhere.
    """
    mapping = layer_map(n_sharer, n_receiver, kind)
    layers = tuple(i for i, s in enumerate(mapping) if s >= 0) if layers is None else tuple(int(l) for l in layers)
    for l in layers:
        if not 0 <= l < n_receiver:
            raise ValueError(f"layers holds {l}, outside the receiver's {n_receiver} layers")
        if mapping[l] < 0:
            raise ValueError(f"receiver layer {l} has no sharer source under layer_map={kind!r}")
    if len(set(layers)) != len(layers) or list(layers) != sorted(layers):
        raise ValueError(f"layers must be increasing and unique, got {layers}")
    ranks = (int(rank),) * len(layers) if ranks is None else tuple(int(r) for r in ranks)
    if len(ranks) != len(layers):
        raise ValueError(f"ranks {ranks} and layers {layers} differ in length")
    return layers, tuple(mapping[l] for l in layers), ranks
