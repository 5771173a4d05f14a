"""How the command lines report a user's mistake: one line on stderr, `error: <what is wrong, how to fix it>`,
exit code 2, and no traceback (unless --debug or LCF_JAX_DEBUG=1). No JAX here: imported before anything heavy.

  main(argv) = run_main(_main, argv)   every entry point (answer, train, export, reproduce, demo, launch.tpu)
  raise UserError("...")               a mistake in the command line, the input rows, a file or a config
  ArgumentParser                       argparse whose own errors (bad flag, bad int) follow the same convention

The project's own error types (bad adapter files, unreadable checkpoints, bad configs, a message from another
adapter, ...) are reported the same way; any other exception is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Optional, Sequence

DEBUG_FLAG = "--debug"
DEBUG_ENV = "LCF_JAX_DEBUG"


class UserError(Exception):
    """A mistake the user can fix; the message says what is wrong and how to fix it."""


# The project's error types a user can cause, by module. Looked up only in modules already imported: an
# exception of a class whose module was never imported cannot have been raised, so this file imports nothing.
KNOWN_ERRORS = {
    "lcf_jax.adapters.export_format": ("AdapterFormatError",),
    "lcf_jax.train.export_run": ("ExportError",),
    "lcf_jax.train.ckpt": ("CheckpointMismatchError", "NoValidCheckpointError", "UnreadableCheckpointError"),
    "lcf_jax.train.step": ("NonFiniteLossError",),
    "lcf_jax.train.context_store": ("ContextStoreError",),
    "lcf_jax.train.feed": ("TargetsFileError",),
    "lcf_jax.train.mesh_shape": ("MeshShapeError",),
    "lcf_jax.comm.wire": ("MessageError",),
    "lcf_jax.models.registry": ("ModelPackageMissingError",),
    "lcf_jax.models.config": ("UnsupportedArchitectureError",),
    "lcf_jax.models.generate": ("PromptTooLongError",),
    "lcf_jax.data.splits": ("SplitError", "UnknownDatasetError"),
    "lcf_jax.data.tfds_builders": ("EmptySplitError",),
    "launch.checks": ("LaunchError",),
    "launch.slices": ("UnknownSliceError",),
}


def known_error_types() -> tuple[type, ...]:
    types: list[type] = [UserError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError]
    for module, names in KNOWN_ERRORS.items():
        mod = sys.modules.get(module)
        types += [getattr(mod, n) for n in names if mod is not None and hasattr(mod, n)]
    return tuple(types)


def one_line(e: BaseException) -> str:
    """The message of an error on one line (a KeyError's message without its quotes; an OS error as 'path: why')."""
    if isinstance(e, OSError) and e.strerror and e.filename:
        msg = f"{e.filename}: {e.strerror}"
    elif isinstance(e, KeyError) and len(e.args) == 1 and isinstance(e.args[0], str):
        msg = e.args[0]
    else:
        msg = str(e) or type(e).__name__
    return " ".join(msg.split())


def debug_requested(argv: Sequence[str]) -> bool:
    return DEBUG_FLAG in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def run_main(fn: Callable[[list[str]], Optional[int]], argv: Optional[Sequence[str]] = None) -> Optional[int]:
    """Runs an entry point's `fn(argv)` (argv without --debug). A user error prints `error: ...` as one line on
    stderr and raises SystemExit(2); with --debug or LCF_JAX_DEBUG=1 it propagates with its traceback."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = debug_requested(argv)
    try:
        return fn([a for a in argv if a != DEBUG_FLAG])
    except known_error_types() as e:
        if debug:
            raise
        message = one_line(e)
    # Raised outside the except block: the SystemExit carries no reference to the error and its frames, which
    # would otherwise live until interpreter shutdown (and Orbax's closed event loops complain then).
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the command lines' convention: a bad flag or value is a UserError (one line, exit 2)."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.add_argument(DEBUG_FLAG, action="store_true", help="show the traceback of an error (or set LCF_JAX_DEBUG=1)")

    def error(self, message: str):
        raise UserError(f"{message} (see {self.prog} --help)")


def positive(name: str, value: Optional[float], *, allow_zero: bool = False) -> None:
    """Refuses a count or size below 1 (or below 0 with `allow_zero`), naming the flag."""
    if value is None:
        return
    low = 0 if allow_zero else 1
    if value < low:
        raise UserError(f"{name} must be at least {low}, got {value}")
