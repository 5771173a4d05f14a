import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from adapter_tiny_models import random_alignment, random_cache, random_like, tiny

from lcf_jax.adapters.c2c import C2CConfig, apply_c2c, c2c_layers, c2c_temperature, init_c2c

SMALL = C2CConfig(hidden_dim=16, intermediate_dim=24, num_layers=4)


def _setup(s_fam="llama", r_fam="qwen3", cfg=SMALL, seed=0, real_init=False):
    s, r = tiny(s_fam), tiny(r_fam)
    sc = random_cache(s, [5, 3], 6, seed)
    rc = random_cache(r, [4, 6], 7, seed + 1)
    al = random_alignment(sc.mask, rc.mask, seed + 2)
    if real_init:
        p = init_c2c(jax.random.key(seed), cfg, s, r)
    else:  # numpy-random weights of the right shapes (no init compile)
        p = random_like(jax.eval_shape(lambda k: init_c2c(k, cfg, s, r), jax.random.key(0)), seed, 0.3)
    return s, r, sc, rc, al, p


def _with_gate(p, value):
    p = jax.tree.map(lambda x: x, p)
    for b in ("key", "value"):
        p[b]["gate_logit"] = jnp.full_like(p[b]["gate_logit"], value)
    return p


def _np_c2c_layer(p, src_k, tgt_k, eps=1e-6):
    """numpy transcription of C2CProjector.forward (eval) for one branch, torch layouts:
    src (B, Hs, N, Ds), tgt (B, Ht, N, Dt)."""
    from math import erf, sqrt
    gelu = np.vectorize(lambda x: 0.5 * x * (1 + erf(x / sqrt(2))))
    B, Hs, N, Ds = src_k.shape
    _, Ht, _, Dt = tgt_k.shape
    sf = src_k.transpose(0, 2, 1, 3).reshape(B, N, Hs * Ds)
    tf = tgt_k.transpose(0, 2, 1, 3).reshape(B, N, Ht * Dt)
    x = np.concatenate([sf, tf], -1) @ p["in_w"] + p["in_b"]

    def ffn(q, h):
        y = h / np.sqrt(np.mean(h * h, -1, keepdims=True) + eps) * q["norm"]
        return h + gelu(y @ q["w1"]) @ q["w2"]

    h = ffn(p["mlp1"], x)
    hp = h
    for i in range(p["proj_mlp2"]["w1"].shape[0]):
        hp = ffn({k: v[i] for k, v in p["proj_mlp2"].items()}, hp)
    proj = (hp @ p["proj_out_w"] + p["proj_out_b"]).reshape(B, N, Ht, Dt).transpose(0, 2, 1, 3)
    scal = ffn(p["scalar_mlp2"], h) @ p["scalar_head_w"] + p["scalar_head_b"]   # (B, N, Ht)
    scal = scal.transpose(0, 2, 1)[..., None]
    gate = float(p["gate_logit"] > 0)
    return tgt_k + gate * (1 / (1 + np.exp(-scal))) * proj


def test_eval_gate_is_hard():
    s, r, sc, rc, al, p = _setup(real_init=True)
    assert float(jnp.abs(p["key"]["gate_logit"]).max()) == 0.0 and float(p["key"]["mlp1"]["norm"].min()) == 1.0
    bound = 1 / np.sqrt(s.kv_width + r.kv_width)  # PyTorch nn.Linear init
    assert float(jnp.abs(p["key"]["in_w"]).max()) <= bound
    apply = jax.jit(functools.partial(apply_c2c, cfg=SMALL, sharer_cfg=s, receiver_cfg=r, train=False))
    out0 = apply(p, sc, rc, al)  # initial logit 0 -> gate 0 at eval: exact no-op
    np.testing.assert_array_equal(out0.keys, rc.keys)
    np.testing.assert_array_equal(out0.values, rc.values)
    np.testing.assert_array_equal(apply(_with_gate(p, -0.3), sc, rc, al).keys, rc.keys)
    a, b = apply(_with_gate(p, 0.3), sc, rc, al), apply(_with_gate(p, 7.0), sc, rc, al)
    np.testing.assert_array_equal(a.keys, b.keys)  # any positive logit -> gate exactly 1
    assert not np.allclose(a.keys, rc.keys)


