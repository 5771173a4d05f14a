"""The run config: an ml_collections ConfigDict, locked so unknown keys and wrong types fail at load.

`base_config()` holds every key with its default; files in `configs/` call it and override. The
adapter section has one sub-dict per kind, generated from the adapter config dataclass, so the
dataclass stays the single source of truth for adapter hyper-parameters.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import math
from pathlib import Path
from typing import Any

import ml_collections

from lcf_jax.adapters import ADAPTER_KINDS
from lcf_jax.data.splits import MC_SETS

KINDS = tuple(ADAPTER_KINDS)


def _adapter_section(kind: str) -> ml_collections.ConfigDict:
    cls = ADAPTER_KINDS[kind].config
    d = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            v = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            v = f.default_factory()  # type: ignore[misc]
        else:
            continue
        d[f.name] = list(v) if isinstance(v, tuple) else v
    return ml_collections.ConfigDict(d)


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.name = "run"
    c.model = ml_collections.ConfigDict(dict(
        sharer="smollm2-135m-instruct",  # a bundled model, or "tiny-<family>" (random, tests)
        receiver="gemma3-270m",
    ))
    c.adapter = ml_collections.ConfigDict({"kind": "lcfx", **{k: _adapter_section(k) for k in KINDS}})
    c.data = ml_collections.ConfigDict(dict(
        task="qa",  # "qa" (different contexts, lcfx) | "instruct" (shared context, lcf/c2c) | "synthetic" (tests)
        train_sets=["qa_train/drop", "qa_train/quoref", "qa_train/ropes", "qa_train/multirc", "qa_train/cosmosqa"],
        eval_set="squad",
        eval_split="dev",
        eval_examples=50,
        data_dir="",  # "" = $LCF_DATA_DIR or <repo>/../shared/data
        cache_dir="",  # "" = <repo>/.cache/tfds
        batch_size=8,
        max_sharer_len=256,
        max_prompt_len=48,
        max_target_len=16,
        max_train_examples=-1,
        answer_in_context=False,  # keep only training rows whose answer occurs in the sharer's passage
        prompt_template="Question: {question}\nAnswer:",
        # > 0: each training row also carries the teacher's row, the receiver reading `Context: {passage}\n`
        # (cut to this many receiver tokens) before the same prompt and target (distill.* needs it).
        teacher_context_len=0,
        # Shared context (lcf, c2c): every train.eval_every steps, dev multiple-choice accuracy (rows with index
        # % 2 == 0) through the adapter beside the receiver alone's (scored once), on mc_eval_examples questions
        # in all, evenly spaced through each of mc_eval_sets; the best checkpoint by it is kept. 0: no evaluation.
        mc_eval_sets=["mc/mmlu_redux", "mc/arc_challenge", "mc/arc_easy", "mc/openbook_qa"],
        mc_eval_examples=0,
        # train.sharer_cache="stored": where the context caches are kept ("" = <repo>/.cache/lcf_jax/context_store;
        # one subdirectory per data set and model pair) and in which dtype.
        # Shared context: a JSON-lines file of {"id", "completion"} replacing each training example's completion,
        # e.g. the sharer's own continuation (python -m lcf_jax.train.sharer_targets): the receiver can predict it
        # only through what the adapter carries. "": the data's completions.
        targets_file="",
        # Shared context: choice distillation instead of completions. A file of T0 multiple-choice questions with the
        # sharer's score of each choice (python -m lcf_jax.train.choice_targets); a step reads data.batch_size
        # questions, choice_group rows each, and trains the fused receiver's choice distribution towards the
        # sharer's (distill.temperature). "": train on completions.
        choice_file="",
        choice_group=4,
        context_store="",
        context_store_dtype="bfloat16",
        seed=0,
    ))
    # LCF-X loss weights (train/objective.Setup): kl and hidden distil from the teacher that reads the passage.
    # control_weight (choice distillation): each question also read with the sharer reading an unrelated question,
    # that fused receiver's choices pulled towards the receiver alone's by KL at this weight (objective.Setup).
    c.distill = ml_collections.ConfigDict(dict(ce_weight=1.0, kl_weight=0.0, hidden_weight=0.0, temperature=1.0,
                                               control_weight=0.0))
    c.train = ml_collections.ConfigDict(dict(
        steps=1000,
        # > 0: this run stops after the first step that ends this many seconds after the main stage began
        # (compiles included, the context store's build not), checkpointed there; a rerun continues from it.
        # Compares methods at equal wall time (C2C at LCF's), or keeps a run inside a session.
        max_seconds=0.0,
        # > 0: this run stops after this step (evaluated and checkpointed as an end is) while its learning-rate
        # schedule stays that of train.steps: a replicate stopped where another run's dev chose its checkpoint.
        stop_after_step=0,
        # > 1: each step's gradient is accumulated over this many micro-batches of data.batch_size / it rows, one
        # at a time, so a step holds one micro-batch's activations (same gradient to float rounding; C2C's
        # 417M-parameter fuser does not fit a batch of 8 in 24 GiB of host memory at once).
        grad_accum_steps=1,
        lr=1e-3,
        warmup_steps=50,
        weight_decay=0.01,
        clip_norm=1.0,
        compute_dtype="float32",  # or "bfloat16" (fp32 master weights)
        # "precomputed": the sharer's cache computed outside the differentiated step; "stored" (shared context):
        # both models' caches of every context computed once into data.context_store and read by every step.
        sharer_cache="on_the_fly",
        seed=0,
        log_every=10,
        eval_every=200,
        ckpt_every=100,
        keep_last=3,
        keep_best=1,
        async_checkpoint=True,
        workdir="runs/default",  # local path or gs://bucket/path
        max_new_tokens=16,
        freeze=[],  # adapter parameter names (top level) that get no update, e.g. ["enc_w", "dec_wv"]
        init_adapter="",  # an exported adapter dir (python -m lcf_jax.export) to start from instead of init
    ))
    # Stage 1 for LCF-X (train/latent_align.py): steps > 0 runs the latent-alignment pre-training on
    # the training passages before the QA objective, on a fresh start only. method "sgd": `steps`
    # Adam steps; "closed_form" (needs adapter.lcfx.linear): `steps` batches of passages, one solve;
    # "tokens" (needs adapter.lcfx.decoder="embed", train/token_translation.py): `steps` Adam steps
    # translating every sharer token into the receiver's input vector of the same text, then, for
    # pooling="window", `locator_steps` steps teaching the window's scores where answers sit
    # (train/locator.py, batches of `locator_batch_size` QA rows whose answer is in the passage).
    # translation_from: an exported LCF-X adapter whose token translation replaces the "tokens" stage
    # (which then does not run): two poolings compared on exactly the same translation.
    c.pretrain = ml_collections.ConfigDict(dict(method="sgd", steps=0, lr=1e-3, batch_size=8,
                                                 max_len=0,  # 0: data.max_sharer_len
                                                 locator_steps=0, locator_lr=1e-3, locator_batch_size=32,
                                                 translation_from=""))
    # num_devices: 0 = every device; N = the first N (e.g. 1 to compare against a sharded run)
    c.mesh = ml_collections.ConfigDict(dict(data=-1, model=1, num_devices=0, shard_frozen=False))
    return c


def lock(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    c.lock()
    return c


def load_config_file(path: str | Path) -> ml_collections.ConfigDict:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"config file {path} does not exist; shipped configs are in configs/")
    spec = importlib.util.spec_from_file_location(f"lcf_config_{path.stem}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    if not hasattr(mod, "get_config"):
        raise AttributeError(f"config file {path} has no get_config()")
    return validate(mod.get_config())


def apply_overrides(c: ml_collections.ConfigDict, overrides: dict[str, Any]) -> ml_collections.ConfigDict:
    """Dotted-key overrides ("train.steps": 100). Unknown keys and wrong types raise naming the key."""
    for key, value in overrides.items():
        node, *_ = c, None
        parts = key.split(".")
        for p in parts[:-1]:
            if p not in node:
                raise KeyError(f"unknown config key {key!r} (no section {p!r})")
            node = node[p]
        if parts[-1] not in node:
            raise KeyError(f"unknown config key {key!r}; keys here: {sorted(node.keys())}")
        try:
            node[parts[-1]] = value
        except TypeError as e:
            current = node[parts[-1]]
            spelling = " (Python's spelling: True or False)" if isinstance(current, bool) else ""
            raise TypeError(f"config key {key!r} takes {type(current).__name__} values like {current!r}, got {value!r}"
                            f"{spelling}") from e
    return validate(c)


def validate(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    ref = base_config()

    def walk(node, ref_node, prefix):
        for k in node.keys():
            path = f"{prefix}{k}"
            if k not in ref_node:
                raise KeyError(f"unknown config key {path!r}; valid keys here: {sorted(ref_node.keys())}")
            v, rv = node[k], ref_node[k]
            if isinstance(rv, ml_collections.ConfigDict):
                if not isinstance(v, ml_collections.ConfigDict):
                    raise TypeError(f"config key {path!r} must be a section")
                walk(v, rv, path + ".")
            elif rv is not None and v is not None and not _same_type(v, rv):
                raise TypeError(f"config key {path!r} must be {type(rv).__name__}, got {type(v).__name__} ({v!r})")

    walk(c, ref, "")
    if c.adapter.kind not in KINDS:
        raise ValueError(f"adapter.kind {c.adapter.kind!r} is not one of {KINDS}")
    if c.train.compute_dtype not in ("float32", "bfloat16"):
        raise ValueError(f"train.compute_dtype must be float32 or bfloat16, got {c.train.compute_dtype!r}")
    if c.train.sharer_cache not in ("on_the_fly", "precomputed", "stored"):
        raise ValueError(f"train.sharer_cache must be on_the_fly, precomputed or stored, got {c.train.sharer_cache!r}")
    if c.train.sharer_cache == "stored" and (c.data.task != "instruct"
                                             or not ADAPTER_KINDS[c.adapter.kind].shared_context):
        raise ValueError("train.sharer_cache='stored' stores shared contexts: it needs a shared-context adapter "
                         f"(lcf, c2c) on data.task='instruct', got adapter.kind={c.adapter.kind!r}, "
                         f"data.task={c.data.task!r}")
    if c.train.grad_accum_steps < 1 or c.data.batch_size % c.train.grad_accum_steps:
        raise ValueError(f"train.grad_accum_steps must be >= 1 and divide data.batch_size={c.data.batch_size}, "
                         f"got {c.train.grad_accum_steps}")
    if not 0 <= c.train.stop_after_step <= c.train.steps:
        raise ValueError(f"train.stop_after_step must be between 0 (run to train.steps) and train.steps="
                         f"{c.train.steps}, got {c.train.stop_after_step}")
    if not (math.isfinite(c.train.max_seconds) and c.train.max_seconds >= 0):
        raise ValueError(f"train.max_seconds must be a finite number of seconds >= 0 (0: no limit), "
                         f"got {c.train.max_seconds}")
    if c.data.context_store_dtype not in ("float32", "bfloat16"):
        raise ValueError(f"data.context_store_dtype must be float32 or bfloat16, got {c.data.context_store_dtype!r}")
    if c.pretrain.method not in ("sgd", "closed_form", "tokens"):
        raise ValueError(f"pretrain.method must be sgd, closed_form or tokens, got {c.pretrain.method!r}")
    if c.pretrain.steps > 0 and c.pretrain.method == "tokens" and c.adapter.lcfx.decoder != "embed":
        raise ValueError("pretrain.method='tokens' translates tokens into receiver input vectors: it needs "
                         "adapter.lcfx.decoder='embed'")
    if c.pretrain.translation_from and (c.pretrain.method != "tokens" or c.adapter.lcfx.decoder != "embed"):
        raise ValueError("pretrain.translation_from replaces the token translation: it needs pretrain.method='tokens' "
                         "and adapter.lcfx.decoder='embed'")
    if c.pretrain.locator_steps > 0 and (c.pretrain.method != "tokens" or c.adapter.lcfx.pooling != "window"):
        raise ValueError("pretrain.locator_steps > 0 trains a window pooling after the token translation: it needs "
                         "pretrain.method='tokens' and adapter.lcfx.pooling='window'")
    if (c.distill.kl_weight > 0 or c.distill.hidden_weight > 0) and c.data.teacher_context_len <= 0:
        raise ValueError("distill.kl_weight / distill.hidden_weight > 0 need data.teacher_context_len > 0 (the teacher's "
                         "passage length in receiver tokens)")
    if c.data.task not in ("qa", "instruct", "synthetic"):
        raise ValueError(f"data.task must be qa, instruct or synthetic, got {c.data.task!r}")
    if c.data.choice_file:
        if c.data.task != "instruct" or not ADAPTER_KINDS[c.adapter.kind].shared_context:
            raise ValueError("data.choice_file trains a shared-context adapter (lcf, c2c) on data.task='instruct', got "
                             f"adapter.kind={c.adapter.kind!r}, data.task={c.data.task!r}")
        if c.train.sharer_cache != "on_the_fly" or c.data.targets_file or c.distill.kl_weight or c.distill.hidden_weight:
            raise ValueError("data.choice_file reads its questions' contexts in the step: it takes "
                             "train.sharer_cache='on_the_fly' and no data.targets_file or distill weights")
        if c.data.choice_group < 2:
            raise ValueError(f"data.choice_group must be >= 2 (a question's rows), got {c.data.choice_group}")
        if c.distill.control_weight > 0 and c.data.batch_size < 2:
            raise ValueError("distill.control_weight > 0 reads each question's control from another question of the "
                             f"batch: it needs data.batch_size >= 2, got {c.data.batch_size}")
    if c.distill.control_weight < 0 or (c.distill.control_weight > 0 and not c.data.choice_file):
        raise ValueError(f"distill.control_weight must be >= 0 and is read by choice distillation only (set "
                         f"data.choice_file), got {c.distill.control_weight}")
    if c.data.mc_eval_examples > 0:
        if not ADAPTER_KINDS[c.adapter.kind].shared_context:
            raise ValueError("data.mc_eval_examples > 0 evaluates a shared-context adapter (lcf, c2c); "
                             f"adapter.kind={c.adapter.kind!r} is evaluated on data.eval_set")
        unknown = [s for s in c.data.mc_eval_sets if s not in MC_SETS]
        if unknown or not c.data.mc_eval_sets:
            raise ValueError(f"data.mc_eval_sets {list(c.data.mc_eval_sets)}: each must be one of {list(MC_SETS)}")
    adapter_config(c)  # the dataclass validates values
    return lock(c)


def _same_type(v, rv) -> bool:
    if isinstance(rv, bool) or isinstance(v, bool):
        return isinstance(v, bool) and isinstance(rv, bool)
    if isinstance(rv, float):
        return isinstance(v, (int, float))
    if isinstance(rv, (list, tuple)):
        return isinstance(v, (list, tuple))
    return isinstance(v, type(rv))


def adapter_config(c: ml_collections.ConfigDict):
    kind = c.adapter.kind
    cls = ADAPTER_KINDS[kind].config
    kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in c.adapter[kind].to_dict().items()}
    return cls(**kw)


def config_hash(c: ml_collections.ConfigDict) -> str:
    return hashlib.sha256(json.dumps(c.to_dict(), sort_keys=True, default=str).encode()).hexdigest()[:12]


def pair_config(sharer: str, receiver: str, kind: str, **sections) -> ml_collections.ConfigDict:
    """A config for one model pair and adapter kind; `sections` update sub-dicts, e.g. train={"lr": 3e-4}."""
    c = base_config()
    c.name = f"{sharer}_to_{receiver}_{kind}"
    c.model.sharer, c.model.receiver = sharer, receiver
    c.adapter.kind = kind
    c.train.workdir = f"runs/{c.name}"
    if ADAPTER_KINDS[kind].shared_context:  # both models read an instruction, the receiver continues it
        c.data.task = "instruct"
        c.data.train_sets = ["instruct/t0", "instruct/gpteacher"]
        c.data.max_target_len = 32
    for section, values in sections.items():
        for k, v in values.items():
            if k not in c[section]:
                raise KeyError(f"unknown config key {section}.{k!r}")
            c[section][k] = v
    return c


# The LCF-X parameters that stage 1 (closed-form latent alignment) fits and stage 2 keeps fixed.
LCFX_TRANSLATION_PARAMS = ["enc_w", "enc_b", "pool_wv", "pool_wo", "dec_wv", "dec_bv"]


def lcfx_recipe(sharer: str, receiver: str) -> ml_collections.ConfigDict:
    """The shipped adapter's two-stage LCF-X recipe for any model pair.

    Stage 1: the linear latent path's translation solved in closed form on 40 batches of training
    passages (train/latent_align.py). Stage 2: 150 steps of the QA loss on extractive qa_train rows
    train the unconditioned pooling, the slot keys and the value gates; the translation stays fixed.
    """
    c = pair_config(sharer, receiver, "lcfx",
                    data={"answer_in_context": True},
                    train={"steps": 150, "warmup_steps": 20, "eval_every": 150, "ckpt_every": 50,
                           "freeze": list(LCFX_TRANSLATION_PARAMS)},
                    pretrain={"method": "closed_form", "steps": 40, "max_len": 128})
    c.adapter.lcfx.conditioned, c.adapter.lcfx.linear, c.adapter.lcfx.pool_heads = False, True, 1
    return c


def parse_argv(argv: list[str]) -> ml_collections.ConfigDict:
    """`--config=PATH` plus `--config.section.key=value` overrides (values parsed as Python literals)."""
    import ast

    path, overrides = None, {}
    for arg in argv:
        if arg.startswith("--config="):
            path = arg.split("=", 1)[1]
        elif arg.startswith("--config."):
            key, sep, raw = arg[len("--config."):].partition("=")
            if not sep:
                raise ValueError(f"override {arg!r} needs a value: --config.{key}=VALUE")
            try:
                value = ast.literal_eval(raw)
            except (ValueError, SyntaxError):
                value = raw  # a bare string
            overrides[key] = value
        else:
            raise ValueError(f"unknown argument {arg!r}; usage: --config=configs/X.py [--config.train.steps=100 ...]")
    if path is None:
        raise ValueError("missing --config=configs/X.py")
    c = load_config_file(path)
    c.unlock()
    return apply_overrides(c, overrides)
