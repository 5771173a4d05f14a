"""Post-training pruning of an LCF adapter: drop weak layers, cut per-layer rank.

`prune_lcf(params, cfg, sharer_cfg, receiver_cfg, gate_threshold=..., energy=... | target_rank=...)`
returns (new_params, new_cfg, report). The result is a normal LCF: `new_cfg.layers` lists the kept
receiver layers and `new_cfg.ranks` their ranks, so `apply_lcf` and `size.py` accept it and the
stored parameters really shrink (layers of equal rank stay stacked; see `lcf.lcf_groups`).

Layers: a layer whose gate value sigmoid(gate_logit) (times its `enabled` bit: a disabled layer has
gate 0) is below `gate_threshold` is removed; its receiver K/V are then left untouched, exactly as
with enabled = 0 (up to the removed layer's own contribution, which was gate-small).

Rank: per layer, the singular values of the linearised bottleneck M = W_down diag(norm) W_up
(what the layer does with the norm and activation ignored) pick the rank k: the smallest k keeping
an `energy` fraction of sum(sigma^2), or `target_rank` (never above the current rank).
Two ways to cut to k (`method`):
  * "svd" (default): refactor M = U S V^T into W_down' = U_k S_k^1/2, W_up' = S_k^1/2 V_k^T,
    b_down' = b_down diag(norm) W_up V_k S_k^-1/2, norm' = 1, so the product W_down' W_up' is M up
    to the dropped singular values. Caveat: the bottleneck is not linear (RMSNorm, then an
    elementwise activation); a change of latent basis changes what the nonlinearity sees, so the
    layer's output is preserved only approximately even for the kept directions - fine-tune after.
  * "units": keep the k latent units with the largest contribution |norm_i| * ||W_down[:, i]|| *
    ||W_up[i, :]|| and rescale norm by sqrt(r/k) (RMSNorm then averages over k units instead of r).
    The basis is unchanged, so the kept units compute exactly what they did, up to the norm
    statistic over the dropped units.
Layers whose rank does not change keep their weights bit-for-bit, so pruning that cuts nothing
returns an adapter with identical outputs.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from lcf_jax.adapters.specs.lcf import LCFConfig, adapter_layers, lcf_enabled, lcf_groups
from lcf_jax.adapters.size import adapter_param_count, adapter_size_mb
from lcf_jax.models.config import ModelConfig


def _per_layer(params: dict, cfg: LCFConfig, sharer_cfg: ModelConfig, receiver_cfg: ModelConfig) -> list[dict]:
    """Unstacks the grouped params into one numpy dict per adapter layer (adapter-layer order)."""
    layers, _, _ = adapter_layers(cfg, sharer_cfg, receiver_cfg)
    out: list[Optional[dict]] = [None] * len(layers)
    for g in lcf_groups(cfg, sharer_cfg, receiver_cfg):
        p = {k: np.asarray(v) for k, v in params[g.name].items()}
        for j, i in enumerate(g.index):
            out[i] = {k: v[j] for k, v in p.items()}
    return out


def _cut_svd(p: dict, k: int) -> dict:
    w_down, w_up = p["w_down"].astype(np.float64), p["w_up"].astype(np.float64)
    norm, b_down = p["norm"].astype(np.float64), p["b_down"].astype(np.float64)
    a = w_down * norm[None, :]                      # W_down diag(norm)
    # SVD of M = a @ w_up without forming M: QR of both factors, SVD of the small core.
    qa, ra = np.linalg.qr(a)
    qb, rb = np.linalg.qr(w_up.T)
    u, s, vt = np.linalg.svd(ra @ rb.T)
    u, vt = qa @ u, vt @ qb.T
    sk = np.sqrt(s[:k])
    new_down = u[:, :k] * sk[None, :]
    new_up = sk[:, None] * vt[:k]
    inv = np.where(sk > 1e-12, 1.0 / np.maximum(sk, 1e-12), 0.0)
    new_b = (b_down * norm) @ w_up @ vt[:k].T * inv
    dt = p["w_down"].dtype
    q = dict(p)
    q.update(w_down=new_down.astype(dt), w_up=new_up.astype(dt), b_down=new_b.astype(dt),
             norm=np.ones(k, dt))
    return q


def _cut_units(p: dict, k: int) -> dict:
    r = p["w_down"].shape[1]
    score = (np.abs(p["norm"]) * np.linalg.norm(p["w_down"], axis=0) * np.linalg.norm(p["w_up"], axis=1))
    keep = np.sort(np.argsort(-score, kind="stable")[:k])
    q = dict(p)
    q.update(w_down=p["w_down"][:, keep], w_up=p["w_up"][keep], b_down=p["b_down"][keep],
             norm=(p["norm"][keep] * np.sqrt(r / k)).astype(p["norm"].dtype))
    return q


def singular_values(p: dict) -> np.ndarray:
    """Singular values of W_down diag(norm) W_up for one layer's params."""
    a = p["w_down"].astype(np.float64) * p["norm"].astype(np.float64)[None, :]
    _, ra = np.linalg.qr(a)
    _, rb = np.linalg.qr(p["w_up"].astype(np.float64).T)
    return np.linalg.svd(ra @ rb.T, compute_uv=False)