def test_matches_numpy_transcription_of_c2c():
    s, r, sc, rc, al, p = _setup("gemma3", "qwen2")
    p = _with_gate(p, 1.0)
    out = apply_c2c(p, sc, rc, al, cfg=SMALL, sharer_cfg=s, receiver_cfg=r, train=False)
    layers, sources = c2c_layers(SMALL, s, r)
    al_np = np.maximum(np.asarray(al), 0)
    valid = np.asarray(rc.mask) & (np.asarray(al) >= 0)
    for j, (rl, sl) in enumerate(zip(layers, sources)):
        for branch, s_all, r_all, o_all in (("key", sc.keys, rc.keys, out.keys), ("value", sc.values, rc.values, out.values)):
            src = np.stack([np.asarray(s_all)[sl, b][:, al_np[b]] for b in range(2)])   # (B, Hs, N, Ds)
            tgt = np.asarray(r_all)[rl]
            lp = jax.tree.map(lambda x: np.asarray(x[j], np.float64), p[branch])
            want = _np_c2c_layer(lp, src.astype(np.float64), tgt.astype(np.float64))
            want = np.where(valid[:, None, :, None], want, tgt)
            np.testing.assert_allclose(np.asarray(o_all)[rl], want, rtol=2e-4, atol=2e-4)


def test_train_mode_gumbel_and_gradients():
    s, r, sc, rc, al, p = _setup("qwen2", "gemma3")

    def loss(params, rng, temp):
        out = apply_c2c(params, sc, rc, al, cfg=SMALL, sharer_cfg=s, receiver_cfg=r, train=True,
                        temperature=temp, rng=rng)
        return jnp.sum(out.keys ** 2) + jnp.sum(out.values ** 2)

    f = jax.jit(jax.value_and_grad(loss))
    l1, g = f(p, jax.random.key(1), 1.0)
    l2, _ = f(p, jax.random.key(2), 1.0)
    assert float(l1) != float(l2)  # Gumbel noise and dropout depend on rng
    for path, x in jax.tree_util.tree_leaves_with_path(g):
        assert bool(jnp.isfinite(x).all()) and float(jnp.abs(x).max()) > 0, jax.tree_util.keystr(path)
    with pytest.raises(ValueError, match="needs rng"):
        apply_c2c(p, sc, rc, al, cfg=SMALL, sharer_cfg=s, receiver_cfg=r, train=True)


def test_temperature_schedule():
    cfg = C2CConfig()
    assert float(c2c_temperature(cfg, 0)) == pytest.approx(1.0)
    assert float(c2c_temperature(cfg, cfg.anneal_steps)) == pytest.approx(0.001, rel=1e-4)
    assert float(c2c_temperature(cfg, 10 * cfg.anneal_steps)) == pytest.approx(0.001, rel=1e-4)
    mid = float(c2c_temperature(cfg, cfg.anneal_steps // 2))
    assert 0.001 < mid < 1.0 and mid == pytest.approx(0.001 ** (964 / 1929), rel=1e-4)


def test_c2c_gates_script_counts_the_gates_open_at_evaluation(tmp_path):
    """scripts/c2c_gates.py on an export whose key gate is open on its last layer only (logit > 0 opens a gate)."""
    import subprocess
    import sys
    from pathlib import Path

    from lcf_jax.adapters.export_jax import export_adapter

    s, r, *_, p = _setup()
    p = _with_gate(p, -0.5)
    logits = np.full(p["key"]["gate_logit"].shape, -0.5, np.float32)
    logits[-1] = 0.25
    p["key"]["gate_logit"] = jnp.asarray(logits)
    export_adapter(tmp_path / "c2c", p, SMALL, s, r, dtype="bfloat16")
    script = Path(__file__).resolve().parents[2] / "scripts" / "c2c_gates.py"
    out = subprocess.run([sys.executable, str(script), str(tmp_path / "c2c")], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    n = len(c2c_layers(SMALL, s, r)[0])
    assert f"key: 1 of {n} open (layers [{n - 1}])" in out.stdout
    assert f"value: 0 of {n} open (layers [])" in out.stdout
    assert out.stdout.strip().endswith(f"open at evaluation: 1 of {2 * n} gates")
