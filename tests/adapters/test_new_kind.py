"""Adding an adapter kind is its spec, its two halves and one `register` call: a toy fourth kind, defined
here and nowhere in the package, trains through the objective and round-trips through the export format."""
import dataclasses
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lcf_jax.adapters import ADAPTER_KINDS, interface
from lcf_jax.adapters import common as C
from lcf_jax.adapters.export_jax import export_adapter, import_adapter
from lcf_jax.adapters.specs.base import ZEROS, param, table_from
from lcf_jax.models import registry
from lcf_jax.train import objective
from lcf_jax.train.feed import SyntheticBatches


@dataclasses.dataclass(frozen=True)
class NudgeConfig:
    """Each receiver layer's values move by a learned multiple of the aligned sharer token's mean value."""
    scale: float = 1.0
    kind = "nudge"


def _layer_plan(cfg, s, r):
    return tuple(range(r.num_layers))


def _param_layout(cfg, s, r):   # the one place the toy kind's shapes are written
    return (param("gate", (r.num_layers,), ("layers",), ZEROS),)


SPEC = types.ModuleType("nudge_spec")
SPEC.__dict__.update(
    KIND="nudge", CONFIG=NudgeConfig, SHARED_CONTEXT=True, REQUIRED_IN_FILE=("scale",), layer_plan=_layer_plan,
    layer_layout=lambda cfg, s, r: {"kind": "nudge", "receiver_layers": list(_layer_plan(cfg, s, r))},
    param_layout=_param_layout,
    tensor_table=lambda cfg, s, r: table_from(
        _param_layout(cfg, s, r), [(f"layers.{l}.gate", ("gate",), (l,), "copy") for l in _layer_plan(cfg, s, r)]))


def _init(key, cfg, s, r):
    return C.init_from_layout(_param_layout(cfg, s, r), key)


def _receive(params, message, receiver_state, *, cfg, sharer_cfg, receiver_cfg, **options):
    r_cache, alignment = receiver_state
    src = message.values.astype(jnp.float32).mean(axis=(2, 4))                       # [Ls, B, Ss]
    src = src[jnp.minimum(jnp.arange(r_cache.values.shape[0]), src.shape[0] - 1)]     # [Lr, B, Ss]
    picked = jnp.take_along_axis(src, jnp.maximum(alignment, 0)[None], axis=2) * (alignment >= 0)[None]
    nudge = cfg.scale * params["gate"][:, None, None, None, None] * picked[:, :, None, :, None]
    return r_cache.replace_kv(r_cache.keys, (r_cache.values + nudge).astype(r_cache.values.dtype))


NUDGE = interface.AdapterKind(SPEC, _init, lambda cfg, s, r: C.axes_from_layout(_param_layout(cfg, s, r)),
                              send=C.send_cache,
                              receive=_receive)


@pytest.fixture
def nudge():
    interface.register(NUDGE)
    yield NUDGE
    interface.unregister("nudge")
    assert "nudge" not in ADAPTER_KINDS


def test_a_registered_kind_trains_through_the_objective_and_exports(tmp_path, nudge):
    with pytest.raises(ValueError, match="already registered"):
        interface.register(NUDGE)
    (s_cfg, s_params), (r_cfg, r_params) = registry.load_any("tiny-llama"), registry.load_any("tiny-gemma3")
    setup = objective.Setup("nudge", NudgeConfig(), s_cfg, r_cfg)
    batch = jax.tree.map(jnp.asarray, next(SyntheticBatches(True, s_cfg, r_cfg, 4, 0)))
    params = nudge.prepare(nudge.init(jax.random.key(0), NudgeConfig(), s_cfg, r_cfg), r_params, cfg=NudgeConfig(),
                           receiver_cfg=r_cfg)
    loss = jax.jit(lambda p: objective.loss_fn(p, s_params, r_params, batch, setup)[0])
    opt = optax.adam(0.05)
    state, first = opt.init(params), float(loss(params))
    for _ in range(15):
        grads = jax.grad(loss)(params)
        updates, state = opt.update(grads, state)
        params = optax.apply_updates(params, updates)
    assert float(loss(params)) < first
    out = export_adapter(tmp_path / "nudge", params, NudgeConfig(), s_cfg, r_cfg)
    kind, cfg, back = import_adapter(out)
    assert kind == "nudge" and cfg == NudgeConfig()
    np.testing.assert_array_equal(np.asarray(back["gate"]), np.asarray(params["gate"]))


def test_every_shipped_kind_names_its_role_once():
    assert {k: a.shared_context for k, a in ADAPTER_KINDS.items()} == {"lcf": True, "lcfx": False, "c2c": True}
    for kind, a in ADAPTER_KINDS.items():
        assert a.kind == kind and a.config.kind == kind


def test_a_kind_without_a_torch_half_is_refused_by_name(tmp_path, nudge):
    from lcf_jax.adapters.export_format import AdapterFormatError
    from lcf_jax.torch.load import adapter_class, load_adapter

    (s_cfg, _), (r_cfg, _) = registry.load_any("tiny-llama"), registry.load_any("tiny-gemma3")
    out = export_adapter(tmp_path / "nudge", nudge.init(jax.random.key(0), NudgeConfig(), s_cfg, r_cfg), NudgeConfig(),
                         s_cfg, r_cfg)
    with pytest.raises(AdapterFormatError, match="'nudge' has no PyTorch half"):
        load_adapter(out)
    assert adapter_class("lcf").__name__ == "LCFAdapter"   # the shipped kinds name theirs in their specs
