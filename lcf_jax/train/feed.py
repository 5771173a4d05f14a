"""Batches for the loop: resumable iterators with `state()`/`restore()`, one per data task.

`synthetic`: random tokens in the batch layouts `objective.py` reads (`data.batches`) (tests, benchmarks);
deterministic in (seed, step) so its state is one integer.
`qa`: the TFDS-built QA sets (different contexts), tokenised for the model pair by `QAFeatures`.
`instruct`: the TFDS-built instruction sets read by both models (shared context, `data/shared_context.py`).
"""
from __future__ import annotations

from typing import Optional, Union

import numpy as np

from lcf_jax.data.batches import QABatch, SharedContextBatch, SharerKV, SharerRows, TeacherRows
from lcf_jax.data.pipeline import positions_from_mask
from lcf_jax.models.config import ModelConfig


class PositionIterator:
    """A batch iterator deterministic in (seed, position): its checkpointed state is one integer."""
    position: int = 0

    def state(self) -> dict:
        return {"position": self.position}

    def restore(self, state: dict) -> None:
        self.position = int(state["position"])

    def __iter__(self):
        return self


class SyntheticBatches(PositionIterator):
    def __init__(self, shared_context: bool, sharer: ModelConfig, receiver: ModelConfig, batch_size: int, seed: int,
                 sharer_len: int = 16, prompt_len: int = 6, target_len: int = 4, context_len: int = 12,
                 teacher: bool = False):
        self.shared_context, self.sharer, self.receiver, self.teacher = shared_context, sharer, receiver, teacher
        self.batch_size, self.seed = batch_size, seed
        self.sharer_len, self.prompt_len, self.target_len, self.context_len = sharer_len, prompt_len, target_len, context_len
        self.position = 0

    def __next__(self) -> Union[QABatch, SharedContextBatch]:
        rng = np.random.RandomState([self.seed, self.position])
        self.position += 1
        b = self.batch_size
        s_len = rng.randint(self.sharer_len // 2, self.sharer_len + 1, b)
        s_mask = np.arange(self.sharer_len)[None] >= (self.sharer_len - s_len)[:, None]
        s_ids = np.where(s_mask, rng.randint(3, self.sharer.vocab_size, (b, self.sharer_len)), 0).astype(np.int32)
        sharer = SharerRows(s_ids, s_mask, positions_from_mask(s_mask))
        tr = self.prompt_len + self.target_len
        ids = rng.randint(3, self.receiver.vocab_size, (b, tr)).astype(np.int32)
        # The target copies the sharer's first tokens (mod vocab): learnable only through the adapter.
        first = np.take_along_axis(s_ids, (self.sharer_len - s_len)[:, None] + np.arange(self.target_len), 1)
        ids[:, self.prompt_len:] = 3 + first % (self.receiver.vocab_size - 3)
        r_mask = np.ones((b, tr), bool)
        loss_mask = np.arange(tr)[None].repeat(b, 0) >= self.prompt_len
        if self.shared_context:
            tc = self.context_len
            c_mask = np.arange(tc)[None] >= (tc - np.minimum(s_len, tc))[:, None]
            c_ids = np.where(c_mask, rng.randint(3, self.receiver.vocab_size, (b, tc)), 0).astype(np.int32)
            # receiver slot k holds real token j -> the sharer's j-th real token (monotone alignment)
            align = np.full((b, tc), -1, np.int32)
            for i in range(b):
                r_slots, s_slots = np.nonzero(c_mask[i])[0], np.nonzero(s_mask[i])[0]
                align[i, r_slots] = s_slots[np.minimum(np.arange(len(r_slots)), len(s_slots) - 1)]
            return SharedContextBatch(sharer, c_ids, c_mask, align, ids, r_mask, loss_mask, np.ones(b, bool))
        teacher = None
        if self.teacher:  # the teacher reads the passage (the sharer's tokens, in the receiver's vocabulary) first
            passage = 3 + s_ids % (self.receiver.vocab_size - 3)
            teacher = TeacherRows(np.concatenate([passage, ids], 1).astype(np.int32),
                                  np.concatenate([np.ones_like(s_mask), r_mask], 1),
                                  np.full((b,), self.sharer_len, np.int32))
        return QABatch(sharer, ids, r_mask, loss_mask, np.ones(b, bool), np.arange(b, dtype=np.int32), teacher)


def answer_in_context(example: dict) -> bool:
    """Whether any reference answer occurs (case-insensitively) in the sharer's passage: the
    extractive rows, the kind of question SQuAD asks."""
    ctx = example["sharer_context"].lower()
    return any(a.strip() and a.strip().lower() in ctx for a in example["answers"])


class QAData:
    """Tokenised train and eval QA examples for one model pair (different contexts)."""

    def __init__(self, cfg, sharer_tok, receiver_tok):
        from lcf_jax.data import pipeline, tfds_builders

        d = cfg.data
        data_dir = d.data_dir or None
        cache_dir = d.cache_dir or None
        self.features = pipeline.QAFeatures(sharer_tok, receiver_tok, max_sharer_len=d.max_sharer_len,
                                            max_prompt_len=d.max_prompt_len, max_target_len=d.max_target_len,
                                            prompt_template=d.prompt_template,
                                            teacher_context_len=d.teacher_context_len)
        train: list[dict] = []
        for name in d.train_sets:
            tfds_builders.build(name, data_dir, cache_dir)
            train.extend(tfds_builders.load(name, "train", data_dir, cache_dir))
        if d.answer_in_context:
            train = [e for e in train if answer_in_context(e)]
        if d.max_train_examples > 0:
            order = np.random.RandomState(d.seed).permutation(len(train))[: d.max_train_examples]
            train = [train[i] for i in sorted(order)]
        if not train:
            raise ValueError(f"data.train_sets {list(d.train_sets)} gave no examples")
        tfds_builders.build(d.eval_set, data_dir, cache_dir)
        evals = tfds_builders.load(d.eval_set, d.eval_split, data_dir, cache_dir)
        self.eval_examples = [evals[i] for i in range(min(d.eval_examples, len(evals)))]
        self.train_examples = train
        self.train_tokens = self.features.tokenize_many(train)
        self.batch_size = d.batch_size
        self.seed = d.seed

    def train_iterator(self):
        from lcf_jax.data import pipeline
        return pipeline.QABatchIterator(self.features, self.train_tokens, self.batch_size, self.seed, mode="train")


def shared_context_examples(cfg) -> list[dict]:
    """The instruction examples a shared-context run trains on ({"id", "prompt", "completion"}), in file order:
    data.train_sets, then data.max_train_examples of them drawn with data.seed."""
    from lcf_jax.data import tfds_builders

    d = cfg.data
    data_dir, cache_dir = d.data_dir or None, d.cache_dir or None
    train: list[dict] = []
    for name in d.train_sets:
        tfds_builders.build(name, data_dir, cache_dir)
        train.extend(tfds_builders.load(name, "train", data_dir, cache_dir))
    if d.max_train_examples > 0:
        order = np.random.RandomState(d.seed).permutation(len(train))[: d.max_train_examples]
        train = [train[i] for i in sorted(order)]
    return train


class TargetsFileError(ValueError):
    """data.targets_file does not give a target for every training example."""


def with_targets(examples: list[dict], path: str) -> list[dict]:
    """The examples with each completion replaced by the one `path` (JSON lines of {"id", "completion"}) gives for
    its id: e.g. the sharer's own continuation (`train/sharer_targets.py`), which the receiver can predict only
    through what the adapter carries."""
    import json
    from pathlib import Path

    if not Path(path).is_file():
        raise TargetsFileError(f"data.targets_file={path!r} does not exist: write it with python -m "
                               "lcf_jax.train.sharer_targets --config=<this config> --out <file>")
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    targets = {r["id"]: r["completion"] for r in rows}
    missing = [e["id"] for e in examples if e["id"] not in targets]
    if missing:
        raise TargetsFileError(f"data.targets_file={path!r} has no target for {len(missing)} of the {len(examples)} "
                               f"training examples (first: {missing[0]!r}): it was written for other data.* settings; "
                               "write it again with python -m lcf_jax.train.sharer_targets and the same config")
    return [dict(e, completion=targets[e["id"]]) for e in examples]


class SharedContextData:
    """Tokenised shared-context training examples (instruction data) for one model pair."""

    def __init__(self, cfg, sharer_tok, receiver_tok):
        from lcf_jax.data import shared_context

        d = cfg.data
        self.features = shared_context.SharedContextFeatures(sharer_tok, receiver_tok, max_context_len=d.max_sharer_len,
                                                             max_target_len=d.max_target_len)
        train = shared_context_examples(cfg)
        if d.targets_file:
            train = with_targets(train, d.targets_file)
        self.train_tokens = self.features.tokenize_many(train)
        if not self.train_tokens:
            raise ValueError(f"data.train_sets {list(d.train_sets)} gave no shared-context examples")
        self.batch_size, self.seed = d.batch_size, d.seed

    def train_iterator(self):
        from lcf_jax.data import shared_context
        return shared_context.SharedContextBatches(self.features, self.train_tokens, self.batch_size, self.seed)


class ChoiceData:
    """Choice-distillation questions (`data.choice_file`) tokenised for one model pair, read as T1 reads its own."""

    def __init__(self, cfg, sharer_tok, receiver_tok):
        from lcf_jax.data import choice_questions, shared_context

        d = cfg.data
        self.features = shared_context.mc_features(sharer_tok, receiver_tok, max_context_len=d.max_sharer_len,
                                                   max_choice_len=d.max_target_len)
        self.questions = choice_questions.read_scored(d.choice_file)
        self.group, self.batch_size, self.seed = d.choice_group, d.batch_size, d.seed
        self.controls = cfg.distill.control_weight > 0

    def train_iterator(self):
        from lcf_jax.data.choice_questions import ChoiceBatches
        return ChoiceBatches(self.features, self.questions, self.group, self.batch_size, self.seed,
                             controls=self.controls)


TASK_ROLES = {"qa": (False,), "instruct": (True,), "synthetic": (False, True)}   # task -> shared_context roles


def make_feed(cfg, kind: str, sharer: ModelConfig, receiver: ModelConfig, tokenizers: Optional[tuple] = None):
    """(train iterator, data object or None). The data object of task 'qa' also serves evaluation."""
    from lcf_jax.adapters import ADAPTER_KINDS
    task, shared = cfg.data.task, ADAPTER_KINDS[kind].shared_context
    if shared not in TASK_ROLES[task]:
        raise ValueError(f"data.task={task!r} does not train a {'shared' if shared else 'different'}-context adapter "
                         f"({kind!r}): different-context adapters (lcfx) train on 'qa', shared-context ones (lcf, c2c) "
                         "on 'instruct'")
    if task == "synthetic":
        return SyntheticBatches(shared, sharer, receiver, cfg.data.batch_size, cfg.data.seed,
                                teacher=cfg.data.teacher_context_len > 0), None
    if tokenizers is None:
        raise ValueError(f"data.task={task!r} needs the models' tokenizers (bundled models)")
    if task == "instruct":
        return (ChoiceData if cfg.data.choice_file else SharedContextData)(cfg, *tokenizers).train_iterator(), None
    qa = QAData(cfg, *tokenizers)
    return qa.train_iterator(), qa


class WithSharerCache:
    """Attaches the sharer's cache (`batches.SharerKV`) to each batch, computed outside the differentiated step.

    With `store=True` the caches are kept in host memory keyed by the iterator state that produced
    the batch, so a replayed batch (resume, repeated evaluation) reuses them. Storage is large
    (layers x kv_width x 2 x tokens per example: 11.8 MB for SmolLM2 at 256 tokens in float32),
    which is why on-the-fly is the default.
    """

    def __init__(self, inner, compute, store: bool = False):
        self.inner, self.compute, self.store = inner, compute, store
        self._cache: dict[str, SharerKV] = {}

    def state(self) -> dict:
        return self.inner.state()

    def restore(self, state: dict) -> None:
        self.inner.restore(state)

    def __iter__(self):
        return self

    def __next__(self):
        import json
        key = json.dumps(self.inner.state(), sort_keys=True)
        batch = next(self.inner)
        kv = self._cache.get(key)
        if kv is None:
            kv = SharerKV(*(np.asarray(x) for x in self.compute(batch.sharer)))
            if self.store:
                self._cache[key] = kv
        return batch._replace(sharer_kv=kv)
