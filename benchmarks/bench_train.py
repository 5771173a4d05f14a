"""Train-step throughput, same run: precomputed vs on-the-fly sharer caches; 1 vs 8 CPU devices.

    .venv/bin/python benchmarks/bench_train.py [--pair bundled|tiny] [--steps N]

Each configuration runs in a subprocess (the device count is fixed when JAX starts). Timing covers
`steps` jitted train steps after one warm-up step (compilation excluded); for the precomputed case
the sharer caches are computed before the clock starts, as they would be when stored once per data
set. Batches are synthetic with the real models' shapes.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

PAIRS = {"bundled": ("smollm2-135m-instruct", "gemma3-270m"), "tiny": ("tiny-llama", "tiny-gemma3")}


def _child(pair: str, sharer_cache: str, devices: int, steps: int, batch: int, sharer_len: int) -> dict:
    import jax
    import numpy as np

    from lcf_jax.train import config as config_lib, run_setup, sharding
    from lcf_jax.data.batches import SharerKV
    from lcf_jax.train.feed import SyntheticBatches
    from lcf_jax.train.step import init_state, jit_train_step

    s, r = PAIRS[pair]
    cfg = config_lib.pair_config(s, r, "lcfx", data={"task": "synthetic", "batch_size": batch},
                                 mesh={"data": devices, "model": 1, "num_devices": devices})
    b = run_setup.build(cfg)
    setup, mesh = b.setup, b.mesh
    feed = SyntheticBatches(False, setup.sharer, setup.receiver, batch, 0, sharer_len=sharer_len, prompt_len=16,
                            target_len=16)
    batches = [next(feed) for _ in range(steps + 1)]
    if sharer_cache == "precomputed":
        compute = run_setup.sharer_cache_fn(setup, b.frozen[0])
        batches = [bt._replace(sharer_kv=SharerKV(*(np.asarray(x) for x in compute(bt.sharer)))) for bt in batches]
    batch_sh = sharding.batch_sharding(batches[0], mesh)
    step_fn = jit_train_step(setup, b.optimizer, mesh, b.state_sh, b.frozen_sh, batch_sh)
    state = sharding.put_global(init_state(b.params, b.optimizer, 0), b.state_sh)
    frozen = sharding.put_global(b.frozen, b.frozen_sh)
    state, m = step_fn(state, frozen, sharding.put_global(batches[0], batch_sh))
    jax.block_until_ready(m)
    t = time.perf_counter()
    for bt in batches[1:]:
        state, m = step_fn(state, frozen, sharding.put_global(bt, batch_sh))
    jax.block_until_ready(m)
    dt = time.perf_counter() - t
    return {"examples_per_s": steps * batch / dt, "devices": len(jax.devices())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pair", choices=sorted(PAIRS), default="bundled")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--sharer-len", type=int, default=128)
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(_child(args.pair, args.child[0], int(args.child[1]), args.steps, args.batch, args.sharer_len)))
        return
    results = {}
    for mode, devices in [("on_the_fly", 1), ("precomputed", 1), ("on_the_fly", 8)]:
        env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
        cmd = [sys.executable, __file__, "--pair", args.pair, "--steps", str(args.steps), "--batch", str(args.batch),
               "--sharer-len", str(args.sharer_len), "--child", mode, str(devices)]
        res = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if res.returncode:
            sys.exit(f"{mode}/{devices} failed:\n{res.stderr[-3000:]}")
        results[(mode, devices)] = json.loads(res.stdout.strip().splitlines()[-1])["examples_per_s"]
    base = results[("on_the_fly", 1)]
    print(f"# bench_train: LCF-X, {args.pair} pair ({'/'.join(PAIRS[args.pair])}), batch {args.batch}, "
          f"sharer {args.sharer_len} tokens, receiver 32 tokens, {args.steps} timed steps, {os.cpu_count()} CPU cores")
    print("| configuration | examples/s | ratio vs on-the-fly, 1 device |")
    print("|---|---|---|")
    for (mode, devices), v in results.items():
        print(f"| {mode}, {devices} CPU device(s) | {v:.2f} | {v / base:.2f}x |")


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    main()
