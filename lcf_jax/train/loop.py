"""The training loop: a built run (`run_setup`), its feed and checkpoints, stepped to cfg.train.steps and logged
(`run_log`).

Restart-safe: the latest good checkpoint (adapter params, optimizer state, RNG, step, data-iterator
state) is restored automatically, so rerunning the same command after a crash or preemption resumes.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Optional

import jax
import jax.numpy as jnp

from lcf_jax.adapters import ADAPTER_KINDS
from lcf_jax.models import registry
from lcf_jax.train import distributed, feed as feed_lib, optim, run_setup, sharding
from lcf_jax.train.ckpt import Checkpointer
from lcf_jax.train.run_log import RunLog, is_local, plot_curve
from lcf_jax.train.step import NonFiniteLossError, TrainState, init_state, jit_train_step

# The evaluation value a kept-best checkpoint is ranked by (higher is better), by whether the kind shares a context.
BEST_METRIC = {False: "f1", True: "mc_acc"}


def train(cfg, evaluate=None, max_steps_this_run: Optional[int] = None, make_evaluate=None) -> dict:
    """Runs (or resumes) training to cfg.train.steps. `evaluate(params, step) -> dict` is optional; so is
    `make_evaluate(cfg, setup, frozen, qa, tokenizers) -> evaluate or None`, for an evaluator that needs what the
    run builds (the command line passes `eval.during_training.make_train_evaluator`: evaluation sits above
    training). Evaluations run every cfg.train.eval_every steps and at the end; the cfg.train.keep_best best steps
    by BEST_METRIC (F1 for LCF-X, dev multiple-choice accuracy for LCF/C2C) are kept beside the newest ones.

    Returns the last logged train metrics. Raises NonFiniteLossError on a NaN/inf loss.
    """
    distributed.initialize()
    run_setup.enable_compilation_cache()
    lead = jax.process_index() == 0
    b = run_setup.build(cfg)
    setup, mesh = b["setup"], b["mesh"]
    tokenizers = None
    if cfg.data.task in ("qa", "instruct"):
        tokenizers = (registry.load_tokenizer(cfg.model.sharer), registry.load_tokenizer(cfg.model.receiver))
    feed, qa = feed_lib.make_feed(cfg, setup.kind, setup.sharer, setup.receiver, tokenizers)
    if qa is not None and hasattr(qa, "features") and hasattr(qa.features, "receiver_prefix_len"):
        setup = b["setup"] = dataclasses.replace(setup, receiver_prefix=qa.features.receiver_prefix_len)
    if cfg.train.sharer_cache == "precomputed":
        feed = feed_lib.WithSharerCache(feed, run_setup.sharer_cache_fn(setup, b["frozen"][0]))
    if evaluate is None and make_evaluate is not None:
        evaluate = make_evaluate(cfg, setup, b["frozen"], qa, tokenizers)

    workdir = cfg.train.workdir if not is_local(cfg.train.workdir) else str(Path(cfg.train.workdir).resolve())
    ckpt = Checkpointer(f"{workdir}/checkpoints", keep_last=cfg.train.keep_last,
                        keep_best=cfg.train.keep_best if evaluate else 0,
                        best_metric=BEST_METRIC[ADAPTER_KINDS[setup.kind].shared_context] if evaluate else None,
                        best_mode="max",
                        async_save=cfg.train.async_checkpoint, keep_steps=(0,))
    log = RunLog(workdir, lead)
    bar = None
    try:  # the checkpointer's threads and the event writer are closed however the run ends
        state = init_state(b["params"], b["optimizer"], cfg.train.seed)
        abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, b["state_sh"])
        restored = ckpt.restore_latest(abstract.params, {"opt": abstract.opt_state, "rng": abstract.rng})
        if restored is None:
            params = run_setup.initial_params(cfg, b, tokenizers, qa, log)
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
        state = sharding.put_global(state, b["state_sh"])
        frozen = sharding.put_global(b["frozen"], b["frozen_sh"])
        before_peek = feed.state()
        batch_sh = sharding.batch_sharding(feed_lib.device_arrays(next(feed)), mesh)
        feed.restore(before_peek)
        step_fn = jit_train_step(setup, b["optimizer"], mesh, b["state_sh"], b["frozen_sh"], batch_sh)
        if lead:
            Path(workdir).mkdir(parents=True, exist_ok=True) if is_local(workdir) else None
            if is_local(workdir):
                (Path(workdir) / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1, default=str))
        schedule = optim.make_schedule(cfg.train.lr, cfg.train.warmup_steps, cfg.train.steps)
        total = cfg.train.steps
        start = int(state.step)
        end = total if max_steps_this_run is None else min(total, start + max_steps_this_run)
        last: dict = {}
        t0, tokens_done, step = time.perf_counter(), 0.0, start
        if lead:
            from tqdm import tqdm
            bar = tqdm(total=total, initial=start, desc=cfg.name, dynamic_ncols=True)
        for step in range(start + 1, end + 1):
            batch = feed_lib.device_arrays(next(feed))
            state, m = step_fn(state, frozen, sharding.put_global(batch, batch_sh))
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
    if lead and is_local(workdir) and step == total:
        plot_curve(workdir)
    return last

