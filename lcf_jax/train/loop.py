"""The training loop: a built run (`run_setup`), its pre-training phases, then its main stage, each stepped by
`phase.run` with its own checkpoints, and logged (`run_log`).

Restart-safe: the latest good checkpoint (adapter params, optimizer state, RNG, step, data-iterator state) is
restored automatically, so rerunning the same command after a crash or preemption resumes. A pre-training
phase keeps its checkpoints in `{workdir}/stages/<phase>` and resumes mid-phase; once they are done, step 0
of the main stage holds their result, so a restart never redoes them.
"""
from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path
from typing import Optional

import jax
import jax.numpy as jnp

from lcf_jax.adapters import ADAPTER_KINDS
from lcf_jax.models import registry
from lcf_jax.train import context_store, distributed, feed as feed_lib, optim, phase, run_setup, sharding
from lcf_jax.train.ckpt import Checkpointer
from lcf_jax.train.run_log import RunLog, is_local, plot_curve
from lcf_jax.train.step import TrainState, init_state, jit_train_step, main_loss

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
    # 1. The run: models, adapter, mesh; the data feed; the evaluator.
    distributed.initialize()
    run_setup.enable_compilation_cache()
    lead = jax.process_index() == 0
    run = run_setup.build(cfg)
    tokenizers = None
    if cfg.data.task in ("qa", "instruct"):
        tokenizers = (registry.load_tokenizer(cfg.model.sharer), registry.load_tokenizer(cfg.model.receiver))
    feed, qa = feed_lib.make_feed(cfg, run.setup.kind, run.setup.sharer, run.setup.receiver, tokenizers)
    if qa is not None and hasattr(qa, "features") and hasattr(qa.features, "receiver_prefix_len"):
        run = run._replace(setup=dataclasses.replace(run.setup, receiver_prefix=qa.features.receiver_prefix_len))
    setup = run.setup
    if cfg.train.sharer_cache == "precomputed":
        feed = feed_lib.WithSharerCache(feed, run_setup.sharer_cache_fn(setup, run.frozen[0]))
    elif cfg.train.sharer_cache == "stored":
        if jax.process_count() > 1:
            raise context_store.ContextStoreError(
                "train.sharer_cache='stored' is single-process for now: build the store once "
                "(python -m lcf_jax.train.context_store --config=...) and train with one process")
        feed = context_store.attach(feed, setup, run.frozen, root=cfg.data.context_store,
                                    dtype=cfg.data.context_store_dtype, log=lambda m: print(m, flush=True))
    if evaluate is None and make_evaluate is not None:
        evaluate = make_evaluate(cfg, setup, run.frozen, qa, tokenizers)

    workdir = cfg.train.workdir if not is_local(cfg.train.workdir) else str(Path(cfg.train.workdir).resolve())
    if lead and is_local(workdir):
        Path(workdir).mkdir(parents=True, exist_ok=True)
        (Path(workdir) / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1, default=str))
    ckpt = Checkpointer(f"{workdir}/checkpoints", keep_last=cfg.train.keep_last,
                        keep_best=cfg.train.keep_best if evaluate else 0,
                        best_metric=BEST_METRIC[ADAPTER_KINDS[setup.kind].shared_context] if evaluate else None,
                        best_mode="max", async_save=cfg.train.async_checkpoint, keep_steps=(0,))
    log = RunLog(workdir, lead)
    bar = None
    try:  # the checkpointers' threads and the event writer are closed however the run ends
        # 2. Where the main stage starts: its latest checkpoint, or the pre-training phases run now.
        state = init_state(run.params, run.optimizer, cfg.train.seed)
        abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, run.state_sh)
        restored = ckpt.restore_latest(abstract.params, {"opt": abstract.opt_state, "rng": abstract.rng})
        if restored is None:
            params, phases = run_setup.starting_point(cfg, run, tokenizers, qa, log)
            for ph in phases:
                params = run_pretraining_phase(ph, params, cfg, workdir, log, lead)
            if params is not run.params:
                state = init_state(params, run.optimizer, cfg.train.seed)
                # Step 0 holds the starting point, so a restart never redoes the pre-training.
                ckpt.save(0, state.params, {"opt": state.opt_state, "rng": state.rng}, data_state=feed.state(),
                          config=cfg.to_dict())
        else:
            params, opt, step0, data_state, _ = restored
            state = TrainState(jnp.asarray(step0, jnp.int32), params, opt["opt"], opt["rng"])
            feed.restore(data_state)
            if lead:
                print(f"resumed from checkpoint step {step0} in {workdir}/checkpoints", flush=True)

        # 3. The main stage on the mesh: the same loop and step (`step.update`) as the pre-training phases,
        # jitted with the run's shardings and donation.
        state = sharding.put_global(state, run.state_sh)
        frozen = sharding.put_global(run.frozen, run.frozen_sh)
        before_peek = feed.state()
        batch_sh = sharding.batch_sharding(next(feed), run.mesh)
        feed.restore(before_peek)
        main = phase.Phase("main", cfg.train.steps, functools.partial(main_loss, setup=setup), run.optimizer, feed,
                           frozen, schedule=optim.make_schedule(cfg.train.lr, cfg.train.warmup_steps, cfg.train.steps))
        step_fn = jit_train_step(setup, run.optimizer, run.mesh, run.state_sh, run.frozen_sh, batch_sh,
                                 accum=cfg.train.grad_accum_steps)
        if lead:
            from tqdm import tqdm
            bar = tqdm(total=cfg.train.steps, initial=int(state.step), desc=cfg.name, dynamic_ncols=True)

        def progress(step, last):
            bar.update(1)
            if last:
                bar.set_postfix(loss=f"{last['loss']:.4f}", tok_s=f"{last.get('target_tokens_per_s', 0):.0f}")

        def save(step, st, metrics):
            if metrics is not None and bar is not None:
                bar.write(f"step {step} eval: " + ", ".join(f"{k}={v:.2f}" for k, v in metrics.items()
                                                            if isinstance(v, float)))
            ckpt.save(step, st.params, {"opt": st.opt_state, "rng": st.rng}, data_state=feed.state(),
                      config=cfg.to_dict(), metrics=metrics)

        end = None if max_steps_this_run is None else int(state.step) + max_steps_this_run
        if cfg.train.stop_after_step:
            end = cfg.train.stop_after_step if end is None else min(end, cfg.train.stop_after_step)
        state, last = phase.run(main, state, step_fn, log=log.write, log_every=cfg.train.log_every,
                                put=lambda b: sharding.put_global(b, batch_sh), evaluate=evaluate,
                                eval_every=cfg.train.eval_every, checkpoint=save, ckpt_every=cfg.train.ckpt_every,
                                end=end, progress=progress if bar is not None else None,
                                max_seconds=cfg.train.max_seconds)
        stop = int(state.step)
        if lead and stop < cfg.train.steps and (stop < (end or cfg.train.steps) or stop == cfg.train.stop_after_step):
            why = (f"train.stop_after_step={stop} (checkpointed; a larger one, or 0, continues from it)"
                   if stop == cfg.train.stop_after_step else
                   f"train.max_seconds={cfg.train.max_seconds:g} reached (checkpointed; the same command continues)")
            print(f"stopped at step {stop} of {cfg.train.steps}: {why}", flush=True)
    finally:
        ckpt.wait()
        ckpt.close()
        log.close()
        if bar is not None:
            bar.close()
    if lead and is_local(workdir) and int(state.step) == cfg.train.steps:
        plot_curve(workdir)
    return last


