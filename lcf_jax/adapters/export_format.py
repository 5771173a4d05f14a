"""The exported-adapter format, shared by the JAX exporter/importer and the PyTorch loader. No JAX here.

An exported adapter is a directory holding two files and nothing else is ever read from it:

  adapter.safetensors  every parameter under a PyTorch-style name (linear weights [out, in],
                       one tensor per adapter layer, no stacking), all in one dtype;
  adapter.json         what is needed to rebuild the adapter and to check it against the two models:

    format            "lcf_jax.adapter"
    format_version    FORMAT_VERSION (readers refuse other versions)
    kind              "lcf" | "lcfx" | "c2c"   (a pruned LCF is kind "lcf" with config.layers/ranks)
    pruned            true for an LCF whose config lists layers/ranks
    config            the adapter config dataclass's fields (LCFConfig / LCFXConfig / C2CConfig)
    sharer, receiver  {"name", "config_hash" (ModelConfig.hash()), "config" (ModelConfig.to_dict())}
    layer_map         which receiver layer reads which sharer layer (see `layer_layout`)
    alignment         token alignment of a shared context (lcf, c2c) or {"method": "none"} (lcfx)
    dtype             "float32" | "bfloat16" | "float16" (the dtype of every tensor in the file)
    tensors           {name: shape} (informative; shapes are re-derived from `config` when reading)
    num_params        total parameter count
    source, data      optional: the checkpoint (path, step) and the run's data settings (prompt template,
                      lengths) when exported from a training run

`tensor_table(kind, config, sharer_cfg, receiver_cfg)` is the ONE name table per kind: each entry
gives the file name and shape, the lcf_jax params leaf and stacked index it comes from, and the
transform between the two ("copy", "linear" = swap the last two axes, "shift" = LCF-X's
cond_shift [r, m, r] <-> linear weight [m*r, r]). Export, import and the PyTorch modules all use it.

Tensor names (l = receiver layer index, s = sharer layer index, b = block index):
  lcf   layers.{l}.w_down.weight [r, 2*Hs*Ds]   layers.{l}.w_down.bias [r]   layers.{l}.norm.weight [r]
        layers.{l}.w_up.weight [2*Hr*Dr, r]     layers.{l}.w_up.bias [2*Hr*Dr]
        layers.{l}.head_k [Hr]   layers.{l}.head_v [Hr]   layers.{l}.gate_logit []
  lcfx  encoder.in_proj.{s}.weight [r, 2*Hs*Ds]  encoder.in_proj_bias [r]  encoder.norm.weight [r]
        encoder.queries [m, r]  encoder.pool_{k,v,o}.weight [r, r]  encoder.out_norm.weight [r]
        (conditioned) encoder.cond_proj.{l}.weight [r, 2*Hr*Dr]  encoder.cond_bias [r]
        encoder.cond_norm.weight [r]  encoder.cond_shift.weight [m*r, r]
        decoder.layers.{l}.norm.weight [r]  decoder.layers.{l}.{k,v}.weight [Hr*Dr, r]
        decoder.layers.{l}.{k,v}.bias [Hr*Dr]  decoder.layers.{l}.v_gate []
        (decoder "embed", instead of decoder.layers) decoder.embed.norm.weight [r]  decoder.embed.w1.{weight [H, r],
        bias [H]}  decoder.embed.w2.{weight [D, H], bias [D]}  decoder.embed.scale.weight [D]
  c2c   {key,value}.layers.{l}.in_proj.{weight,bias}  .mlp1.{norm,w1,w2}.weight
        .scalar_mlp2.{norm,w1,w2}.weight  .scalar_head.{weight,bias}  .proj_mlp2.{b}.{norm,w1,w2}.weight
        .proj_out.{weight,bias}  .gate_logit []
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Optional, Sequence

import numpy as np

from lcf_jax.adapters.specs import CONFIGS, SPECS
from lcf_jax.adapters.specs.base import Table
from lcf_jax.fileio import atomic_write_dir
from lcf_jax.models.config import ModelConfig

FORMAT_NAME = "lcf_jax.adapter"
FORMAT_VERSION = 1
TENSORS_FILE = "adapter.safetensors"
META_FILE = "adapter.json"
DTYPES = ("float32", "bfloat16", "float16")


# ------------------------------------------------------------------------------------------------
# Errors: every one names what is wrong
# ------------------------------------------------------------------------------------------------
class AdapterFormatError(ValueError):
    """The directory is not a readable exported adapter (missing file, bad JSON, bad field)."""


class FormatVersionError(AdapterFormatError):
    pass


class ConfigHashMismatchError(AdapterFormatError):
    pass


class TensorMismatchError(AdapterFormatError):
    """A tensor is missing, unexpected, or of the wrong shape or dtype."""


# ------------------------------------------------------------------------------------------------
# Configs
# ------------------------------------------------------------------------------------------------
def config_to_dict(cfg: Any) -> dict:
    """An adapter config (dataclass or mapping) as a JSON-able dict (tuples become lists)."""
    d = dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else dict(cfg)
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


def adapter_config(kind: str, cfg: Any):
    """The config dataclass of `kind` (`specs.CONFIGS`) from a dataclass or a file's dict: unknown fields and
    missing required ones (`REQUIRED_IN_FILE`) are refused, the rest take the dataclass's defaults, and the
    dataclass validates the values. Every refusal is an AdapterFormatError naming the field."""
    if kind not in SPECS:
        raise AdapterFormatError(f"unknown adapter kind {kind!r}; known kinds: {tuple(SPECS)}")
    cls = CONFIGS[kind]
    d = config_to_dict(cfg)
    known = tuple(f.name for f in dataclasses.fields(cls))
    unknown = sorted(set(d) - set(known))
    if unknown:
        raise AdapterFormatError(f"{kind} adapter config has unknown fields {unknown}; known: {known}")
    missing = [k for k in SPECS[kind].REQUIRED_IN_FILE if k not in d]
    if missing:
        raise AdapterFormatError(f"{kind} adapter config is missing fields {missing}")
    try:
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()})
    except (TypeError, ValueError) as e:
        raise AdapterFormatError(f"{kind} config: {e}") from e


def normalize_config(kind: str, cfg: Any) -> dict:
    """A validated plain dict of an adapter config (every field; layer lists as tuples), as the files hold it."""
    c = adapter_config(kind, cfg)
    d = dataclasses.asdict(c)
    if kind == "lcf" and not d.pop("joint_kv"):
        raise AdapterFormatError("an LCF adapter with separate K/V bottlenecks (joint_kv=False) is an ablation and has "
                                 "no export format; export an adapter trained with adapter.lcf.joint_kv=True")
    return d


def _from_spec(fn, kind: str, cfg: Any, s: ModelConfig, r: ModelConfig):
    """A spec function of the adapter's config and the two models; a layer plan that does not fit them is an
    AdapterFormatError."""
    c = adapter_config(kind, cfg)
    try:
        return fn(c, s, r)
    except AdapterFormatError:
        raise
    except ValueError as e:
        raise AdapterFormatError(f"{kind} config: {e}") from e


def layer_plan(kind: str, cfg: Any, s: ModelConfig, r: ModelConfig) -> tuple:
    """The spec's layer plan: lcf (receiver layers, sharer sources, ranks); lcfx (sharer layers encoded,
    receiver layers decoded, receiver layers summarised); c2c (receiver layers, sharer sources)."""
    return _from_spec(SPECS[kind].layer_plan, kind, cfg, s, r)


def layer_layout(kind: str, cfg: Any, s: ModelConfig, r: ModelConfig) -> dict:
    """The "layer_map" section of adapter.json (the spec's `layer_layout`)."""
    return _from_spec(SPECS[kind].layer_layout, kind, cfg, s, r)


# ------------------------------------------------------------------------------------------------
# The name table
# ------------------------------------------------------------------------------------------------
def tensor_table(kind: str, cfg: Any, sharer_cfg: ModelConfig, receiver_cfg: ModelConfig) -> Table:
    """The name table of one adapter (the spec's `tensor_table`; see the module docstring)."""
    return _from_spec(SPECS[kind].tensor_table, kind, cfg, sharer_cfg, receiver_cfg)


def expected_shapes(kind: str, cfg: Any, sharer_cfg: ModelConfig, receiver_cfg: ModelConfig) -> dict[str, tuple]:
    return {e.name: e.shape for e in tensor_table(kind, cfg, sharer_cfg, receiver_cfg).entries}


def _to_file(x: np.ndarray, transform: str) -> np.ndarray:
    if transform == "copy":
        return x
    if transform == "linear":
        return np.swapaxes(x, -1, -2)
    if transform == "shift":  # [r, m, r] -> [m*r, r]
        return x.reshape(x.shape[0], -1).T
    raise ValueError(transform)


def _from_file(x: np.ndarray, transform: str, leaf_slice_shape: tuple) -> np.ndarray:
    if transform == "copy":
        return x
    if transform == "linear":
        return np.swapaxes(x, -1, -2)
    if transform == "shift":  # [m*r, r] -> [r, m, r]
        return x.T.reshape(leaf_slice_shape)
    raise ValueError(transform)


def _get(tree: Mapping, path: tuple[str, ...]):
    for k in path:
        if not isinstance(tree, Mapping) or k not in tree:
            raise TensorMismatchError(f"adapter params have no leaf {'/'.join(path)!r}")
        tree = tree[k]
    return tree


def _leaf_paths(tree: Any, prefix=()) -> list[tuple[str, ...]]:
    if isinstance(tree, Mapping):
        out = []
        for k, v in tree.items():
            out += _leaf_paths(v, prefix + (str(k),))
        return out
    return [prefix]


def np_dtype(name: str) -> np.dtype:
    if name not in DTYPES:
        raise AdapterFormatError(f"dtype must be one of {DTYPES}, got {name!r}")
    if name == "bfloat16":
        import ml_dtypes
        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def params_to_tensors(table: Table, params: Mapping, dtype: str = "float32") -> dict[str, np.ndarray]:
    """lcf_jax params (nested dict of arrays) -> {file name: array} in `dtype`."""
    want = set(table.leaves)
    got = set(_leaf_paths(params))
    if got != want:
        raise TensorMismatchError(f"adapter params leaves {sorted('/'.join(p) for p in got - want)} are not in the "
                                  f"config's layout, and {sorted('/'.join(p) for p in want - got)} are missing")
    arrays = {}
    for path, shape in table.leaves.items():
        a = np.asarray(_get(params, path))
        if tuple(a.shape) != tuple(shape):
            raise TensorMismatchError(f"adapter params leaf {'/'.join(path)!r} has shape {tuple(a.shape)}, "
                                      f"the config implies {tuple(shape)}")
        arrays[path] = a
    dt = np_dtype(dtype)
    out = {}
    for e in table.entries:
        x = arrays[e.path][e.index] if e.index else arrays[e.path]
        out[e.name] = np.array(_to_file(np.asarray(x), e.transform), dtype=dt, order="C")  # 0-d stays 0-d
    return out


def tensors_to_params(table: Table, tensors: Mapping[str, np.ndarray]) -> dict:
    """{file name: array} -> lcf_jax params (nested dict of numpy arrays, the file's dtype)."""
    check_tensors({k: tuple(v.shape) for k, v in tensors.items()}, table)
    dtypes = {np.asarray(v).dtype for v in tensors.values()}
    dt = dtypes.pop() if len(dtypes) == 1 else np.dtype(np.float32)
    leaves = {p: np.zeros(s, dt) for p, s in table.leaves.items()}
    for e in table.entries:
        target = leaves[e.path]
        slice_shape = target.shape[len(e.index):]
        x = _from_file(np.asarray(tensors[e.name]), e.transform, slice_shape)
        if e.index:
            target[e.index] = x
        else:
            target[...] = x
    params: dict = {}
    for path, a in leaves.items():
        node = params
        for k in path[:-1]:
            node = node.setdefault(k, {})
        node[path[-1]] = a
    return params


def check_tensors(shapes: Mapping[str, Sequence[int]], table: Table, where: str = "adapter") -> None:
    """Raises TensorMismatchError naming the first missing / unexpected / mis-shaped tensor."""
    want = {e.name: tuple(e.shape) for e in table.entries}
    missing = [n for n in want if n not in shapes]
    if missing:
        raise TensorMismatchError(f"{where}: tensor {missing[0]!r} is missing (expected shape {want[missing[0]]}); "
                                  f"{len(missing)} missing in all")
    extra = sorted(set(shapes) - set(want))
    if extra:
        raise TensorMismatchError(f"{where}: tensor {extra[0]!r} is not part of this adapter's layout "
                                  f"({len(extra)} unexpected in all)")
    for n, s in want.items():
        if tuple(shapes[n]) != s:
            raise TensorMismatchError(f"{where}: tensor {n!r} has shape {tuple(shapes[n])}, the config implies {s}")


# ------------------------------------------------------------------------------------------------
# adapter.json
# ------------------------------------------------------------------------------------------------
def model_entry(cfg: ModelConfig) -> dict:
    return {"name": cfg.name, "config_hash": cfg.hash(), "config": cfg.to_dict()}


def alignment_settings(kind: str) -> dict:
    if not SPECS[kind].SHARED_CONTEXT:
        return {"method": "none", "note": "LCF-X: the two models read different contexts; no token alignment"}
    return {"method": "char_offsets_last_overlap", "function": "lcf_jax.adapters.align.align_offsets",
            "add_special_tokens": True,
            "rule": "each receiver token fuses the LAST sharer token whose character span overlaps it; empty or "
                    "uncovered spans take the last sharer token starting before them"}


def build_meta(kind: str, cfg: Any, sharer_cfg: ModelConfig, receiver_cfg: ModelConfig, *, dtype: str,
               source: Optional[dict] = None, data: Optional[dict] = None) -> dict:
    c = normalize_config(kind, cfg)
    table = tensor_table(kind, c, sharer_cfg, receiver_cfg)
    meta = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "pruned": bool(getattr(SPECS[kind], "PRUNABLE", False)
                       and (c.get("layers") is not None or c.get("ranks") is not None)),
        "config": config_to_dict(c),
        "sharer": model_entry(sharer_cfg),
        "receiver": model_entry(receiver_cfg),
        "layer_map": layer_layout(kind, c, sharer_cfg, receiver_cfg),
        "alignment": alignment_settings(kind),
        "dtype": dtype,
        "tensors": {e.name: list(e.shape) for e in table.entries},
        "num_params": int(sum(int(np.prod(e.shape)) for e in table.entries)),
    }
    if source is not None:
        meta["source"] = source
    if data is not None:
        meta["data"] = data
    return meta


