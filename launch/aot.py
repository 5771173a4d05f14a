"""Ahead-of-time lowering + compile of the train step with abstract inputs (run in its own process).

    python -m launch.aot --mesh-data=32 --mesh-model=1 --batch=256 [--tpu-topology=v5e:4x8 --chip-config=default] \
        --config=configs/X.py [--config.section.key=value ...]

Prints one line `AOT_RESULT {json}`. Nothing is allocated: the frozen models are
`jax.ShapeDtypeStruct`s from `transformer.param_shapes`, the adapter/optimizer state comes from
`jax.eval_shape`, the batch is the `SyntheticBatches` layout at the config's lengths
(data.max_sharer_len, data.max_prompt_len + data.max_target_len).

The run's real `run_setup.build(cfg)` is reused (mesh, Setup, optimizer, shardings) with
`registry.load_any` swapped for an abstract loader, so this lowers the same step the loop runs.

Target: with --tpu-topology, first `jax.experimental.topologies.get_topology_desc(...)` (needs libtpu;
compiles for the real TPU). Without libtpu (or when that fails) it compiles on a CPU mesh of
mesh-data x mesh-model virtual CPU devices (`jax_num_cpu_devices`, set before JAX starts), which
checks sharding/lowering and gives a per-device memory estimate from the CPU compiler.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
import traceback


def _parse(argv):
    p = argparse.ArgumentParser(prog="python -m launch.aot")
    p.add_argument("--mesh-data", type=int, required=True)
    p.add_argument("--mesh-model", type=int, required=True)
    p.add_argument("--batch", type=int, required=True, help="global batch to compile for")
    p.add_argument("--tpu-topology", default="", help="e.g. v5e:4x8 (tried first; needs libtpu)")
    p.add_argument("--chip-config", default="default")
    p.add_argument("--cpu-fallback", type=int, default=1, help="compile on a CPU mesh when TPU AOT is unavailable")
    return p.parse_known_args(argv)


def _abstract_models():
    """A registry.load_any replacement: (ModelConfig, tree of float32 ShapeDtypeStructs)."""
    import jax
    import numpy as np

    from lcf_jax.models import registry, transformer

    def load(name: str, seed: int = 0):
        if name in registry.TINY_CONFIGS:
            cfg = registry.TINY_CONFIGS[name]
        elif name in registry.PRESET_CONFIGS:
            cfg = registry.PRESET_CONFIGS[name]
        else:
            raise KeyError(f"model {name!r} has no config here (presets: {sorted(registry.PRESET_CONFIGS)}, "
                           f"tiny: {sorted(registry.TINY_CONFIGS)})")
        shapes = transformer.param_shapes(cfg)
        return cfg, jax.tree.map(lambda s: jax.ShapeDtypeStruct(s, np.float32), shapes,
                                 is_leaf=lambda x: isinstance(x, tuple))
    return load


@contextlib.contextmanager
def _patched(obj, name, value):
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


def _mem(compiled) -> dict | None:
    try:
        m = compiled.memory_analysis()
    except Exception as e:  # noqa: BLE001 - backend-specific
        return {"error": f"{type(e).__name__}: {e}"}
    if m is None:
        return None
    keys = ("argument_size_in_bytes", "output_size_in_bytes", "alias_size_in_bytes", "temp_size_in_bytes",
            "generated_code_size_in_bytes")
    out = {k: int(getattr(m, k)) for k in keys if hasattr(m, k)}
    if all(k in out for k in keys[:4]):
        out["peak_estimate_bytes"] = (out["argument_size_in_bytes"] + out["output_size_in_bytes"]
                                      - out["alias_size_in_bytes"] + out["temp_size_in_bytes"])
    return out


def _lower_compile(cfg, batch_size: int, devices) -> dict:
    """Lower + compile the loop's jitted train step on `devices` (a list) with abstract inputs."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from lcf_jax.adapters import ADAPTER_KINDS
    from lcf_jax.data.batches import leaves
    from lcf_jax.models import registry
    from lcf_jax.train import feed as feed_lib, run_setup, sharding
    from lcf_jax.train.step import TrainState, jit_train_step

    t0 = time.perf_counter()
    make_mesh = sharding.make_mesh
    with _patched(registry, "load_any", _abstract_models()), \
            _patched(sharding, "make_mesh", lambda d=-1, m=1, devices_=None: make_mesh(d, m, devices)):
        b = run_setup.build(cfg)
    setup, mesh = b.setup, b.mesh
    sds = lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype)  # noqa: E731
    params = jax.tree.map(sds, b.params)
    opt = jax.eval_shape(b.optimizer.init, params)
    rng = jax.eval_shape(lambda: jax.random.PRNGKey(0))
    state = TrainState(jax.ShapeDtypeStruct((), jnp.int32), params, opt, rng)
    frozen = b.frozen
    d = cfg.data
    synth = feed_lib.SyntheticBatches(ADAPTER_KINDS[setup.kind].shared_context, setup.sharer, setup.receiver,
                                      batch_size, d.seed,
                                      sharer_len=d.max_sharer_len, prompt_len=d.max_prompt_len,
                                      target_len=d.max_target_len, context_len=d.max_sharer_len)
    batch_np = next(synth)
    batch = jax.tree.map(sds, batch_np)
    batch_sh = sharding.batch_sharding(batch_np, mesh)
    step_fn = jit_train_step(setup, b.optimizer, mesh, b.state_sh, b.frozen_sh, batch_sh)
    t_build = time.perf_counter() - t0

    t0 = time.perf_counter()
    lowered = step_fn.lower(state, frozen, batch)
    t_lower = time.perf_counter() - t0
    t0 = time.perf_counter()
    compiled = lowered.compile()
    t_compile = time.perf_counter() - t0

    n_params = lambda tree: int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))  # noqa: E731
    flops = None
    try:
        ca = compiled.cost_analysis()
        ca = ca[0] if isinstance(ca, (list, tuple)) else ca
        flops = float(ca.get("flops")) if ca and ca.get("flops") is not None else None
    except Exception:  # noqa: BLE001 - optional
        pass
    return {
        "platform": devices[0].platform,
        "mesh": {k: int(v) for k, v in mesh.shape.items()},
        "global_batch": batch_size,
        "batch_shapes": {k: list(v.shape) for k, v in leaves(batch).items()},
        "adapter_params": n_params(params),
        "frozen_params": n_params(frozen),
        "seconds": {"build": round(t_build, 2), "lower": round(t_lower, 2), "compile": round(t_compile, 2)},
        "memory_per_device": _mem(compiled),
        "flops_per_device": flops,
    }