def run_pretraining_phase(ph: phase.Phase, params: dict, cfg, workdir: str, log: RunLog, lead: bool) -> dict:
    """Runs one pre-training phase from `params` (or resumes it from its latest checkpoint in
    `{workdir}/stages/<name>`) to its end; returns the adapter params it ends with."""
    ck = Checkpointer(f"{workdir}/stages/{ph.name}", keep_last=1, async_save=cfg.train.async_checkpoint)
    try:
        state = phase.init_state(ph, params, cfg.train.seed)
        abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
        restored = ck.restore_latest(abstract.params, {"opt": abstract.opt_state, "rng": abstract.rng})
        if restored is not None:
            p, opt, step0, data_state, _ = restored
            state = TrainState(jnp.asarray(step0, jnp.int32), p, opt["opt"], opt["rng"])
            ph.feed.restore(data_state)
            if lead:
                print(f"{ph.name}: resumed from its checkpoint step {step0}", flush=True)

        def write(step, kind, values):
            log.write(step, kind, values)
            if lead:
                print(f"{ph.name} step {step - ph.log_offset}/{ph.steps}: "
                      + ", ".join(f"{k}={v:.4f}" for k, v in values.items()), flush=True)

        def save(step, st, metrics):
            ck.save(step, st.params, {"opt": st.opt_state, "rng": st.rng}, data_state=ph.feed.state(),
                    config=cfg.to_dict())
        state, _ = phase.run(ph, state, phase.jit_step(ph), log=write, log_every=cfg.train.log_every,
                             checkpoint=save, ckpt_every=cfg.train.ckpt_every)
    finally:
        ck.wait()
        ck.close()
    return jax.device_get(state.params)