def choose_rank(sv: np.ndarray, current: int, energy: Optional[float], target_rank: Optional[int]) -> int:
    if target_rank is not None:
        return max(1, min(int(target_rank), current))
    if energy is None or energy >= 1.0:
        return current
    e = np.cumsum(sv ** 2)
    if e[-1] <= 0:
        return 1
    return max(1, min(current, int(np.searchsorted(e / e[-1], energy - 1e-12) + 1)))


def prune_lcf(params: dict, cfg: LCFConfig, sharer_cfg: ModelConfig, receiver_cfg: ModelConfig, *,
              gate_threshold: Optional[float] = None, energy: Optional[float] = None,
              target_rank: Optional[int] = None, method: str = "svd", dtype: str = "bfloat16"):
    """Returns (params, cfg, report). report: kept/dropped layers, ranks before/after, params and MB
    (in `dtype`) before/after."""
    if not cfg.joint_kv:
        raise ValueError("pruning needs the joint K/V bottleneck; this LCF adapter has separate K and V "
                         "bottlenecks (joint_kv=False, an ablation)")
    if method not in ("svd", "units"):
        raise ValueError(f"method must be 'svd' or 'units', got {method!r}")
    if energy is not None and not 0.0 < energy <= 1.0:
        raise ValueError(f"energy must be in (0, 1], got {energy}")
    layers, _, ranks = adapter_layers(cfg, sharer_cfg, receiver_cfg)
    per = _per_layer(params, cfg, sharer_cfg, receiver_cfg)
    en = lcf_enabled(cfg, sharer_cfg, receiver_cfg)
    gates = [float(jax.nn.sigmoid(p["gate_logit"])) * float(e) for p, e in zip(per, en)]

    kept_layers, kept_ranks, kept_params, dropped = [], [], [], []
    for l, r, p, g in zip(layers, ranks, per, gates):
        if gate_threshold is not None and g < gate_threshold:
            dropped.append(l)
            continue
        k = choose_rank(singular_values(p), r, energy, target_rank) if (energy is not None or target_rank is not None) else r
        if k < r:
            p = _cut_svd(p, k) if method == "svd" else _cut_units(p, k)
        kept_layers.append(l)
        kept_ranks.append(k)
        kept_params.append(p)

    new_cfg = dataclasses.replace(cfg, layers=tuple(kept_layers), ranks=tuple(kept_ranks),
                                  disabled=tuple(l for l in cfg.disabled if l in kept_layers))
    new_params = {}
    for g in lcf_groups(new_cfg, sharer_cfg, receiver_cfg):
        new_params[g.name] = {k: jnp.asarray(np.stack([kept_params[i][k] for i in g.index]))
                              for k in kept_params[g.index[0]]} if g.index else {}
    report = {
        "layers_before": layers, "ranks_before": ranks, "gates": tuple(gates),
        "layers_after": tuple(kept_layers), "ranks_after": tuple(kept_ranks), "dropped_layers": tuple(dropped),
        "params_before": adapter_param_count(cfg, sharer_cfg, receiver_cfg),
        "params_after": adapter_param_count(new_cfg, sharer_cfg, receiver_cfg),
        "mb_before": adapter_size_mb(cfg, sharer_cfg, receiver_cfg, dtype),
        "mb_after": adapter_size_mb(new_cfg, sharer_cfg, receiver_cfg, dtype), "dtype": dtype,
    }
    return new_params, new_cfg, report


def format_report(report: dict) -> str:
    return (f"LCF pruning: layers {len(report['layers_before'])} -> {len(report['layers_after'])} "
            f"(dropped {list(report['dropped_layers'])}); ranks {sorted(set(report['ranks_before']))} -> "
            f"{list(report['ranks_after'])}; params {report['params_before']:,} -> {report['params_after']:,}; "
            f"{report['mb_before']:.2f} MB -> {report['mb_after']:.2f} MB ({report['dtype']})")