def _tpu_devices(topology_name: str, chip_config: str, n: int):
    from jax.experimental import topologies

    try:
        topo = topologies.get_topology_desc(topology_name, "tpu")
    except TypeError:
        topo = topologies.get_topology_desc(platform="tpu", topology_name=topology_name,
                                            chip_config_name=chip_config, chips_per_host_bounds=(2, 2, 1),
                                            num_slices=1)
    devices = list(topo.devices)
    if len(devices) != n:
        raise RuntimeError(f"topology {topology_name} has {len(devices)} devices, the mesh needs {n}")
    return devices


def main(argv=None) -> int:
    args, rest = _parse(list(sys.argv[1:] if argv is None else argv))
    n = args.mesh_data * args.mesh_model
    import jax
    jax.config.update("jax_num_cpu_devices", n)  # before any backend starts
    from lcf_jax.train import config as config_lib

    cfg = config_lib.parse_argv(rest)
    cfg.unlock()
    cfg.mesh.data, cfg.mesh.model, cfg.data.batch_size = args.mesh_data, args.mesh_model, args.batch
    if "num_devices" in cfg.mesh:
        cfg.mesh.num_devices = 0  # this process has exactly mesh-data x mesh-model devices
    cfg.lock()
    result: dict = {"tpu": None, "tpu_error": None, "cpu": None, "cpu_error": None}
    if args.tpu_topology:
        try:
            devices = _tpu_devices(args.tpu_topology, args.chip_config, n)
            result["tpu"] = _lower_compile(cfg, args.batch, devices)
        except Exception as e:  # noqa: BLE001 - reported, then the CPU fallback
            result["tpu_error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    if result["tpu"] is None and args.cpu_fallback:
        try:
            devices = jax.devices("cpu")
            if len(devices) != n:
                raise RuntimeError(f"got {len(devices)} CPU devices, wanted {n} (jax_num_cpu_devices not applied)")
            result["cpu"] = _lower_compile(cfg, args.batch, devices)
        except Exception as e:  # noqa: BLE001 - the parent reports it
            result["cpu_error"] = f"{type(e).__name__}: {e}"
            result["cpu_traceback"] = traceback.format_exc()[-4000:]
    print("AOT_RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
