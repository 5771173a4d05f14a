"""Which of an exported C2C adapter's gates are open at evaluation (gate = 1[logit > 0], `adapters/c2c.py`): a C2C
whose logits still sit near 0 adds about half of its projectors' output at random, whatever it learnt.

    .venv/bin/python scripts/c2c_gates.py runs/exports/c2c_rev_walltime
"""
import argparse

import numpy as np

from lcf_jax.adapters.export_format import read_meta, read_tensors_numpy, tensors_to_params


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("adapter", help="an exported C2C adapter directory (adapter.json + adapter.safetensors)")
    args = ap.parse_args()
    meta = read_meta(args.adapter)
    if meta.kind != "c2c":
        raise SystemExit(f"{args.adapter} holds a {meta.kind} adapter; this script reads C2C gates")
    params = tensors_to_params(meta.table, read_tensors_numpy(args.adapter, meta))   # the one name table
    layers = meta.raw["layer_map"]["receiver_layers"]   # the receiver layer of each stacked projector
    total = 0
    for branch in ("key", "value"):
        values = np.asarray(params[branch]["gate_logit"], np.float32).reshape(len(layers))
        open_ = [layer for layer, v in zip(layers, values) if v > 0]
        total += len(open_)
        print(f"{branch}: {len(open_)} of {len(layers)} open (layers {open_}); logits from {values.min():+.5f} to "
              f"{values.max():+.5f}, median |logit| {np.median(np.abs(values)):.5f}")
    print(f"open at evaluation: {total} of {2 * len(layers)} gates")


if __name__ == "__main__":
    main()
