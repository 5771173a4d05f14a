"""The training loop: composes models, adapter, data, mesh, optimizer and checkpoints.

Restart-safe: the latest good checkpoint (adapter params, optimizer state, RNG, step, data-iterator
state) is restored automatically, so rerunning the same command after a crash or preemption resumes.
"""
from __future__ import annotations

import dataclasses

import json
import math
import time
from pathlib import Path
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from lcf_jax.adapters import ADAPTER_KINDS
from lcf_jax.models import registry
from lcf_jax.models.transformer import PARAM_AXES, param_axes
from lcf_jax.train import config as config_lib
from lcf_jax.train import distributed, feed as feed_lib, optim, sharding
from lcf_jax.train.ckpt import Checkpointer
from lcf_jax.train.objective import Setup
from lcf_jax.train.step import NonFiniteLossError, TrainState, init_state, jit_train_step


def _is_local(path: str) -> bool:
    return "://" not in path


class RunLog:
    """metrics.jsonl + TensorBoard events (process 0 only)."""

    def __init__(self, workdir: str, enabled: bool):
        self.enabled = enabled and _is_local(workdir)
        self.path = Path(workdir) / "metrics.jsonl"
        self.tb = None
        if self.enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                from tensorboardX import SummaryWriter
                self.tb = SummaryWriter(str(Path(workdir) / "tensorboard"))
            except ImportError:  # TensorBoard is a convenience; the JSONL is the record
                self.tb = None

    def write(self, step: int, kind: str, values: dict) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, "kind": kind, **values}) + "\n")
        if self.tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)) and math.isfinite(v):
                    self.tb.add_scalar(f"{kind}/{k}", v, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def read_metrics(workdir: str | Path) -> list[dict]:
    """metrics.jsonl rows; a step logged twice (work redone after a restart) keeps its last row."""
    path = Path(workdir) / "metrics.jsonl"
    rows: dict[tuple, dict] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            r = json.loads(line)
            rows[(r["kind"], r["step"])] = r
    return sorted(rows.values(), key=lambda r: (r["kind"], r["step"]))


def plot_curve(workdir: str | Path) -> Optional[Path]:
    """curve.png: one panel per logged stage that has rows: the pre-training stages (stage 1's loss; the
    locator's loss and window recall), the main stage's loss, and the evaluations."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(workdir)
    pre = [r for r in rows if r["kind"] == "pretrain"]
    panels = []   # (title, ylabel, {label: [(step, value)]})
    stage1 = [(r["step"], r["loss"]) for r in pre if "loss" in r]
    if stage1:
        panels.append(("pre-training, stage 1", "loss", {"loss": stage1}))
    loc = [r for r in pre if "locator_loss" in r]
    if loc:
        panels.append(("pre-training, locator", "", {k: [(r["step"], r[f"locator_{k}"]) for r in loc]
                                                      for k in ("loss", "window_recall", "top1_in_answer")}))
    train = [r for r in rows if r["kind"] == "train"]
    if train:
        panels.append(("training curve", "train loss (the whole objective)", {"loss": [(r["step"], r["loss"]) for r in train]}))
    evals = [r for r in rows if r["kind"] == "eval"]
    if evals:
        keys = [k for k in evals[-1] if k not in ("step", "kind", "n", "seconds")]   # scores, not timings
        panels.append(("evaluation", "", {k: [(r["step"], r.get(k, float("nan"))) for r in evals] for k in keys}))
    if not panels:
        return None
    fig, ax = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.5), squeeze=False)
    for a, (title, ylabel, series) in zip(ax[0], panels):
        for label, pts in series.items():
            a.plot([p[0] for p in pts], [p[1] for p in pts], marker="o" if title == "evaluation" else None, label=label)
        a.set(xlabel="step", ylabel=ylabel, title=title)
        if len(series) > 1:
            a.legend()
    fig.tight_layout()
    out = Path(workdir) / "curve.png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def _frozen_shardings(params: dict, cfg, model_cfg, mesh):
    if not cfg.mesh.shard_frozen:
        return sharding.replicated(params, mesh)
    return sharding.tree_shardings(params, param_axes(model_cfg), mesh)


def build(cfg):
    """Models, adapter, setup, mesh and shardings of a run (no data, no checkpoint)."""
    kind = cfg.adapter.kind
    acfg = config_lib.adapter_config(cfg)
    s_cfg, s_params = registry.load_any(cfg.model.sharer)
    r_cfg, r_params = registry.load_any(cfg.model.receiver)
    dist = cfg.distill
    setup = Setup(kind, acfg, s_cfg, r_cfg, cfg.train.compute_dtype, loss_positions=cfg.data.max_target_len,
                  ce_weight=dist.ce_weight, kl_weight=dist.kl_weight, hidden_weight=dist.hidden_weight,
                  kl_temperature=dist.temperature)
    mesh = sharding.make_mesh(cfg.mesh.data, cfg.mesh.model,
                              jax.devices()[:cfg.mesh.num_devices] if cfg.mesh.num_devices > 0 else None)
    sharding.check_global_batch(cfg.data.batch_size, mesh)
    spec = ADAPTER_KINDS[kind]
    params = spec.init(jax.random.PRNGKey(cfg.train.seed), acfg, s_cfg, r_cfg)
    if kind == "lcfx":
        from lcf_jax.adapters import lcfx
        params = lcfx.calibrate_embed_decoder(params, r_params, cfg=acfg, receiver_cfg=r_cfg)
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
    return dict(setup=setup, mesh=mesh, params=params, optimizer=optimizer, state_sh=state_sh, frozen=frozen,
                frozen_sh=frozen_sh)


def sharer_cache_fn(setup: Setup, sharer_params):
    """batch -> (keys, values) of the sharer's cache, jitted once (the precomputed path)."""
    from lcf_jax.train import objective
    params = jax.tree.map(jnp.asarray, sharer_params)
    fn = jax.jit(lambda p, ids, mask, pos: objective.sharer_cache(
        jax.tree.map(lambda x: x.astype(setup.dtype), p), {"sharer_ids": ids, "sharer_mask": mask, "sharer_positions": pos},
        setup))

    def compute(batch):
        c = fn(params, batch["sharer_ids"], batch["sharer_mask"], batch["sharer_positions"])
        return c.keys, c.values
    return compute


def _enable_compilation_cache() -> None:
    """Persistent XLA cache: a resumed or repeated run skips recompiling its step (minutes on CPU)."""
    import os
    path = os.environ.get("LCF_JAX_COMPILE_CACHE", str(registry.cache_dir() / "xla"))
    if path and jax.config.jax_compilation_cache_dir is None:
        jax.config.update("jax_compilation_cache_dir", path)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def initial_params(cfg, b: dict, tokenizers, qa, log: Optional[RunLog] = None) -> dict:
    """The adapter params a fresh run starts from: train.init_adapter (an exported adapter), else the
    init followed by the LCF-X latent-alignment pre-training when pretrain.steps > 0, else the init."""
    params = b["params"]
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
        return jax.tree.map(lambda new, old: jnp.asarray(new, old.dtype), loaded, params)
    if cfg.pretrain.steps > 0:
        if cfg.adapter.kind != "lcfx":
            raise ValueError("pretrain.steps > 0 is the LCF-X latent-alignment stage; set it to 0 for "
                             f"adapter.kind={cfg.adapter.kind!r}")
        from lcf_jax.train import latent_align

        def write(step, m):
            if log is not None:
                log.write(step, "pretrain", m)
            if jax.process_index() == 0:
                print(f"pretrain step {step}/{cfg.pretrain.steps}: " + ", ".join(f"{k}={v:.4f}" for k, v in m.items()),
                      flush=True)
        frozen = jax.tree.map(jnp.asarray, b["frozen"])
        return latent_align.maybe_pretrain(cfg, params, frozen, b["setup"], tokenizers,
                                           qa.train_examples if qa is not None else None, log=write)
    return params


def _put(tree, shardings):
    """Host values -> global arrays. Every process holds the same full value (the feed is deterministic in
    (seed, step)), so the global shape is the local shape and each device takes its own slice; without
    `global_shape` JAX would treat each process's rows as distinct and multiply the global batch by the
    process count. Arrays that are already global (restored from a checkpoint) are kept as they are."""
    def one(x, s):
        if jax.process_count() == 1:
            return jax.device_put(x, s)
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return x if x.sharding == s else jax.device_put(x, s)
        x = np.asarray(x)
        return jax.make_array_from_process_local_data(s, x, x.shape)
    return jax.tree.map(one, tree, shardings)


def train(cfg, evaluate=None, max_steps_this_run: Optional[int] = None, make_evaluate=None) -> dict:
    """Runs (or resumes) training to cfg.train.steps. `evaluate(params, step) -> dict` is optional; so is
    `make_evaluate(cfg, setup, frozen, qa, tokenizers) -> evaluate`, for an evaluator that needs what the run
    builds (the command line passes `eval.during_training.make_train_evaluator`: evaluation sits above training).

    Returns the last logged train metrics. Raises NonFiniteLossError on a NaN/inf loss.
    """
    distributed.initialize()
    _enable_compilation_cache()
    lead = jax.process_index() == 0
    b = build(cfg)
    setup, mesh = b["setup"], b["mesh"]
    tokenizers = None
    if cfg.data.task in ("qa", "instruct"):
        tokenizers = (registry.load_tokenizer(cfg.model.sharer), registry.load_tokenizer(cfg.model.receiver))
    feed, qa = feed_lib.make_feed(cfg, setup.kind, setup.sharer, setup.receiver, tokenizers)
    if qa is not None and hasattr(qa, "features") and hasattr(qa.features, "receiver_prefix_len"):
        setup = b["setup"] = dataclasses.replace(setup, receiver_prefix=qa.features.receiver_prefix_len)
    if cfg.train.sharer_cache == "precomputed":
        feed = feed_lib.WithSharerCache(feed, sharer_cache_fn(setup, b["frozen"][0]))
    if evaluate is None and make_evaluate is not None and qa is not None:
        evaluate = make_evaluate(cfg, setup, b["frozen"], qa, tokenizers)

    workdir = cfg.train.workdir if not _is_local(cfg.train.workdir) else str(Path(cfg.train.workdir).resolve())
    ckpt = Checkpointer(f"{workdir}/checkpoints", keep_last=cfg.train.keep_last,
                        keep_best=cfg.train.keep_best if evaluate else 0,
                        best_metric="f1" if evaluate else None, best_mode="max",
                        async_save=cfg.train.async_checkpoint, keep_steps=(0,))
    state = init_state(b["params"], b["optimizer"], cfg.train.seed)
    abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, b["state_sh"])
    restored = ckpt.restore_latest(abstract.params, {"opt": abstract.opt_state, "rng": abstract.rng})
    log = RunLog(workdir, lead)
    if restored is None:
        params = initial_params(cfg, b, tokenizers, qa, log)
        if params is not b["params"]:
            state = init_state(params, b["optimizer"], cfg.train.seed)
            # Step 0 holds the starting point, so a restart never redoes the pre-training.
            ckpt.save(0, state.params, {"opt": state.opt_state, "rng": state.rng}, data_state=feed.state(),
                      config=cfg.to_dict())
    else:
        params, opt, step0, data_state, _ = restored
        state = TrainState(jnp.asarray(step0, jnp.int32), params, opt["opt"], opt["rng"])
        feed.restore(data_state)
        if lead:
            print(f"resumed from checkpoint step {step0} in {workdir}/checkpoints", flush=True)
    state = _put(state, b["state_sh"])
    frozen = _put(b["frozen"], b["frozen_sh"])
    before_peek = feed.state()
    batch_sh = sharding.batch_sharding(feed_lib.device_arrays(next(feed)), mesh)
    feed.restore(before_peek)
    step_fn = jit_train_step(setup, b["optimizer"], mesh, b["state_sh"], b["frozen_sh"], batch_sh)
    if lead:
        Path(workdir).mkdir(parents=True, exist_ok=True) if _is_local(workdir) else None
        if _is_local(workdir):
            (Path(workdir) / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1, default=str))
    schedule = optim.make_schedule(cfg.train.lr, cfg.train.warmup_steps, cfg.train.steps)
    total = cfg.train.steps
    start = int(state.step)
    end = total if max_steps_this_run is None else min(total, start + max_steps_this_run)
    last: dict = {}
    t0, tokens_done, step = time.perf_counter(), 0.0, start
    bar = None
    if lead:
        from tqdm import tqdm
        bar = tqdm(total=total, initial=start, desc=cfg.name, dynamic_ncols=True)
    try:
        for step in range(start + 1, end + 1):
            batch = feed_lib.device_arrays(next(feed))
            state, m = step_fn(state, frozen, _put(batch, batch_sh))
            if step % cfg.train.log_every == 0 or step == end:
                m = jax.device_get(m)
                if not bool(m["finite"]):
                    raise NonFiniteLossError(
                        f"non-finite loss or gradient at step {step} (loss={float(m['loss'])}); the update was "
                        "skipped. Lower train.lr, keep train.clip_norm > 0, or use train.compute_dtype=float32")
                tokens_done += float(m["target_tokens"]) * cfg.train.log_every
                dt = time.perf_counter() - t0
                last = {"loss": float(m["loss"]), "grad_norm": float(m["grad_norm"]),
                        "target_tokens_per_s": tokens_done / max(dt, 1e-9), "lr": float(schedule(step)),
                        **{k: float(m[k]) for k in ("ce", "kl", "hidden") if k in m}}
                log.write(step, "train", last)
                if bar is not None:
                    bar.set_postfix(loss=f"{last['loss']:.4f}", tok_s=f"{last['target_tokens_per_s']:.0f}")
            if bar is not None:
                bar.update(1)
            metrics = None
            if evaluate is not None and (step % cfg.train.eval_every == 0 or step == total):
                metrics = evaluate(state.params, step)
                log.write(step, "eval", metrics)
                if bar is not None:
                    bar.write(f"step {step} eval: " + ", ".join(f"{k}={v:.2f}" for k, v in metrics.items()
                                                                if isinstance(v, float)))
            if step % cfg.train.ckpt_every == 0 or step == total or metrics is not None:
                ckpt.save(step, state.params, {"opt": state.opt_state, "rng": state.rng}, data_state=feed.state(),
                          config=cfg.to_dict(), metrics=metrics)
    finally:
        ckpt.wait()
        ckpt.close()
        log.close()
        if bar is not None:
            bar.close()
    if lead and _is_local(workdir) and step == total:
        plot_curve(workdir)
    return last

