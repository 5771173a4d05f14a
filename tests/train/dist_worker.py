"""One process of the 2-process CPU test (run by test_distributed.py; not a test itself).

Usage: python dist_worker.py <coordinator host:port> <num_processes> <process_id> <cpu devices per process>
Prints one line: RESULT {json}.
"""
import json
import sys

from lcf_jax.train import distributed


def main():
    coord, nproc, pid, ndev = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    assert distributed.initialize(coord, nproc, pid, num_cpu_devices=ndev, initialization_timeout=60)
    assert distributed.initialize(coord, nproc, pid)  # idempotent

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
        return jax.shard_map(lambda b: jax.lax.psum(jnp.sum(b, keepdims=True), "x"),
                             mesh=mesh, in_specs=P("x"), out_specs=P("x"))(x)

    ps = per_device_psum(arr)  # one value per device, each the global sum
    local_ps = [float(np.asarray(s.data)[0]) for s in ps.addressable_shards]
    print("RESULT " + json.dumps({
        "process_index": info.process_index,
        "process_count": info.process_count,
        "n_local": len(info.local_devices),
        "n_global": len(info.global_devices),
        "sum": float(np.asarray(total.addressable_data(0))),
        "psum": local_ps,
        "expected": float(full.sum()),
    }), flush=True)
    jax.distributed.shutdown()


if __name__ == "__main__":
    main()
