"""Export lcf_jax adapters to the portable format (`export_format`) and import them back.

  export_adapter(out_dir, params, cfg, sharer_cfg, receiver_cfg, dtype=...)   params in memory -> directory
  import_adapter(directory) -> (kind, cfg, params)                             directory -> lcf_jax
  load_checkpoint(path, step=None) -> CheckpointAdapter                        a training run's params + configs
  export_checkpoint(path, out_dir, step=None, dtype=...)                       run -> directory (the CLI)

A round trip export -> import in the params' own dtype gives bit-identical params.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from lcf_jax.adapters import ADAPTER_KINDS
from lcf_jax.adapters import export_format as F
from lcf_jax.models.config import ModelConfig


def _kind_of(cfg: Any) -> str:
    kind = getattr(cfg, "kind", None)
    if kind not in ADAPTER_KINDS:
        raise ValueError(f"not an adapter config: {type(cfg).__name__} (kinds: {sorted(ADAPTER_KINDS)})")
    return kind


def export_adapter(out_dir: str | os.PathLike, params: Any, cfg: Any, sharer_cfg: ModelConfig,
                   receiver_cfg: ModelConfig, *, dtype: str = "float32", source: Optional[dict] = None,
                   data: Optional[dict] = None) -> Path:
    """Writes `out_dir`/adapter.safetensors and adapter.json (atomically). Returns the directory."""
    kind = _kind_of(cfg)
    table = F.tensor_table(kind, cfg, sharer_cfg, receiver_cfg)
    tensors = F.params_to_tensors(table, jax.tree.map(np.asarray, jax.device_get(params)), dtype)
    meta = F.build_meta(kind, cfg, sharer_cfg, receiver_cfg, dtype=dtype, source=source, data=data)
    return F.write_adapter_dir(out_dir, meta, tensors)


def config_from_dict(kind: str, d: dict):
    """The adapter config dataclass of `kind` from a JSON dict (lists -> tuples)."""
    cls = ADAPTER_KINDS[kind].config
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise F.AdapterFormatError(f"{kind} config has unknown fields {unknown}")
    return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()})


class ImportedAdapter(NamedTuple):
    kind: str
    config: Any          # LCFConfig | LCFXConfig | C2CConfig
    params: dict         # jax arrays, the file's dtype
    sharer: ModelConfig
    receiver: ModelConfig
    meta: dict


def import_adapter(directory: str | os.PathLike, *, full: bool = False):
    """Reads an exported adapter back into lcf_jax: (kind, cfg, params), or an ImportedAdapter with
    the model configs and the JSON when `full`."""
    meta = F.read_meta(directory)
    tensors = F.read_tensors_numpy(directory, meta)
    params = jax.tree.map(jnp.asarray, F.tensors_to_params(meta.table, tensors))
    cfg = config_from_dict(meta.kind, meta.raw["config"])
    if full:
        return ImportedAdapter(meta.kind, cfg, params, meta.sharer, meta.receiver, meta.raw)
    return meta.kind, cfg, params


# ------------------------------------------------------------------------------------------------
# From a training run
# ------------------------------------------------------------------------------------------------
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


def model_config_by_name(name: str) -> ModelConfig:
    """The ModelConfig of a bundled model, a config-only preset or a tiny test model (no weights loaded)."""
    from lcf_jax.models import registry
    if name in registry.TINY_CONFIGS:
        return registry.TINY_CONFIGS[name]
    if name in registry.PRESET_CONFIGS:
        return registry.PRESET_CONFIGS[name]
    raise KeyError(f"unknown model {name!r}: not a preset {sorted(registry.PRESET_CONFIGS)} nor a tiny model "
                   f"{sorted(registry.TINY_CONFIGS)}")


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

    from lcf_jax.train.ckpt import UnreadableCheckpointError, unreadable_step

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
            acfg = config_from_dict(kind, acfg_section[kind])
            sharer = model_config_by_name(run_cfg["model"]["sharer"])
            receiver = model_config_by_name(run_cfg["model"]["receiver"])
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
