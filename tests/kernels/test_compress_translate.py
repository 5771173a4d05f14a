"""Tests of the fused compress-translate kernel (CPU: interpret modes, cross-platform lowering)."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export

from lcf_jax.kernels import compress_translate as ct_mod
from lcf_jax.kernels.compress_translate import compress_translate
from lcf_jax.kernels.compress_translate import compress_translate_reference as _reference
from lcf_jax.models.layers import rope_cos_sin

HS, DS, HR, DR, R = 2, 16, 3, 8, 24
# Jitted: one compile per shape instead of op-by-op dispatch (keeps the file fast on 2 cores).
compress_translate_reference = jax.jit(_reference, static_argnames=("activation", "eps"))
ARG_NAMES = ("sharer_k", "sharer_v", "sharer_cos", "sharer_sin", "recv_k", "recv_v", "recv_cos",
             "recv_sin")


def make_inputs(n=37, hs=HS, ds=DS, hr=HR, dr=DR, r=R, *, seed=0, dtype=jnp.float32,
                param_dtype=jnp.float32, gate=0.7, layers=None):
    """Random inputs; `layers` adds a leading layer axis to every array and param."""
    lead = () if layers is None else (layers,)
    ks = iter(jax.random.split(jax.random.PRNGKey(seed), 16))
    nrm = lambda shape, s=1.0: s * jax.random.normal(next(ks), lead + shape)  # noqa: E731
    pos = jnp.arange(n) % 13 + 5                    # sharer and receiver positions differ
    sc, ss = rope_cos_sin(pos, ds, 1e4)
    rc, rs = rope_cos_sin(pos * 2 + 1, dr, 1e6)
    tile = lambda x: jnp.broadcast_to(x, lead + x.shape)  # noqa: E731
    arrays = [nrm((n, hs, ds)).astype(dtype), nrm((n, hs, ds)).astype(dtype), tile(sc), tile(ss),
              nrm((n, hr, dr)).astype(dtype), nrm((n, hr, dr)).astype(dtype), tile(rc), tile(rs)]
    params = dict(w_down=nrm((2 * hs * ds, r), 0.15), b_down=nrm((r,), 0.1),
                  norm=1.0 + nrm((r,), 0.1), w_up=nrm((r, 2 * hr * dr), 0.2),
                  b_up=nrm((2 * hr * dr,), 0.1), head_k=nrm((hr,)), head_v=nrm((hr,)),
                  gate=jnp.full(lead, gate, jnp.float32))
    params = {k: v.astype(param_dtype) for k, v in params.items()}
    return (*arrays, params)


def numpy_compress_translate(sk, sv, sc, ss, rk, rv, rc, rs, p, activation="silu", eps=1e-6):
    """Independent float64 numpy implementation of the math (not derived from the module)."""
    f = lambda x: np.asarray(jnp.asarray(x, jnp.float32), np.float64)  # noqa: E731
    sk, sv, sc, ss, rk, rv, rc, rs = map(f, (sk, sv, sc, ss, rk, rv, rc, rs))
    p = {k: f(v) for k, v in p.items()}

    def rot(x):
        h = x.shape[-1] // 2
        return np.concatenate([-x[..., h:], x[..., :h]], axis=-1)

    n, hr, dr = rk.shape
    k_s = sk * sc[:, None] - rot(sk) * ss[:, None]
    x = np.concatenate([k_s.reshape(n, -1), sv.reshape(n, -1)], axis=-1)
    z = x @ p["w_down"] + p["b_down"]
    z = z / np.sqrt(np.mean(z * z, axis=-1, keepdims=True) + eps) * p["norm"]
    if activation == "silu":
        z = z / (1.0 + np.exp(-z))
    else:
        z = 0.5 * z * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (z + 0.044715 * z ** 3)))
    y = z @ p["w_up"] + p["b_up"]
    kh = y[:, :hr * dr].reshape(n, hr, dr)
    vh = y[:, hr * dr:].reshape(n, hr, dr)
    kh = kh * rc[:, None] + rot(kh) * rs[:, None]
    g = p["gate"]
    return rk + g * p["head_k"][None, :, None] * kh, rv + g * p["head_v"][None, :, None] * vh


def assert_close(got, want, atol, rtol=0.0):
    for g, w in zip(got, want):
        np.testing.assert_allclose(np.asarray(jnp.asarray(g, jnp.float32)),
                                   np.asarray(jnp.asarray(w, jnp.float32)), atol=atol, rtol=rtol)


@pytest.fixture(scope="module")
def f32_inputs():
    return make_inputs()


@pytest.mark.parametrize("activation", ["silu", "gelu_tanh"])
def test_reference_matches_numpy(activation):
    args = make_inputs(seed=1)
    want = numpy_compress_translate(*args, activation=activation)
    assert_close(compress_translate_reference(*args, activation=activation), want, atol=2e-5)


@pytest.mark.parametrize("activation", ["silu", "gelu_tanh"])
def test_interpret_kernel_matches_reference_and_numpy(f32_inputs, activation):
    got = compress_translate(*f32_inputs, activation=activation, block_tokens=16,
                             backend="interpret")
    assert got[0].shape == (37, HR, DR) and got[0].dtype == jnp.float32
    ref = compress_translate_reference(*f32_inputs, activation=activation)
    assert_close(got, ref, atol=1e-5)
    assert_close(got, numpy_compress_translate(*f32_inputs, activation=activation), atol=2e-5)


def test_interpret_tpu_kernel_matches_reference(f32_inputs):
    got = compress_translate(*f32_inputs, block_tokens=16, backend="interpret_tpu")
    assert_close(got, compress_translate_reference(*f32_inputs), atol=1e-5)
    # default block (smallest multiple of 16 covering N=37 -> 48, one grid step)
    got = compress_translate(*f32_inputs, backend="interpret_tpu")
    assert_close(got, numpy_compress_translate(*f32_inputs), atol=2e-5)


def test_chunked_gpu_layout(f32_inputs):
    """The GPU layout's column loop (2 chunks over Hs*Ds=32 and over padded Hr*Dr=32)."""
    layout = ct_mod._Layout(pow2_features=True, chunk=16, block_multiple=16, block_pow2=True,
                            default_block=64)
    *arrays, params = f32_inputs
    got = ct_mod._pallas_forward(*arrays, params, activation="silu", eps=1e-6, block_tokens=16,
                                 layout=layout, target="gpu", interpret=True)
    assert_close(got, compress_translate_reference(*f32_inputs), atol=1e-5)


