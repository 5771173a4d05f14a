"""Export a trained adapter for use outside lcf_jax (PyTorch / Hugging Face transformers).

    python -m lcf_jax.export --checkpoint runs/lcfx_smollm2_to_gemma3 --out exported/lcfx [--step N]
                             [--dtype float32|bfloat16|float16] [--prune-rank R | --prune-energy E] [--prune-gate G]

--checkpoint is a run's workdir (holding checkpoints/) or its checkpoints directory; the latest step is
exported unless --step is given. The output directory holds adapter.safetensors and adapter.json
(see lcf_jax/adapters/export_format.py); load it with `lcf_jax.torch.load_adapter` (no JAX needed)
or back into lcf_jax with `lcf_jax.adapters.export_jax.import_adapter`.
"""
from __future__ import annotations

import sys

from lcf_jax.cli_errors import ArgumentParser, UserError, positive, run_main


def export_adapter(out_dir, params, cfg, sharer_cfg, receiver_cfg, **kw):
    """In-memory lcf_jax adapter params -> exported directory (see `lcf_jax.adapters.export_jax`)."""
    from lcf_jax.adapters.export_jax import export_adapter as f
    return f(out_dir, params, cfg, sharer_cfg, receiver_cfg, **kw)


def import_adapter(directory, **kw):
    """Exported directory -> (kind, cfg, params) in lcf_jax (see `lcf_jax.adapters.export_jax`)."""
    from lcf_jax.adapters.export_jax import import_adapter as f
    return f(directory, **kw)


def check_args(args) -> None:
    """The numbers and paths, before the checkpoint is read."""
    import math
    from pathlib import Path

    positive("--step", args.step, allow_zero=True)
    positive("--prune-rank", args.prune_rank)
    if args.prune_energy is not None and not 0.0 < args.prune_energy <= 1.0:
        raise UserError(f"--prune-energy is the fraction of sum(sigma^2) to keep: in (0, 1], got {args.prune_energy}")
    if args.prune_gate is not None and not math.isfinite(args.prune_gate):
        raise UserError(f"--prune-gate must be a finite number, got {args.prune_gate}")
    if args.prune_rank is not None and args.prune_energy is not None:
        raise UserError("--prune-rank and --prune-energy both set the kept rank: give one of them")
    ckpt, out = Path(args.checkpoint), Path(args.out)
    if not ckpt.exists():
        raise FileNotFoundError(f"--checkpoint {ckpt} does not exist; give a run's workdir (holding checkpoints/)")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a directory name")
    if out.resolve() == ckpt.resolve() or out.resolve() in ckpt.resolve().parents:
        raise UserError(f"--out {out} holds the checkpoint {ckpt}: writing the export there would replace it; "
                        "give another directory")


def build_parser() -> ArgumentParser:
    ap = ArgumentParser(prog="python -m lcf_jax.export", description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True, help="run workdir or its checkpoints/ directory")
    ap.add_argument("--out", required=True, help="output directory (written atomically)")
    ap.add_argument("--step", type=int, default=None, help="checkpoint step (default: the latest)")
    ap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    ap.add_argument("--prune-rank", type=int, default=None, help="LCF only: cut every layer to this rank (SVD)")
    ap.add_argument("--prune-energy", type=float, default=None,
                    help="LCF only: per layer, the smallest rank keeping this fraction of sum(sigma^2)")
    ap.add_argument("--prune-gate", type=float, default=None, help="LCF only: drop layers whose gate is below this")
    ap.add_argument("--snap", action="store_true",
                    help="LCF-X embed decoder only: the receiver snaps each decoded vector to its nearest input "
                         "embedding (an inference setting; the weights are the run's)")
    return ap


def _main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    check_args(args)
    prune = {k: v for k, v in (("target_rank", args.prune_rank), ("energy", args.prune_energy),
                               ("gate_threshold", args.prune_gate)) if v is not None}

    import logging
    logging.getLogger("absl").setLevel(logging.ERROR)  # Orbax's "Given directory is read only", once per manager

    from lcf_jax.adapters import export_format as F
    from lcf_jax.train.export_run import export_checkpoint
    from lcf_jax.train.ckpt import UnreadableCheckpointError

    try:
        out = export_checkpoint(args.checkpoint, args.out, step=args.step, dtype=args.dtype, prune=prune or None,
                                snap=args.snap)
    except UnreadableCheckpointError as e:
        if not e.usable:
            raise
        raise UserError(f"{e}: export one with --step {e.usable[-1]}") from e
    meta = F.read_meta(out).raw
    src = meta.get("source", {})
    if "pruning" in src:
        from lcf_jax.adapters.prune import format_report
        print(format_report(src["pruning"]))
    print(f"exported {meta['kind']} adapter ({meta['sharer']['name']} -> {meta['receiver']['name']}, "
          f"step {src.get('step')}, {meta['num_params']:,} params, {meta['dtype']}) to {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
