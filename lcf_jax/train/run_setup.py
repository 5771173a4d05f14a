"""Building a run: models, adapter init, mesh, optimizer and shardings; the adapter a fresh run starts from."""
from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from lcf_jax.adapters import ADAPTER_KINDS
from lcf_jax.models import registry
from lcf_jax.models.transformer import param_axes
from lcf_jax.train import config as config_lib
from lcf_jax.train import optim, sharding
from lcf_jax.train.objective import Setup
from lcf_jax.train.phase import Phase
from lcf_jax.train.run_log import RunLog
from lcf_jax.train.step import TrainState


def _frozen_shardings(params: dict, cfg, model_cfg, mesh):
    if not cfg.mesh.shard_frozen:
        return sharding.replicated(params, mesh)
    return sharding.tree_shardings(params, param_axes(model_cfg), mesh)


class BuiltRun(NamedTuple):
    """What a run is made of before any data or checkpoint: the static setup, the mesh, the adapter's initial
    params and optimizer, the frozen models, and where each lives on the mesh."""
    setup: Setup
    mesh: Mesh
    params: dict
    optimizer: optax.GradientTransformation
    state_sh: TrainState
    frozen: tuple
    frozen_sh: tuple


def build(cfg) -> BuiltRun:
    """Models, adapter, setup, mesh and shardings of a run (no data, no checkpoint)."""
    kind = cfg.adapter.kind
    acfg = config_lib.adapter_config(cfg)
    s_cfg, s_params = registry.load_any(cfg.model.sharer)
    r_cfg, r_params = registry.load_any(cfg.model.receiver)
    dist = cfg.distill
    setup = Setup(kind, acfg, s_cfg, r_cfg, cfg.train.compute_dtype, loss_positions=cfg.data.max_target_len,
                  ce_weight=dist.ce_weight, kl_weight=dist.kl_weight, hidden_weight=dist.hidden_weight,
                  kl_temperature=dist.temperature,
                  choice_group=cfg.data.choice_group if cfg.data.choice_file else 0,
                  choice_control_weight=dist.control_weight if cfg.data.choice_file else 0.0)
    mesh = sharding.make_mesh(cfg.mesh.data, cfg.mesh.model,
                              jax.devices()[:cfg.mesh.num_devices] if cfg.mesh.num_devices > 0 else None)
    sharding.check_global_batch(cfg.data.batch_size, mesh)
    spec = ADAPTER_KINDS[kind]
    params = spec.init(jax.random.PRNGKey(cfg.train.seed), acfg, s_cfg, r_cfg)
    params = spec.prepare(params, r_params, cfg=acfg, receiver_cfg=r_cfg)
    p_sh = sharding.tree_shardings(params, spec.param_axes(acfg, s_cfg, r_cfg), mesh)
    unknown = sorted(set(cfg.train.freeze) - set(params))
    if unknown:
        raise ValueError(f"train.freeze names {unknown}, which are not parameters of this {kind} adapter; "
                         f"its parameters: {sorted(params)}")
    optimizer = optim.make_optimizer(cfg.train.lr, cfg.train.warmup_steps, cfg.train.steps,
                                     cfg.train.weight_decay, cfg.train.clip_norm,
                                     frozen={k: k in cfg.train.freeze for k in params})
    opt_abstract = jax.eval_shape(optimizer.init, params)
    rep = NamedSharding(mesh, P())
    o_sh = optax.tree_map_params(optimizer, lambda _, sh: sh, opt_abstract, p_sh,
                                 transform_non_params=lambda _: rep)
    state_sh = TrainState(rep, p_sh, o_sh, rep)
    frozen = (s_params, r_params)
    frozen_sh = (_frozen_shardings(s_params, cfg, s_cfg, mesh), _frozen_shardings(r_params, cfg, r_cfg, mesh))
    return BuiltRun(setup, mesh, params, optimizer, state_sh, frozen, frozen_sh)


def sharer_cache_fn(setup: Setup, sharer_params):
    """`SharerRows` -> (keys, values) of the sharer's cache, jitted once with the weights as an argument (the
    precomputed path and the context store)."""
    from lcf_jax.train import objective
    params = jax.tree.map(jnp.asarray, sharer_params)
    fn = jax.jit(lambda p, rows: objective.sharer_cache(jax.tree.map(lambda x: x.astype(setup.dtype), p), rows, setup))

    def compute(rows):
        c = fn(params, rows)
        return c.keys, c.values
    return compute


def enable_compilation_cache() -> None:
    """Persistent XLA cache: a resumed or repeated run skips recompiling its step (minutes on CPU)."""
    import os
    path = os.environ.get("LCF_JAX_COMPILE_CACHE", str(registry.cache_dir() / "xla"))
    if path and jax.config.jax_compilation_cache_dir is None:
        jax.config.update("jax_compilation_cache_dir", path)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def starting_point(cfg, run: BuiltRun, tokenizers, qa, log: Optional[RunLog] = None) -> tuple[dict, list[Phase]]:
    """(the adapter params a fresh run starts from, the pre-training phases to run from them): train.init_adapter
    (an exported adapter) with no phases; else the init, and for an LCF-X run with cfg.pretrain set, its
    pre-training (`pretrain.pretraining`)."""
    params = run.params
    if cfg.train.init_adapter:
        from lcf_jax.adapters.export_jax import import_adapter
        kind, acfg, loaded = import_adapter(cfg.train.init_adapter)
        want = config_lib.adapter_config(cfg)
        if kind != cfg.adapter.kind or acfg != want:
            raise ValueError(f"train.init_adapter={cfg.train.init_adapter!r} holds a {kind} adapter with {acfg}, but "
                             f"this run's adapter is {cfg.adapter.kind} with {want}: set config.adapter.* to match")
        flat_new = dict(jax.tree_util.tree_flatten_with_path(loaded)[0])
        for path, old in jax.tree_util.tree_flatten_with_path(params)[0]:
            got = flat_new.get(path)
            if got is None or tuple(got.shape) != tuple(old.shape):
                raise ValueError(f"train.init_adapter: weight {jax.tree_util.keystr(path)} has shape "
                                 f"{None if got is None else tuple(got.shape)}, this run needs {tuple(old.shape)} "
                                 "(was it exported for another model pair?)")
        return jax.tree.map(lambda new, old: jnp.asarray(new, old.dtype), loaded, params), []
    if cfg.pretrain.steps > 0 or cfg.pretrain.translation_from:
        if cfg.adapter.kind != "lcfx":
            raise ValueError("pretrain.steps > 0 is the LCF-X latent-alignment stage; set it to 0 for "
                             f"adapter.kind={cfg.adapter.kind!r}")
        from lcf_jax.train import pretrain
        frozen = jax.tree.map(jnp.asarray, run.frozen)
        return pretrain.pretraining(cfg, params, frozen, run.setup, tokenizers,
                                        qa.train_examples if qa is not None else None,
                                        log=None if log is None else log.write)
    return params, []