@pytest.mark.parametrize("backend", ["interpret", "interpret_tpu"])
@pytest.mark.parametrize("param_dtype", [jnp.float32, jnp.bfloat16])
def test_bf16(backend, param_dtype):
    args = make_inputs(dtype=jnp.bfloat16, param_dtype=param_dtype, seed=2)
    got = compress_translate(*args, block_tokens=16, backend=backend)
    assert got[0].dtype == jnp.bfloat16 and got[1].dtype == jnp.bfloat16
    assert_close(got, compress_translate_reference(*args), atol=6e-2, rtol=2e-2)
    assert_close(got, numpy_compress_translate(*args), atol=1e-1, rtol=3e-2)


def test_tiny_n_default_block():
    args = make_inputs(n=5, seed=3)
    for backend in ("interpret", "interpret_tpu"):
        assert_close(compress_translate(*args, backend=backend),
                     compress_translate_reference(*args), atol=1e-5)


def test_auto_on_cpu_is_reference(f32_inputs):
    if jax.default_backend() != "cpu":
        pytest.skip("CPU-only check")
    got = compress_translate(*f32_inputs)
    for g, w in zip(got, compress_translate(*f32_inputs, backend="xla")):
        np.testing.assert_array_equal(np.asarray(g), np.asarray(w))
    assert_close(got, compress_translate_reference(*f32_inputs), atol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("backend", ["interpret", "interpret_tpu", "reference"])
def test_gate_zero_returns_receiver_exactly(dtype, backend):
    args = make_inputs(dtype=dtype, gate=0.0, seed=4)
    k_out, v_out = compress_translate(*args, block_tokens=16, backend=backend)
    np.testing.assert_array_equal(np.asarray(k_out), np.asarray(args[4]))
    np.testing.assert_array_equal(np.asarray(v_out), np.asarray(args[5]))


def _loss(fn, arrays, params, cot):
    k_out, v_out = fn(*arrays, params)
    return jnp.sum(k_out * cot[0]) + jnp.sum(v_out * cot[1])


def test_gradients_match_reference(f32_inputs):
    *arrays, params = f32_inputs
    cot = jax.random.normal(jax.random.PRNGKey(9), (2, 37, HR, DR))
    kern = functools.partial(compress_translate, block_tokens=16, backend="interpret")
    grad = jax.grad(_loss, argnums=(1, 2))
    g_kernel = grad(kern, arrays, params, cot)
    g_ref = grad(compress_translate_reference, arrays, params, cot)
    for name, a, b in zip(ARG_NAMES, g_kernel[0], g_ref[0]):
        assert a.shape == b.shape, name
        np.testing.assert_allclose(a, b, atol=1e-5, err_msg=name)
        assert float(jnp.max(jnp.abs(b))) > 0, name       # a real gradient flows
    for name in params:
        np.testing.assert_allclose(g_kernel[1][name], g_ref[1][name], atol=1e-5, err_msg=name)
        assert float(jnp.max(jnp.abs(g_ref[1][name]))) > 0, name


@pytest.mark.parametrize("backend", ["interpret", "interpret_tpu"])
def test_vmap_over_layers(backend):
    layers = 2
    stacked = make_inputs(n=20, layers=layers, seed=5)
    fn = jax.vmap(functools.partial(compress_translate, block_tokens=16, backend=backend))
    got = fn(*stacked)
    assert got[0].shape == (layers, 20, HR, DR)
    for layer in range(layers):
        one = jax.tree.map(lambda x: x[layer], stacked)
        assert_close([g[layer] for g in got], compress_translate_reference(*one), atol=1e-5)


def test_grad_under_vmap():
    stacked = make_inputs(n=20, layers=2, seed=6)
    *arrays, params = stacked
    cot = jax.random.normal(jax.random.PRNGKey(7), (2, 2, 20, HR, DR))

    def loss(fn):
        def f(arrays, params):
            k_out, v_out = jax.vmap(fn)(*arrays, params)
            return jnp.sum(k_out * cot[0]) + jnp.sum(v_out * cot[1])
        return jax.grad(f, argnums=(0, 1))(arrays, params)

    g_kernel = loss(functools.partial(compress_translate, block_tokens=16, backend="interpret"))
    g_ref = loss(compress_translate_reference)
    for a, b in zip(jax.tree.leaves(g_kernel), jax.tree.leaves(g_ref)):
        np.testing.assert_allclose(a, b, atol=1e-5)


def _bad(args, index=None, key=None, shape=None):
    args = list(args)
    if key is not None:
        params = dict(args[8])
        params[key] = jnp.zeros(shape, jnp.float32)
        args[8] = params
    else:
        args[index] = jnp.zeros(shape, args[index].dtype)
    return args


@pytest.mark.parametrize("index,key,shape,match", [
    (1, None, (37, HS, DS + 2), r"sharer_v has shape \(37, 2, 18\), expected \(37, 2, 16\)"),
    (2, None, (37, DS + 2), "sharer_cos"),
    (3, None, (36, DS), "sharer_sin"),
    (4, None, (36, HR, DR), r"recv_k has shape \(36, 3, 8\), expected \(37, 3, 8\)"),
    (5, None, (37, HR, DR + 2), "recv_v"),
    (6, None, (37, DR + 2), "recv_cos"),
    (7, None, (37, 4), "recv_sin"),
    (None, "w_down", (2 * HS * DS + 1, R), r"params\['w_down'\] has shape \(65, 24\)"),
    (None, "b_down", (R + 1,), r"params\['b_down'\]"),
    (None, "norm", (R - 1,), r"params\['norm'\]"),
    (None, "w_up", (R, 2 * HR * DR + 2), r"params\['w_up'\]"),
    (None, "b_up", (2 * HR * DR + 2,), r"params\['b_up'\]"),
    (None, "head_k", (HR + 1,), r"params\['head_k'\]"),
    (None, "head_v", (1, HR), r"params\['head_v'\]"),
    (None, "gate", (1,), r"params\['gate'\]"),
])
def test_bad_shapes_raise(f32_inputs, index, key, shape, match):
    args = _bad(f32_inputs, index, key, shape)
    with pytest.raises(ValueError, match=match):
        compress_translate(*args, backend="interpret")


def test_bad_arguments_raise(f32_inputs):
    args = list(f32_inputs)
    with pytest.raises(ValueError, match="sharer_k must be"):
        compress_translate(args[0][0], *args[1:])
    with pytest.raises(ValueError, match="sharer_v dtype"):
        compress_translate(args[0], args[1].astype(jnp.bfloat16), *args[2:])
    with pytest.raises(ValueError, match="missing"):
        compress_translate(*args[:8], {k: v for k, v in args[8].items() if k != "gate"})
    with pytest.raises(ValueError, match="block_tokens"):
        compress_translate(*args, block_tokens=24, backend="interpret")   # not a power of 2
    with pytest.raises(ValueError, match="block_tokens"):
        compress_translate(*args, block_tokens=12, backend="interpret_tpu")
    with pytest.raises(ValueError, match="backend"):
        compress_translate(*args, backend="cuda")
    with pytest.raises(ValueError, match="activation"):
        compress_translate(*args, activation="relu")


@pytest.mark.parametrize("platform,backend", [("cuda", "pallas_gpu"), ("tpu", "pallas_tpu")])
@pytest.mark.parametrize("dims", [(3, 64, 1, 256, 256), (1, 256, 3, 64, 256)])
def test_hardware_kernels_lower(platform, backend, dims):
    """Cross-lowers the real Triton / Mosaic kernels (vmapped over 2 layers) for the project's
    model pairs: catches unsupported ops and illegal block shapes without the hardware."""
    hs, ds, hr, dr, r = dims
    S = jax.ShapeDtypeStruct
    stack = lambda *shape, dt=jnp.float32: S((2, *shape), dt)  # noqa: E731
    n, bf = 512, jnp.bfloat16
    params = dict(w_down=stack(2 * hs * ds, r), b_down=stack(r), norm=stack(r),
                  w_up=stack(r, 2 * hr * dr), b_up=stack(2 * hr * dr), head_k=stack(hr),
                  head_v=stack(hr), gate=stack())
    args = (stack(n, hs, ds, dt=bf), stack(n, hs, ds, dt=bf), stack(n, ds), stack(n, ds),
            stack(n, hr, dr, dt=bf), stack(n, hr, dr, dt=bf), stack(n, dr), stack(n, dr), params)
    fn = jax.jit(jax.vmap(functools.partial(compress_translate, backend=backend)))
    checks = [export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")]
    exported = export.export(fn, platforms=[platform], disabled_checks=checks)(*args)
    text = exported.mlir_module()
    assert ("triton" in text) if platform == "cuda" else ("tpu_custom_call" in text)
