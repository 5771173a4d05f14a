"""Every adapter kind on every (sharer, receiver) family pair: shapes, dtypes, finiteness, param axes."""
import jax
import jax.numpy as jnp
import pytest
from adapter_tiny_models import FAMILIES, random_alignment, random_cache, random_like, tiny

from lcf_jax.adapters import ADAPTER_KINDS
from lcf_jax.adapters.c2c import C2CConfig, apply_c2c
from lcf_jax.adapters.lcf import LCFConfig, apply_lcf
from lcf_jax.adapters.lcfx import LCFXConfig, decode_message, encode_message

CFGS = {"lcf": LCFConfig(rank=4), "c2c": C2CConfig(hidden_dim=8, intermediate_dim=8),
        "lcfx": LCFXConfig(rank=8, slots=2, pool_heads=2, conditioned=True)}


def _params(kind, s, r, seed):
    k = ADAPTER_KINDS[kind]
    shapes = jax.eval_shape(lambda key: k.init(key, CFGS[kind], s, r), jax.random.key(0))
    axes = k.param_axes(CFGS[kind], s, r)
    is_t = lambda x: isinstance(x, tuple)  # noqa: E731
    assert jax.tree.structure(axes, is_leaf=is_t) == jax.tree.structure(shapes)
    for sd, ax in zip(jax.tree.leaves(shapes), jax.tree.leaves(axes, is_leaf=is_t)):
        assert len(ax) == len(sd.shape) and all(isinstance(a, str) for a in ax)
    return random_like(shapes, seed, 0.1)


@pytest.mark.parametrize("s_fam", FAMILIES)
@pytest.mark.parametrize("r_fam", FAMILIES)
def test_pair(s_fam, r_fam):
    s, r = tiny(s_fam), tiny(r_fam)
    sc = random_cache(s, [5, 3], 6, 0)
    rc = random_cache(r, [4, 6], 7, 1)
    al = random_alignment(sc.mask, rc.mask, 2)
    params = {kind: _params(kind, s, r, i) for i, kind in enumerate(CFGS)}

    @jax.jit
    def run(params, sc, rc, al):
        lcf = apply_lcf(params["lcf"], sc, rc, al, cfg=CFGS["lcf"], sharer_cfg=s, receiver_cfg=r)
        c2c = apply_c2c(params["c2c"], sc, rc, al, cfg=CFGS["c2c"], sharer_cfg=s, receiver_cfg=r, train=False)
        lat = encode_message(params["lcfx"], sc, rc, cfg=CFGS["lcfx"], sharer_cfg=s, receiver_cfg=r)
        return lcf, c2c, lat, decode_message(params["lcfx"], lat, cfg=CFGS["lcfx"], receiver_cfg=r)

    lcf, c2c, lat, extra = run(params, sc, rc, al)
    for out in (lcf, c2c):
        assert out.keys.shape == rc.keys.shape and out.values.shape == rc.values.shape
        assert out.keys.dtype == rc.keys.dtype and bool(jnp.isfinite(out.keys).all())
    assert lat.shape == (2, 2, 8)
    assert extra.keys.shape == (r.num_layers, 2, r.num_kv_heads, 2, r.head_dim)
    assert bool(jnp.isfinite(extra.keys).all()) and bool(jnp.isfinite(extra.values).all())
