"""Adapter sizes from configs alone (`jax.eval_shape` of the init: no weights are created).

MB here is 10^6 bytes. The paper's "C2C = 956 MB" for Qwen2.5-0.5B-Instruct -> Qwen3-0.6B is
bfloat16: C2C's default fuser there has 477,848,056 parameters (28 projectors x 17,066,002), i.e.
955.7 MB in bfloat16 and 1911.4 MB in float32 (C2C trains and saves in bfloat16 by default).
"""
from __future__ import annotations

from typing import Any, Iterable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from lcf_jax.models.config import ModelConfig

PAPER_C2C_MB_BF16 = 956.0  # C2C, Qwen2.5-0.5B-Instruct -> Qwen3-0.6B, as reported in the paper


def _kind_init(cfg: Any):
    from lcf_jax.adapters import ADAPTER_KINDS
    kind = getattr(cfg, "kind", None)
    if kind not in ADAPTER_KINDS:
        raise ValueError(f"not an adapter config: {type(cfg).__name__} (kinds: {sorted(ADAPTER_KINDS)})")
    return ADAPTER_KINDS[kind].init


def adapter_param_shapes(cfg: Any, sharer_cfg: ModelConfig, receiver_cfg: ModelConfig) -> Any:
    """Tree of ShapeDtypeStruct of the adapter's params (no allocation)."""
    init = _kind_init(cfg)
    return jax.eval_shape(lambda k: init(k, cfg, sharer_cfg, receiver_cfg), jax.random.key(0))


def adapter_param_count(cfg: Any, sharer_cfg: ModelConfig, receiver_cfg: ModelConfig) -> int:
    shapes = adapter_param_shapes(cfg, sharer_cfg, receiver_cfg)
    return int(sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes)))


def adapter_nbytes(cfg: Any, sharer_cfg: ModelConfig, receiver_cfg: ModelConfig, dtype="bfloat16") -> int:
    return adapter_param_count(cfg, sharer_cfg, receiver_cfg) * jnp.dtype(dtype).itemsize


def adapter_size_mb(cfg: Any, sharer_cfg: ModelConfig, receiver_cfg: ModelConfig, dtype="bfloat16") -> float:
    """Size in MB (10^6 bytes) with every parameter stored in `dtype`."""
    return adapter_nbytes(cfg, sharer_cfg, receiver_cfg, dtype) / 1e6


def size_table(configs: dict[str, Any], sharer_cfg: ModelConfig, receiver_cfg: ModelConfig,
               dtypes: Iterable[str] = ("float32", "bfloat16"), reference: Optional[str] = "c2c") -> str:
    """Text table: params and MB per dtype for each named adapter config (and % of `reference`)."""
    dtypes = tuple(dtypes)
    counts = {name: adapter_param_count(c, sharer_cfg, receiver_cfg) for name, c in configs.items()}
    head = f"{sharer_cfg.name or 'sharer'} -> {receiver_cfg.name or 'receiver'}"
    lines = [head, f"{'adapter':<16}{'params':>14}" + "".join(f"{'MB ' + d:>16}" for d in dtypes)
             + (f"{'% of ' + reference:>12}" if reference in counts else "")]
    for name, n in counts.items():
        row = f"{name:<16}{n:>14,}" + "".join(f"{n * jnp.dtype(d).itemsize / 1e6:>16.2f}" for d in dtypes)
        if reference in counts:
            row += f"{100.0 * n / counts[reference]:>11.2f}%"
        lines.append(row)
    return "\n".join(lines)


def main():  # pragma: no cover - CLI
    from lcf_jax.adapters.specs.c2c import C2CConfig
    from lcf_jax.adapters.specs.lcf import LCFConfig
    from lcf_jax.adapters.specs.lcfx import LCFXConfig
    from lcf_jax.models.registry import PRESET_CONFIGS as P
    cfgs = {"c2c": C2CConfig(), "lcf": LCFConfig(), "lcfx": LCFXConfig(), "lcfx-cond": LCFXConfig(conditioned=True)}
    for s, r in (("qwen2.5-0.5b-instruct", "qwen3-0.6b"), ("smollm2-135m-instruct", "gemma3-270m"),
                 ("gemma3-270m", "smollm2-135m-instruct")):
        print(size_table(cfgs, P[s], P[r]))
        print()


if __name__ == "__main__":  # pragma: no cover
    main()
