"""Training checkpoints: a thin wrapper around Orbax ``CheckpointManager``.

One checkpoint step holds five items::

    params      adapter params pytree          (StandardSave / StandardRestore)
    opt_state   optax state pytree             (StandardSave / StandardRestore)
    step        {"step": int}                  (JsonSave / JsonRestore)
    data_state  JSON-able dict (data iterator)  (JsonSave / JsonRestore); non-JSON -> TypeError
    config      JSON-able dict (run config)     (JsonSave / JsonRestore); non-JSON values -> str

plus Orbax's own ``metrics`` item when a ``best_metric`` is tracked.

Retention = the ``keep_last`` newest steps UNION the ``keep_best`` best steps by
``metrics[best_metric]`` (Orbax ``AnyPreservationPolicy(LatestN, BestN)``).

``directory`` may be a local path or ``gs://...``; it is handed to Orbax / etils
``epath`` untouched (no ``os``/``pathlib`` calls on it).

Saves are asynchronous by default: ``save`` returns once device arrays have been
copied to host; call ``wait()`` before reading the directory and ``close()``
before the process exits.

``restore_latest`` walks the steps newest first. A step that cannot be read
(truncated / deleted files, broken metadata) is skipped with a
``warnings.warn`` naming its path; leftover temporary directories of an
interrupted save are never considered (Orbax ignores them) and are reported
with a warning as well. Before restoring, the checkpoint's metadata tree is
compared with the abstract targets; a structure or shape difference raises
``CheckpointMismatchError`` naming the first mismatching leaf.

``step_problems(directory)`` reads every step back and says what is wrong with
each damaged one ("its 'config' item is missing"); ``unreadable_step`` turns a
failed read into an ``UnreadableCheckpointError`` naming the step, the problem
and the usable steps (what `python -m lcf_jax.export` reports).
"""
from __future__ import annotations

import json
import math
import re
import warnings
from typing import Any, Mapping, NamedTuple, Sequence

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from orbax.checkpoint import checkpoint_managers as ocm

__all__ = [
    "Checkpointer",
    "CheckpointMismatchError",
    "NoValidCheckpointError",
    "Restored",
    "UnreadableCheckpointError",
    "step_problems",
    "unreadable_step",
]

ITEM_NAMES = ("params", "opt_state", "step", "data_state", "config")
# Orbax names an in-progress step directory ``<step>.orbax-checkpoint-tmp-<ts>``.
_TMP_MARKER = ".orbax-checkpoint-tmp"


class CheckpointMismatchError(ValueError):
    """The checkpoint's tree does not fit the restore target (structure or shape)."""

    def __init__(self, message: str, *, step: int, path: str,
                 checkpoint_shape: tuple | None, target_shape: tuple | None):
        super().__init__(message)
        self.step = step
        self.path = path
        self.checkpoint_shape = checkpoint_shape
        self.target_shape = target_shape


class NoValidCheckpointError(RuntimeError):
    """Checkpoints exist but none of them could be restored."""


class UnreadableCheckpointError(ValueError):
    """One checkpoint step cannot be read (a partial or corrupt save); says what is wrong and which steps are usable."""

    def __init__(self, message: str, *, step: int, problem: str, usable: list[int]):
        super().__init__(message)
        self.step = step
        self.problem = problem
        self.usable = usable


class Restored(NamedTuple):
    params: Any
    opt_state: Any
    step: int
    data_state: dict
    config: dict


def _key_str(key) -> str:
    tu = jax.tree_util
    if isinstance(key, tu.DictKey):
        return str(key.key)
    if isinstance(key, tu.SequenceKey):
        return str(key.idx)
    if isinstance(key, tu.GetAttrKey):
        return str(key.name)
    if isinstance(key, tu.FlattenedIndexKey):
        return str(key.key)
    return str(key)