def _model_from_meta(meta: dict, role: str) -> ModelConfig:
    entry = meta.get(role)
    if not isinstance(entry, dict) or "config" not in entry or "config_hash" not in entry:
        raise AdapterFormatError(f"{META_FILE}: field {role!r} must hold name, config_hash and config")
    try:
        cfg = ModelConfig.from_dict(entry["config"])
    except (TypeError, ValueError) as e:
        raise AdapterFormatError(f"{META_FILE}: {role}.config is not a valid ModelConfig: {e}") from e
    if cfg.hash() != entry["config_hash"]:
        raise ConfigHashMismatchError(f"{META_FILE}: {role}.config hashes to {cfg.hash()} but {role}.config_hash "
                                      f"says {entry['config_hash']} (the file was edited or is corrupt)")
    return cfg


class AdapterMeta(NamedTuple):
    kind: str
    config: dict                 # normalized adapter config dict
    sharer: ModelConfig
    receiver: ModelConfig
    dtype: str
    raw: dict                    # the whole adapter.json

    @property
    def table(self) -> Table:
        return tensor_table(self.kind, self.config, self.sharer, self.receiver)


def parse_meta(meta: Any) -> AdapterMeta:
    """Validates adapter.json's content; raises errors naming the bad field."""
    if not isinstance(meta, dict):
        raise AdapterFormatError(f"{META_FILE} must hold a JSON object")
    if meta.get("format") != FORMAT_NAME:
        raise AdapterFormatError(f"{META_FILE}: format is {meta.get('format')!r}, expected {FORMAT_NAME!r}")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise FormatVersionError(f"{META_FILE}: format_version {version!r} is not supported; this reader "
                                 f"reads format_version {FORMAT_VERSION}")
    kind = meta.get("kind")
    if kind not in SPECS:
        raise AdapterFormatError(f"{META_FILE}: kind {kind!r} is not one of {tuple(SPECS)}")
    if meta.get("dtype") not in DTYPES:
        raise AdapterFormatError(f"{META_FILE}: dtype {meta.get('dtype')!r} is not one of {DTYPES}")
    cfg = normalize_config(kind, meta.get("config") or {})
    return AdapterMeta(kind, cfg, _model_from_meta(meta, "sharer"), _model_from_meta(meta, "receiver"),
                       meta["dtype"], meta)


