"""A training run's checkpoint -> an exported adapter directory (the `python -m lcf_jax.export` path).

  load_checkpoint(path, step=None) -> CheckpointAdapter     a run's adapter params (no optimizer state) + configs
  export_checkpoint(path, out_dir, step=None, dtype=...)    run -> directory, optionally pruned or snapped
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, NamedTuple, Optional

import jax

from lcf_jax.adapters import ADAPTER_KINDS
from lcf_jax.adapters.export_format import adapter_config
from lcf_jax.adapters.export_jax import export_adapter
from lcf_jax.models.config import ModelConfig
from lcf_jax.models.registry import config_by_name
from lcf_jax.train.ckpt import UnreadableCheckpointError, unreadable_step


class CheckpointAdapter(NamedTuple):
    kind: str
    config: Any
    params: dict
    sharer: ModelConfig
    receiver: ModelConfig
    step: int
    run_config: dict
    checkpoint_dir: str


def checkpoints_dir(path: str | os.PathLike) -> Path:
    """A run's workdir (holding checkpoints/) or its checkpoints dir itself."""
    p = Path(path)
    if (p / "checkpoints").is_dir():
        return p / "checkpoints"
    if p.is_dir():
        return p
    raise FileNotFoundError(f"{path} is neither a run workdir (with checkpoints/) nor a checkpoints directory")


class ExportError(ValueError):
    """A checkpoint that cannot be exported as asked (e.g. pruning a kind that has no pruning)."""


class _ItemReadError(Exception):
    def __init__(self, item: str, error: BaseException):
        super().__init__(item)
        self.item, self.error = item, error


def _restore_item(mngr, step: int, item: str, arg):
    import orbax.checkpoint as ocp
    try:
        return mngr.restore(step, args=ocp.args.Composite(**{item: arg}))[item]
    except Exception as e:  # Orbax / TensorStore raise KeyError, ValueError, OSError, ... for a damaged step
        raise _ItemReadError(item, e) from e


def load_checkpoint(path: str | os.PathLike, step: Optional[int] = None) -> CheckpointAdapter:
    """Adapter params (no optimizer state) and configs of one step (default: the latest) of a run."""
    import orbax.checkpoint as ocp

    cdir = checkpoints_dir(path)
    options = ocp.CheckpointManagerOptions(read_only=True, create=False, save_interval_steps=0)
    handlers = {"params": ocp.StandardCheckpointHandler(), "config": ocp.JsonCheckpointHandler()}
    mngr = ocp.CheckpointManager(str(cdir.resolve()), options=options, item_handlers=handlers)
    try:
        steps = sorted(mngr.all_steps())
        if not steps:
            raise FileNotFoundError(f"{cdir} holds no finalized checkpoint")
        if step is None:
            step = steps[-1]
        elif step not in steps:
            raise FileNotFoundError(f"{cdir} has no checkpoint for step {step}; steps: {steps}")
        run_cfg = _restore_item(mngr, step, "config", ocp.args.JsonRestore())
        try:
            acfg_section = run_cfg["adapter"]
            kind = acfg_section["kind"]
            acfg = adapter_config(kind, acfg_section[kind])
            sharer = config_by_name(run_cfg["model"]["sharer"])
            receiver = config_by_name(run_cfg["model"]["receiver"])
        except (KeyError, TypeError, ValueError) as e:
            problem = e.args[0] if isinstance(e, KeyError) and e.args else e
            raise UnreadableCheckpointError(
                f"checkpoint step {step} in {cdir}: its run config cannot be used ({type(e).__name__}: {problem}); "
                "was it written by another version of lcf_jax?", step=step, problem=str(problem), usable=[]) from e
        init = ADAPTER_KINDS[kind].init
        dev = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=dev),
                                jax.eval_shape(lambda k: init(k, acfg, sharer, receiver), jax.random.key(0)))
        params = _restore_item(mngr, step, "params", ocp.args.StandardRestore(abstract))
    except _ItemReadError as f:
        failed = f
    else:
        failed = None
    finally:
        mngr.close()
    if failed is not None:  # a partial or corrupt step: name it, what is missing and the steps that do read
        raise unreadable_step(str(cdir), step, failed.error, item=failed.item, items=("params", "config")) from failed.error
    return CheckpointAdapter(kind, acfg, params, sharer, receiver, int(step), run_cfg, str(cdir))


DATA_KEYS = ("prompt_template", "max_sharer_len", "max_prompt_len", "max_target_len", "eval_set", "eval_split")


def export_checkpoint(path: str | os.PathLike, out_dir: str | os.PathLike, *, step: Optional[int] = None,
                      dtype: str = "float32", prune: Optional[dict] = None, snap: bool = False) -> Path:
    """`prune`: keyword arguments of `prune.prune_lcf` (e.g. {"target_rank": 64}) to prune an LCF
    adapter before writing it; the report goes into the metadata's `source.pruning`. `snap`: an LCF-X
    embed decoder whose receiver snaps each decoded vector to its vocabulary (same weights)."""
    ck = load_checkpoint(path, step)
    params, cfg, report = ck.params, ck.config, None
    if snap:
        if ck.kind != "lcfx" or getattr(cfg, "decoder", "kv") != "embed":
            raise ExportError(f"--snap applies to LCF-X adapters with the embed decoder; {path} holds a {ck.kind} "
                              "adapter without one: drop --snap")
        cfg = dataclasses.replace(cfg, snap=True)
    if prune:
        if ck.kind != "lcf":
            raise ExportError(f"pruning applies to LCF adapters; {path} holds a {ck.kind} adapter: drop the --prune-* "
                              "options")
        from lcf_jax.adapters.prune import prune_lcf
        params, cfg, report = prune_lcf(params, cfg, ck.sharer, ck.receiver, **prune)
    data = {k: ck.run_config.get("data", {}).get(k) for k in DATA_KEYS if k in ck.run_config.get("data", {})}
    source = {"checkpoint": str(Path(ck.checkpoint_dir).resolve()), "step": ck.step,
              "run_name": ck.run_config.get("name"),
              "compute_dtype": ck.run_config.get("train", {}).get("compute_dtype")}
    if report is not None:
        source["pruning"] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in report.items()}
    return export_adapter(out_dir, params, cfg, ck.sharer, ck.receiver, dtype=dtype, source=source, data=data)