def _flat_shapes(tree) -> dict[tuple[str, ...], tuple | None]:
    """{normalised key path: shape} for every leaf, in flatten order.

    Keys are normalised to strings so that a target namedtuple field
    (``GetAttrKey('mu')``) matches the dict key Orbax stores for it, and a list
    index matches a stringified index.
    """
    out: dict[tuple[str, ...], tuple | None] = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        shape = getattr(leaf, "shape", None)
        dtype = getattr(leaf, "dtype", None)
        if shape is not None and dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
            # Typed PRNG keys are stored as their key data (e.g. () -> (2,) for threefry).
            shape = jax.eval_shape(jax.random.key_data, leaf).shape
        if shape is None and isinstance(leaf, (int, float, complex, bool, np.generic)):
            shape = ()
        out[tuple(_key_str(k) for k in path)] = None if shape is None else tuple(shape)
    return out


def _to_json(obj: Any, what: str, *, lenient: bool = False) -> Any:
    """Validate JSON-ability now (a failure inside an async save is much harder to read).

    ``lenient`` stringifies non-JSON values (used for the run config, which is a
    record for humans) instead of raising (used for data_state, which must round trip).
    """
    if obj is None:
        return {}
    if not isinstance(obj, Mapping):
        raise TypeError(f"{what} must be a JSON-able dict, got {type(obj).__name__}")
    try:
        return json.loads(json.dumps(dict(obj), default=str if lenient else None))
    except (TypeError, ValueError) as e:
        raise TypeError(f"{what} is not JSON-serialisable: {e}") from e


def _metrics_to_json(metrics: Mapping[str, Any] | None) -> dict | None:
    if metrics is None:
        return None
    out = {}
    for k, v in metrics.items():
        if isinstance(v, (jax.Array, np.ndarray, np.generic)):
            v = np.asarray(v).item()
        if isinstance(v, float) and not math.isfinite(v):
            v = None  # JSON has no NaN/inf; treated as "worst" by the ranking
        out[str(k)] = v
    return out


def _short(e: BaseException, limit: int = 300) -> str:
    msg = f"{type(e).__name__}: {e}"
    return msg if len(msg) <= limit else msg[:limit] + "..."


def describe_failure(e: BaseException, item: str | None = None) -> str:
    """An Orbax / TensorStore read error in a few words, e.g. "its 'config' item is missing"."""
    m = re.search(r'Item "(\w+)" was not found|Unknown key: (\w+)', str(e))
    if m:
        return f"its {(m.group(1) or m.group(2))!r} item is missing"
    if isinstance(e, FileNotFoundError) and item is None:
        return f"a file is missing ({_short(e, 160)})"
    return f"its {item!r} item is unreadable ({_short(e, 160)})" if item else _short(e, 160)


def _item_arg(item: str):
    return ocp.args.StandardRestore() if item in ("params", "opt_state") else ocp.args.JsonRestore()


def step_problems(directory: str | epath.PathLike, items: Sequence[str] = ITEM_NAMES) -> dict[int, str | None]:
    """{step: None when every one of `items` reads back, else what is wrong} for each finalized step.

    Reads every item in full (the only way to find a truncated array file): for error messages, not hot paths.
    """
    root = epath.Path(directory)
    options = ocp.CheckpointManagerOptions(read_only=True, create=False, save_interval_steps=0)
    handlers = {k: (ocp.StandardCheckpointHandler() if k in ("params", "opt_state") else ocp.JsonCheckpointHandler())
                for k in items}
    mngr = ocp.CheckpointManager(directory if isinstance(directory, str) else root, options=options,
                                 item_handlers=handlers)
    out: dict[int, str | None] = {}
    try:
        for step in sorted(int(s) for s in mngr.all_steps()):
            out[step] = None
            missing = [k for k in items if not (root / str(step) / k).exists()]
            if missing:
                out[step] = f"its {missing[0]!r} item is missing"
                continue
            for item in items:
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        mngr.restore(step, args=ocp.args.Composite(**{item: _item_arg(item)}))
                except Exception as e:  # whatever Orbax / TensorStore raise for a damaged file
                    out[step] = describe_failure(e, item)
                    break
    finally:
        mngr.close()
    return out