def read_meta(directory: str | os.PathLike) -> AdapterMeta:
    path = Path(directory) / META_FILE
    if not path.is_file():
        raise AdapterFormatError(f"{directory} holds no {META_FILE}: not an exported adapter")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise AdapterFormatError(f"{path} is not valid JSON: {e}") from e
    return parse_meta(meta)


_SAFETENSORS_DTYPES = {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}


def tensor_header(directory: str | os.PathLike) -> dict[str, tuple[tuple[int, ...], str]]:
    """{name: (shape, dtype)} from adapter.safetensors' JSON header, without reading any tensor data."""
    path = Path(directory) / TENSORS_FILE
    if not path.is_file():
        raise AdapterFormatError(f"{directory} holds no {TENSORS_FILE}")
    with path.open("rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise AdapterFormatError(f"{path} is truncated")
        n = int.from_bytes(raw, "little")
        if n <= 0 or n > 100_000_000:
            raise AdapterFormatError(f"{path} has an implausible header length {n}")
        try:
            header = json.loads(f.read(n))
        except json.JSONDecodeError as e:
            raise AdapterFormatError(f"{path}: header is not valid JSON: {e}") from e
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        out[name] = (tuple(info["shape"]), _SAFETENSORS_DTYPES.get(info["dtype"], info["dtype"]))
    return out


def check_file(directory: str | os.PathLike, meta: AdapterMeta) -> None:
    """Names and shapes in adapter.safetensors against the config's table; dtypes against meta.dtype."""
    header = tensor_header(directory)
    check_tensors({k: v[0] for k, v in header.items()}, meta.table, where=str(Path(directory) / TENSORS_FILE))
    for name, (_, dt) in header.items():
        if dt != meta.dtype:
            raise TensorMismatchError(f"{Path(directory) / TENSORS_FILE}: tensor {name!r} is {dt}, "
                                      f"{META_FILE} says dtype {meta.dtype}")


def check_model_config(meta: AdapterMeta, role: str, model_cfg: ModelConfig) -> None:
    """Raises ConfigHashMismatchError if `model_cfg` is not the architecture the adapter was trained for."""
    want = meta.sharer if role == "sharer" else meta.receiver
    if model_cfg.hash() == want.hash():
        return
    a, b = want.to_dict(), model_cfg.to_dict()
    diff = [k for k in sorted(set(a) | set(b)) if k != "name" and a.get(k) != b.get(k)]
    shown = ", ".join(f"{k}: adapter {a.get(k)!r} vs model {b.get(k)!r}" for k in diff[:4])
    raise ConfigHashMismatchError(
        f"the {role} model {model_cfg.name or model_cfg.family!r} (config hash {model_cfg.hash()}) is not the "
        f"{role} this adapter was exported for ({want.name!r}, config hash {want.hash()}); differing fields: {shown}")


# ------------------------------------------------------------------------------------------------
# Writing
# ------------------------------------------------------------------------------------------------
def write_adapter_dir(out_dir: str | os.PathLike, meta: dict, tensors: Mapping[str, np.ndarray]) -> Path:
    """Writes adapter.safetensors + adapter.json atomically (checked against the meta first)."""
    from safetensors.numpy import save_file

    parsed = parse_meta(meta)
    check_tensors({k: tuple(v.shape) for k, v in tensors.items()}, parsed.table)
    dt = np_dtype(parsed.dtype)
    for k, v in tensors.items():
        if v.dtype != dt:
            raise TensorMismatchError(f"tensor {k!r} is {v.dtype}, meta says {parsed.dtype}")

    def write(tmp: Path):
        save_file(dict(tensors), str(tmp / TENSORS_FILE),
                  metadata={"format": FORMAT_NAME, "format_version": str(FORMAT_VERSION), "kind": parsed.kind})
        (tmp / META_FILE).write_text(json.dumps(meta, indent=1, sort_keys=True))
    return atomic_write_dir(out_dir, write)


def read_tensors_numpy(directory: str | os.PathLike, meta: AdapterMeta) -> dict[str, np.ndarray]:
    """Checked read of adapter.safetensors as numpy arrays (bfloat16 via ml_dtypes)."""
    import ml_dtypes  # noqa: F401  (registers bfloat16 with numpy: without it a bfloat16 file fails unless jax was imported)
    from safetensors import safe_open

    check_file(directory, meta)
    out = {}
    with safe_open(str(Path(directory) / TENSORS_FILE), framework="np") as f:
        for k in f.keys():
            out[k] = f.get_tensor(k)
    return out
