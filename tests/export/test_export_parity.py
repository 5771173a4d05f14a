"""The PyTorch adapters reproduce the JAX adapters (float32, within 1e-5) after export -> load, for every
kind: LCF, pruned LCF, LCF-X (plain and conditioned), C2C in evaluation mode."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from export_helpers import np_, perturbed, random_alignment, random_cache, tiny, to_torch_kv

from lcf_jax.adapters import c2c, lcf, lcfx
from lcf_jax.adapters.export_jax import export_adapter, import_adapter
from lcf_jax.adapters.prune import prune_lcf
from lcf_jax.torch import load_adapter

ATOL = 1e-5
PAIRS = [("llama", "gemma3"), ("gemma3", "qwen2"), ("qwen3", "llama")]


def _caches(s, r, seed=0):
    sc = random_cache(s, [9, 6], 10, seed)
    rc = random_cache(r, [7, 8], 8, seed + 1, offset=0)
    al = random_alignment(sc.mask, rc.mask, seed + 2)
    return sc, rc, al


def _export_load(tmp_path, params, cfg, s, r, name="a"):
    out = export_adapter(tmp_path / name, params, cfg, s, r)
    return out, load_adapter(out)


def _close(got, want, what):
    got, want = np_(got), np.asarray(want)
    assert got.shape == want.shape, what
    err = float(np.max(np.abs(got - want))) if got.size else 0.0
    assert err <= ATOL, f"{what}: max |torch - jax| = {err:.3g}"


@pytest.mark.parametrize("pair", PAIRS, ids=lambda p: f"{p[0]}->{p[1]}")
def test_lcf_parity(tmp_path, pair):
    s, r = tiny(pair[0]), tiny(pair[1])
    cfg = lcf.LCFConfig(rank=8, backend="reference", disabled=(r.num_layers - 1,))
    p = perturbed(lcf.init_lcf(jax.random.key(0), cfg, s, r), 1)
    sc, rc, al = _caches(s, r)
    want = lcf.apply_lcf(p, sc, rc, al, cfg=cfg, sharer_cfg=s, receiver_cfg=r)
    _, ad = _export_load(tmp_path, p, cfg, s, r)
    keys, values = ad(to_torch_kv(sc), to_torch_kv(rc), torch.from_numpy(np.array(al)))
    assert float(np.abs(np.asarray(want.keys) - np.asarray(rc.keys)).max()) > 1e-2  # the adapter does something
    _close(keys, want.keys, "lcf keys")
    _close(values, want.values, "lcf values")
    # the runtime enabled mask too
    en = np.ones(len(ad.receiver_layers), np.float32)
    en[0] = 0.0
    want2 = lcf.apply_lcf(p, sc, rc, al, cfg=cfg, sharer_cfg=s, receiver_cfg=r, enabled=jnp.asarray(en))
    k2, _ = ad(to_torch_kv(sc), to_torch_kv(rc), torch.from_numpy(np.array(al)), enabled=torch.from_numpy(en))
    _close(k2, want2.keys, "lcf keys, runtime-disabled layer")


def test_pruned_lcf_parity(tmp_path):
    s, r = tiny("llama"), tiny("gemma3")
    cfg = lcf.LCFConfig(rank=8, backend="reference", layer_map="last_aligned_strict")
    p = perturbed(lcf.init_lcf(jax.random.key(0), cfg, s, r), 2)
    # gate logits: layer 1 weak (dropped), the others kept; cut the rank of one layer only
    g = np.array(p["r8"]["gate_logit"])
    g[:] = [3.0, -6.0][: len(g)] if len(g) == 2 else g
    p["r8"]["gate_logit"] = jnp.asarray(g)
    p2, cfg2, rep = prune_lcf(p, cfg, s, r, gate_threshold=0.1, target_rank=5, method="units")
    assert cfg2.layers is not None and cfg2.ranks is not None
    sc, rc, al = _caches(s, r, 3)
    want = lcf.apply_lcf(p2, sc, rc, al, cfg=cfg2, sharer_cfg=s, receiver_cfg=r)
    out, ad = _export_load(tmp_path, p2, cfg2, s, r)
    import json
    meta = json.loads((out / "adapter.json").read_text())
    assert meta["kind"] == "lcf" and meta["pruned"] and meta["config"]["ranks"] == list(cfg2.ranks)
    keys, values = ad(to_torch_kv(sc), to_torch_kv(rc), torch.from_numpy(np.array(al)))
    _close(keys, want.keys, "pruned lcf keys")
    _close(values, want.values, "pruned lcf values")


def test_pruned_lcf_with_mixed_ranks_parity(tmp_path):
    s, r = tiny("qwen2"), tiny("gemma3")
    cfg = lcf.LCFConfig(rank=8, backend="reference", layers=(0, 2), ranks=(6, 3))
    p = perturbed(lcf.init_lcf(jax.random.key(1), cfg, s, r), 4)
    assert sorted(p) == ["r3", "r6"]
    sc, rc, al = _caches(s, r, 5)
    want = lcf.apply_lcf(p, sc, rc, al, cfg=cfg, sharer_cfg=s, receiver_cfg=r)
    _, ad = _export_load(tmp_path, p, cfg, s, r)
    keys, values = ad(to_torch_kv(sc), to_torch_kv(rc), torch.from_numpy(np.array(al)))
    _close(keys, want.keys, "mixed-rank lcf keys")
    _close(values, want.values, "mixed-rank lcf values")


@pytest.mark.parametrize("conditioned", [False, True], ids=["plain", "conditioned"])
@pytest.mark.parametrize("pair", PAIRS, ids=lambda p: f"{p[0]}->{p[1]}")
def test_lcfx_parity(tmp_path, pair, conditioned):
    s, r = tiny(pair[0]), tiny(pair[1])
    kw = dict(sharer_layers=(s.num_layers - 1,), receiver_layers=(0, r.num_layers - 1), cond_layers=(0,)) \
        if pair[0] == "gemma3" else {}
    cfg = lcfx.LCFXConfig(rank=16, slots=4, pool_heads=2, conditioned=conditioned, **kw)
    p = perturbed(lcfx.init_lcfx(jax.random.key(0), cfg, s, r), 3)
    sc = random_cache(s, [9, 5, 0], 10, 0)              # the third row has no sharer token: zero latents
    rc = random_cache(r, [7, 3, 6], 8, 1)
    lat = lcfx.encode_message(p, sc, rc if conditioned else None, cfg=cfg, sharer_cfg=s, receiver_cfg=r)
    slot_mask = jnp.asarray(np.array([[1, 1, 0, 1], [1, 1, 1, 1], [0, 1, 1, 1]], bool))
    extra = lcfx.decode_message(p, lat, cfg=cfg, receiver_cfg=r, slot_mask=slot_mask)
    _, ad = _export_load(tmp_path, p, cfg, s, r)
    lat_t = ad.encode(to_torch_kv(sc), to_torch_kv(rc) if conditioned else None)
    _close(lat_t, lat, "lcfx latents")
    assert float(np.abs(np.asarray(lat)[2]).max()) == 0.0
    ex = ad.decode(lat_t, torch.from_numpy(np.array(slot_mask)))
    _close(ex.keys, extra.keys, "lcfx extra keys")
    _close(ex.values, extra.values, "lcfx extra values")
    assert float(np.abs(np.asarray(extra.values)).max()) > 1e-2
    assert np.array_equal(np_(ex.mask), np.asarray(extra.mask))


@pytest.mark.parametrize("pair", PAIRS[:2], ids=lambda p: f"{p[0]}->{p[1]}")
def test_c2c_eval_parity(tmp_path, pair):
    s, r = tiny(pair[0]), tiny(pair[1])
    cfg = c2c.C2CConfig(hidden_dim=24, intermediate_dim=20, num_layers=4)
    p = c2c.init_c2c(jax.random.key(0), cfg, s, r)
    p = perturbed(p, 5, 0.1)
    # hard gates at eval: open some layers (logit > 0), close others
    n = p["key"]["gate_logit"].shape[0]
    p["key"]["gate_logit"] = jnp.asarray(np.where(np.arange(n) % 2 == 0, 1.5, -0.5), jnp.float32)
    p["value"]["gate_logit"] = jnp.asarray(np.full(n, 0.7), jnp.float32)
    sc, rc, al = _caches(s, r, 7)
    want = c2c.apply_c2c(p, sc, rc, al, cfg=cfg, sharer_cfg=s, receiver_cfg=r, train=False)
    _, ad = _export_load(tmp_path, p, cfg, s, r)
    keys, values = ad(to_torch_kv(sc), to_torch_kv(rc), torch.from_numpy(np.array(al)))
    assert float(np.abs(np.asarray(want.keys) - np.asarray(rc.keys)).max()) > 1e-2  # open gates change keys
    _close(keys, want.keys, "c2c keys")
    _close(values, want.values, "c2c values")


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_reduced_precision_export_loads_and_matches_cast_params(tmp_path, dtype):
    s, r = tiny("llama"), tiny("qwen2")
    cfg = lcfx.LCFXConfig(rank=8, slots=2, pool_heads=2)
    p = perturbed(lcfx.init_lcfx(jax.random.key(0), cfg, s, r), 1)
    out = export_adapter(tmp_path / "a", p, cfg, s, r, dtype=dtype)
    kind, cfg2, p2 = import_adapter(out)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b.astype(dtype))), p2, p)
    ad = load_adapter(out, dtype=None)
    assert next(ad.parameters()).dtype == getattr(torch, dtype)
    ad32 = load_adapter(out)
    assert next(ad32.parameters()).dtype == torch.float32
    # the float32 torch adapter equals the JAX adapter run on the rounded params
    sc = random_cache(s, [5, 4], 6, 0)
    lat = lcfx.encode_message(jax.tree.map(lambda x: x.astype(jnp.float32), p2), sc, cfg=cfg, sharer_cfg=s,
                              receiver_cfg=r)
    _close(ad32.encode(to_torch_kv(sc)), lat, f"{dtype} lcfx latents")