def unreadable_step(directory: str | epath.PathLike, step: int, error: BaseException, *, item: str | None = None,
                    items: Sequence[str] = ITEM_NAMES) -> UnreadableCheckpointError:
    """The error for a step that failed to read: names the step, what is wrong and the steps that do read."""
    problem = describe_failure(error, item)
    try:
        usable = [s for s, p in step_problems(directory, items).items() if p is None]
    except Exception:  # the directory itself is unreadable: say nothing about other steps
        usable = []
    hint = f"usable steps: {usable}" if usable else "no step of this run is usable"
    return UnreadableCheckpointError(
        f"checkpoint step {step} in {directory} is unreadable: {problem} (an interrupted or corrupt save); {hint}",
        step=step, problem=problem, usable=usable)


class Checkpointer:
    """Keep-last-N + keep-best-K checkpointing of (params, opt_state, step, data_state, config)."""

    def __init__(
        self,
        directory: str | epath.PathLike,
        *,
        keep_last: int | None,
        keep_best: int = 0,
        best_metric: str | None = None,
        best_mode: str = "max",
        async_save: bool = True,
        save_interval_steps: int = 1,
        keep_steps: Sequence[int] = (),
    ):
        if keep_last is not None and keep_last < 1:
            raise ValueError("keep_last must be >= 1 (resuming needs the newest checkpoint) or None (keep all)")
        if keep_best < 0:
            raise ValueError("keep_best must be >= 0")
        if keep_best > 0 and best_metric is None:
            raise ValueError("keep_best > 0 requires best_metric")
        if best_mode not in ("max", "min"):
            raise ValueError(f"best_mode must be 'max' or 'min', got {best_mode!r}")

        self.best_metric = best_metric
        self.best_mode = best_mode
        self._bad_steps: set[int] = set()

        policies: list[ocm.PreservationPolicy] = [ocm.LatestN(n=keep_last)]
        if keep_steps:  # e.g. step 0, the pre-trained starting point: an artifact of its own
            policies.append(ocm.CustomSteps(steps=list(keep_steps)))
        if best_metric is not None and keep_best > 0:
            policies.append(
                ocm.BestN(
                    get_metric_fn=self._metric_value,
                    # BestN sorts ascending and keeps the tail.
                    reverse=(best_mode == "min"),
                    n=keep_best,
                    # Metric-less steps are kept only by LatestN.
                    keep_checkpoints_without_metrics=False,
                )
            )
        options = ocp.CheckpointManagerOptions(
            save_interval_steps=save_interval_steps,
            # best_fn only drives best_step() and whether metrics are written;
            # retention is fully decided by preservation_policy.
            best_fn=self._metric_value if best_metric is not None else None,
            best_mode=best_mode,
            preservation_policy=ocm.AnyPreservationPolicy(policies),
            enable_async_checkpointing=async_save,
            create=True,
        )
        handlers = {
            "params": ocp.StandardCheckpointHandler(),
            "opt_state": ocp.StandardCheckpointHandler(),
            "step": ocp.JsonCheckpointHandler(),
            "data_state": ocp.JsonCheckpointHandler(),
            "config": ocp.JsonCheckpointHandler(),
        }
        # Strings go to Orbax as they are (gs:// handled by etils epath).
        self._mngr = ocp.CheckpointManager(
            directory if isinstance(directory, str) else epath.Path(directory),
            options=options,
            item_handlers=handlers,
        )

    # ------------------------------------------------------------------ utils
    def _metric_value(self, metrics: Any) -> float:
        worst = -math.inf if self.best_mode == "max" else math.inf
        try:
            v = float(metrics[self.best_metric])
        except (KeyError, TypeError, ValueError):
            return worst
        return v if math.isfinite(v) else worst

    @property
    def directory(self) -> epath.Path:
        return self._mngr.directory

    def step_path(self, step: int) -> epath.Path:
        return self._mngr.directory / str(step)

    @property
    def manager(self) -> ocp.CheckpointManager:
        """The underlying Orbax manager (escape hatch)."""
        return self._mngr

    # ------------------------------------------------------------------- save
    def save(
        self,
        step: int,
        params: Any,
        opt_state: Any,
        *,
        data_state: Mapping[str, Any] | None = None,
        config: Mapping[str, Any] | None = None,
        metrics: Mapping[str, Any] | None = None,
        force: bool = False,
    ) -> bool:
        """Start saving ``step`` (async unless ``async_save=False``).

        Returns False when ``save_interval_steps`` says this step is not saved
        (``force=True`` overrides). ``metrics`` (e.g. ``{"f1": 0.7}``) rank the
        step for keep-best; a step saved without ``best_metric`` in its metrics
        is only kept as one of the ``keep_last`` newest.
        """
        step = int(step)
        data_json = _to_json(data_state, "data_state")
        config_json = _to_json(config, "config", lenient=True)
        metrics_json = _metrics_to_json(metrics)
        if self.best_metric is not None and metrics_json is not None and self.best_metric not in metrics_json:
            raise ValueError(f"metrics {sorted(metrics_json)} lack best_metric {self.best_metric!r}")

        if step in self._bad_steps:
            self._mngr.wait_until_finished()
            if step in self._mngr.all_steps():
                warnings.warn(
                    f"Replacing unreadable checkpoint {self.step_path(step)} with a new save of step {step}",
                    stacklevel=2,
                )
                self._mngr.delete(step)
            self._bad_steps.discard(step)

        args = ocp.args.Composite(
            params=ocp.args.StandardSave(params),
            opt_state=ocp.args.StandardSave(opt_state),
            step=ocp.args.JsonSave({"step": step}),
            data_state=ocp.args.JsonSave(data_json),
            config=ocp.args.JsonSave(config_json),
        )
        return self._mngr.save(step, args=args, metrics=metrics_json, force=force)

    def wait(self) -> None:
        """Block until in-flight async saves (and old-step deletions) have finished."""
        self._mngr.wait_until_finished()

    def close(self) -> None:
        self._mngr.close()

    def __enter__(self) -> "Checkpointer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---------------------------------------------------------------- queries
    def all_steps(self) -> list[int]:
        """Finalized steps, ascending (an in-flight async save may already be listed; ``wait()`` first)."""
        return sorted(int(s) for s in self._mngr.all_steps())

    def latest_step(self) -> int | None:
        return self._mngr.latest_step()

    def best_step(self) -> int | None:
        """Best step by ``best_metric`` (None when no metric is tracked or none was recorded)."""
        if self.best_metric is None:
            return None
        return self._mngr.best_step()

    def metrics(self, step: int) -> dict | None:
        return self._mngr.metrics(step)

    # ---------------------------------------------------------------- restore
    def _warn_unfinalized(self) -> None:
        """Warn about step-like directories Orbax will not consider (interrupted saves)."""
        root = epath.Path(self._mngr.directory)
        try:
            if not root.exists():
                return
            entries = list(root.iterdir())
        except Exception as e:  # listing problems must not block a restore
            warnings.warn(f"Could not list checkpoint directory {root}: {_short(e)}", stacklevel=3)
            return
        steps = set(self._mngr.all_steps())
        for p in sorted(entries, key=lambda p: p.name):
            name = p.name
            if _TMP_MARKER in name:
                warnings.warn(
                    f"Ignoring leftover temporary checkpoint directory {p} (an interrupted save)", stacklevel=3
                )
            elif re.fullmatch(r"\d+", name) and int(name) not in steps:
                warnings.warn(f"Ignoring unfinalized checkpoint directory {p} (no commit marker)", stacklevel=3)

    def _check_tree(self, step: int, item: str, ckpt_meta: Any, target: Any) -> None:
        ckpt_tree = getattr(ckpt_meta, "tree", ckpt_meta)
        ckpt = _flat_shapes(ckpt_tree)
        tgt = _flat_shapes(target)
        where = str(self.step_path(step))
        for path, tshape in tgt.items():
            name = "/".join((item,) + path)
            if path not in ckpt:
                raise CheckpointMismatchError(
                    f"Checkpoint {where} does not match the restore target: leaf {name!r} "
                    f"(target shape {tshape}) is missing from the checkpoint",
                    step=step, path=name, checkpoint_shape=None, target_shape=tshape,
                )
            cshape = ckpt[path]
            if cshape is not None and tshape is not None and cshape != tshape:
                raise CheckpointMismatchError(
                    f"Checkpoint {where} does not match the restore target: leaf {name!r} "
                    f"has shape {cshape} in the checkpoint but {tshape} in the target (was the workdir written with "
                    "another config? use that config, or a new train.workdir)",
                    step=step, path=name, checkpoint_shape=cshape, target_shape=tshape,
                )
        for path, cshape in ckpt.items():
            if path not in tgt:
                name = "/".join((item,) + path)
                raise CheckpointMismatchError(
                    f"Checkpoint {where} does not match the restore target: leaf {name!r} "
                    f"(checkpoint shape {cshape}) is not in the target",
                    step=step, path=name, checkpoint_shape=cshape, target_shape=None,
                )

    def _read_metadata(self, step: int) -> tuple[Any, Any]:
        md = self._mngr.item_metadata(step)
        p_md, o_md = md["params"], md["opt_state"]
        if p_md is None or o_md is None:
            raise FileNotFoundError("params/opt_state metadata missing")
        return p_md, o_md

    def _restore_step(self, step: int, abstract_params: Any, abstract_opt_state: Any) -> Restored:
        r = self._mngr.restore(
            step,
            args=ocp.args.Composite(
                params=ocp.args.StandardRestore(abstract_params),
                opt_state=ocp.args.StandardRestore(abstract_opt_state),
                step=ocp.args.JsonRestore(),
                data_state=ocp.args.JsonRestore(),
                config=ocp.args.JsonRestore(),
            ),
        )
        saved_step = (r["step"] or {}).get("step")
        if saved_step != step:
            raise ValueError(f"step item says {saved_step!r}, directory says {step}")
        return Restored(r["params"], r["opt_state"], step, r["data_state"], r["config"])

    def restore(self, step: int, abstract_params: Any, abstract_opt_state: Any) -> Restored:
        """Restore one given step (no skipping: errors propagate)."""
        self._mngr.wait_until_finished()
        p_md, o_md = self._read_metadata(step)
        self._check_tree(step, "params", p_md, abstract_params)
        self._check_tree(step, "opt_state", o_md, abstract_opt_state)
        return self._restore_step(step, abstract_params, abstract_opt_state)

    def restore_latest(self, abstract_params: Any, abstract_opt_state: Any) -> Restored | None:
        """Restore the newest readable step into the abstract targets.

        Targets are pytrees of ``jax.ShapeDtypeStruct`` (with ``.sharding`` to
        place the restored arrays; without it Orbax uses the saved sharding) or
        of concrete arrays. Returns ``Restored(params, opt_state, step,
        data_state, config)`` (a NamedTuple, so it unpacks as a 5-tuple), or
        None when the directory holds no finalized checkpoint.

        Unreadable steps are skipped with a warning naming them. Raises
        ``CheckpointMismatchError`` if the newest readable step does not fit the
        targets, and ``NoValidCheckpointError`` if steps exist but none is
        readable (so that a run never silently restarts from scratch).
        """
        self._mngr.wait_until_finished()
        self._mngr.reload()
        self._warn_unfinalized()
        steps = sorted(self._mngr.all_steps(), reverse=True)
        if not steps:
            return None
        failures = []
        for step in steps:
            where = self.step_path(step)
            try:
                p_md, o_md = self._read_metadata(step)
            except Exception as e:
                failures.append((step, e))
                self._bad_steps.add(step)
                warnings.warn(f"Skipping unreadable checkpoint {where}: {describe_failure(e)}", stacklevel=2)
                continue
            # A mismatch is a configuration error, not corruption: raise.
            self._check_tree(step, "params", p_md, abstract_params)
            self._check_tree(step, "opt_state", o_md, abstract_opt_state)
            try:
                return self._restore_step(step, abstract_params, abstract_opt_state)
            except Exception as e:
                failures.append((step, e))
                self._bad_steps.add(step)
                warnings.warn(f"Skipping unreadable checkpoint {where}: {describe_failure(e)}", stacklevel=2)
        details = "; ".join(f"step {s}: {describe_failure(e)}" for s, e in failures)
        raise NoValidCheckpointError(
            f"None of the {len(steps)} checkpoints in {self._mngr.directory} could be restored ({details}); "
            "no step is usable: move the directory aside to start the run afresh"
        )
