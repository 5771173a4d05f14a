"""Which of an exported C2C adapter's gates are open at evaluation (gate = 1[logit > 0], `adapters/c2c.py`): a C2C
whose logits still sit near 0 adds about half of its projectors' output at random, whatever it learnt.

    .venv/bin/python scripts/c2c_gates.py runs/exports/c2c_rev_walltime
"""
import argparse

import numpy as np

from lcf_jax.adapters.export_format import read_meta, read_tensors_numpy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("adapter", help="an exported C2C adapter directory (adapter.json + adapter.safetensors)")
    args = ap.parse_args()
    meta = read_meta(args.adapter)
    if meta.kind != "c2c":
        raise SystemExit(f"{args.adapter} holds a {meta.kind} adapter; this script reads C2C gates")
    tensors = read_tensors_numpy(args.adapter, meta)
    total = 0
    for branch in ("key", "value"):
        logits = {int(name.split(".")[2]): float(np.asarray(t, np.float32).ravel()[0]) for name, t in tensors.items()
                  if name.startswith(f"{branch}.layers.") and name.endswith(".gate_logit")}
        layers = sorted(logits)
        open_ = [i for i in layers if logits[i] > 0]
        total += len(open_)
        values = np.array([logits[i] for i in layers])
        print(f"{branch}: {len(open_)} of {len(layers)} open (layers {open_}); logits from {values.min():+.5f} to "
              f"{values.max():+.5f}, median |logit| {np.median(np.abs(values)):.5f}")
    print(f"open at evaluation: {total} of {2 * len(layers)} gates")


if __name__ == "__main__":
    main()
