"""One process of the 2-process CPU test (run by test_distributed.py; not a test itself).

Usage:
  python dist_worker.py <host:port> <num_processes> <process_id> <cpu devices> [ckpt_dir]
  python dist_worker.py env [ckpt_dir]     # everything from LCF_* environment variables
Prints one line: RESULT {json}.
"""
import json
import sys

from lcf_jax.train import distributed


def main():
    if sys.argv[1] == "env":
        assert distributed.initialize(initialization_timeout=60)
        ckpt_dir = sys.argv[2] if len(sys.argv) > 2 else None
    else:
        coord, nproc, pid, ndev = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
        assert distributed.initialize(coord, nproc, pid, num_cpu_devices=ndev, initialization_timeout=60)
        ckpt_dir = sys.argv[5] if len(sys.argv) > 5 else None
    assert distributed.initialize()  # idempotent

    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import NamedSharding, PartitionSpec as P

    info = distributed.process_info()
    mesh = jax.make_mesh((len(info.global_devices),), ("x",), devices=info.global_devices)
    sharding = NamedSharding(mesh, P("x"))
    global_shape = (len(info.global_devices) * 2, 3)
    full = np.arange(np.prod(global_shape), dtype=np.float32).reshape(global_shape)
    # Each process supplies only the shards of its own devices.
    arr = jax.make_array_from_callback(global_shape, sharding, lambda idx: full[idx])

    total = jax.jit(jnp.sum, out_shardings=NamedSharding(mesh, P()))(arr)

    @jax.jit
    def per_device_psum(x):
        return jax.shard_map(lambda b: jax.lax.psum(jnp.sum(b).reshape(1), "x"),
                             mesh=mesh, in_specs=P("x"), out_specs=P("x"))(x)

    ps = per_device_psum(arr)  # one value per device, each the global sum
    result = {
        "process_index": info.process_index,
        "process_count": info.process_count,
        "n_local": len(info.local_devices),
        "n_global": len(info.global_devices),
        "sum": float(np.asarray(total.addressable_data(0))),
        "psum": [float(np.asarray(s.data)[0]) for s in ps.addressable_shards],
        "expected": float(full.sum()),
    }

    if ckpt_dir:  # multi-process save + restore of a globally sharded array
        from lcf_jax.train.ckpt import Checkpointer
        params = {"w": arr}
        opt_state = {"m": arr * 0 + 1}
        with Checkpointer(ckpt_dir, keep_last=2) as ck:
            ck.save(1, params, opt_state, data_state={"pos": 5}, config={"n": 2})
            ck.wait()
            target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                                  (params, opt_state))
            r = ck.restore_latest(*target)
        ok = all(np.array_equal(np.asarray(a.data), np.asarray(b.data))
                 for a, b in zip(r.params["w"].addressable_shards, arr.addressable_shards))
        result["ckpt"] = {"step": r.step, "shards_equal": ok, "sharding_same": r.params["w"].sharding == sharding,
                          "data_state": r.data_state}
    print("RESULT " + json.dumps(result), flush=True)
    jax.distributed.shutdown()


if __name__ == "__main__":
    main()
