"""Tokenisation of QA examples for a (sharer, receiver) model pair, length buckets and batching.

Layout of one example (`QAFeatures.pad`, mode "train": a `batches.QABatch` without the batch axis):

    sharer.ids     [Ls]  left-padded:  pad pad pad BOS? passage...        (sharer.mask marks tokens)
    receiver_ids   [Lr]  right-padded: BOS? prompt... target... EOS pad   (receiver_mask marks tokens)
    loss_mask      [Lr]  True exactly at the target tokens (answer tokens and EOS)

`loss_mask[t]` marks the *token* at position t: a next-token loss uses the logits of position
t - 1 for it (i.e. `loss_mask[1:]` against `logits[:-1]`). Ls and Lr are length buckets (the
smallest configured bucket that fits) so that jit sees few shapes. In mode "generate" the
receiver part is only the prompt, left-padded (`batches.PromptBatch`), so every row of a batch ends
at the same position and decoding appends at the right.

`BucketedBatches` yields index batches whose examples share a bucket, in an order that is a
function of (seed, epoch) only; `state()` / `restore()` resume exactly. `QABatchIterator` puts
the two together and yields batches of stacked numpy arrays.
"""
from __future__ import annotations

import dataclasses
from typing import Hashable, Iterator, Optional, Sequence, Union

import numpy as np

from lcf_jax.data.batches import PromptBatch, QABatch, SharerRows, TeacherRows, stack

DEFAULT_PROMPT_TEMPLATE = "Question: {question}\nAnswer:"
DEFAULT_TARGET_TEMPLATE = " {answer}"
DEFAULT_SHARER_TEMPLATE = "{context}"


def default_buckets(max_len: int, smallest: int = 32) -> tuple[int, ...]:
    """Powers of two from `smallest` up to (and ending exactly at) `max_len`."""
    if max_len <= 0:
        raise ValueError("max_len must be positive")
    out, b = [], smallest
    while b < max_len:
        out.append(b)
        b *= 2
    out.append(max_len)
    return tuple(out)


def bucket_for(length: int, buckets: Sequence[int]) -> int:
    """Smallest bucket >= length."""
    for b in sorted(buckets):
        if length <= b:
            return int(b)
    raise ValueError(f"length {length} exceeds the largest bucket {max(buckets)}")


@dataclasses.dataclass
class TokenizedQA:
    """Unpadded, already truncated token ids of one QA example."""

    id: str
    sharer: np.ndarray  # int32 [n_s], special prefix (e.g. BOS) included
    prompt: np.ndarray  # int32 [n_p], special prefix included
    target: np.ndarray  # int32 [n_t], ends with EOS unless truncated
    answers: list[str]
    teacher_context: Optional[np.ndarray] = None  # int32 [n_c]: `Context: {passage}\n` for the teacher


def positions_from_mask(mask: np.ndarray) -> np.ndarray:
    """int32 RoPE positions of right-padded rows: 0, 1, ... over the valid tokens, 0 on the padding (last axis)."""
    return np.maximum(np.cumsum(mask, axis=-1) - 1, 0).astype(np.int32)


def pad_id(tokenizer) -> int:
    for attr in ("pad_token_id", "eos_token_id"):
        v = getattr(tokenizer, attr, None)
        if v is not None:
            return int(v)
    return 0


def _special_prefix(tokenizer) -> list[int]:
    """Ids the tokenizer puts before the text when adding special tokens (e.g. [BOS])."""
    with_sp = list(tokenizer("a", add_special_tokens=True)["input_ids"])
    without = list(tokenizer("a", add_special_tokens=False)["input_ids"])
    for start in range(len(with_sp) - len(without) + 1):
        if with_sp[start:start + len(without)] == without:
            return with_sp[:start]
    return []


class QAFeatures:
    """Turns QA examples (see sources.py) into sharer / receiver token arrays.

    Args:
      sharer_tokenizer, receiver_tokenizer: Hugging Face tokenizers (callable, with
        `eos_token_id` for the receiver).
      max_sharer_len: passage tokens kept (special prefix included); the end is cut
        (`sharer_truncation="right"`) or the start (`"left"`).
      max_prompt_len: receiver prompt tokens kept; the start of the question is cut so the end of
        the prompt (the final question and "Answer:") survives; the special prefix is kept.
      max_target_len: target tokens kept (" " + answer + EOS, then cut at the end).
      prompt_template / target_template / sharer_template: format strings with {question},
        {answer}, {context}.
      sharer_buckets / receiver_buckets: allowed padded lengths; defaults are powers of two up to
        max_sharer_len and max_prompt_len + max_target_len.
      add_special_tokens: whether the sharer passage and the receiver prompt start with the
        tokenizer's special prefix (BOS for Gemma; nothing for SmolLM2).
    """

    def __init__(self, sharer_tokenizer, receiver_tokenizer, *, max_sharer_len: int = 512,
                 max_prompt_len: int = 64, max_target_len: int = 32,
                 prompt_template: str = DEFAULT_PROMPT_TEMPLATE,
                 target_template: str = DEFAULT_TARGET_TEMPLATE,
                 sharer_template: str = DEFAULT_SHARER_TEMPLATE,
                 sharer_buckets: Optional[Sequence[int]] = None,
                 receiver_buckets: Optional[Sequence[int]] = None,
                 add_special_tokens: bool = True, sharer_truncation: str = "right",
                 teacher_context_len: int = 0, teacher_template: str = "Context: {context}\n"):
        if sharer_truncation not in ("right", "left"):
            raise ValueError("sharer_truncation must be 'right' or 'left'")
        self.sharer_tokenizer = sharer_tokenizer
        self.receiver_tokenizer = receiver_tokenizer
        self.max_sharer_len = int(max_sharer_len)
        self.max_prompt_len = int(max_prompt_len)
        self.max_target_len = int(max_target_len)
        self.prompt_template = prompt_template
        self.target_template = target_template
        self.sharer_template = sharer_template
        self.sharer_truncation = sharer_truncation
        self.teacher_context_len = int(teacher_context_len)
        self.teacher_template = teacher_template
        self.sharer_buckets = tuple(sorted(sharer_buckets or default_buckets(self.max_sharer_len)))
        self.receiver_buckets = tuple(sorted(
            receiver_buckets or default_buckets(self.max_prompt_len + self.max_target_len)))
        if self.sharer_buckets[-1] < self.max_sharer_len:
            raise ValueError(f"largest sharer bucket {self.sharer_buckets[-1]} < max_sharer_len")
        if self.receiver_buckets[-1] < self.max_prompt_len + self.max_target_len:
            raise ValueError("largest receiver bucket < max_prompt_len + max_target_len")
        eos = getattr(receiver_tokenizer, "eos_token_id", None)
        if eos is None:
            raise ValueError("the receiver tokenizer needs an eos_token_id for targets")
        self.receiver_eos_id = int(eos)
        self.sharer_pad_id = pad_id(sharer_tokenizer)
        self.receiver_pad_id = pad_id(receiver_tokenizer)
        self._sharer_prefix = _special_prefix(sharer_tokenizer) if add_special_tokens else []
        self._receiver_prefix = _special_prefix(receiver_tokenizer) if add_special_tokens else []
        if len(self._sharer_prefix) >= self.max_sharer_len:
            raise ValueError("max_sharer_len leaves no room after the special prefix")
        if len(self._receiver_prefix) >= self.max_prompt_len:
            raise ValueError("max_prompt_len leaves no room after the special prefix")

    @property
    def receiver_prefix_len(self) -> int:
        """Tokens of the receiver's special prefix (its BOS) that start every prompt row."""
        return len(self._receiver_prefix)

    @property
    def teacher_len(self) -> int:
        """Padded length of a teacher row: prefix + passage + prompt + target."""
        n = len(self._receiver_prefix) + self.teacher_context_len + self.max_prompt_len + self.max_target_len
        return -(-n // 32) * 32

    # ------------------------------------------------------------ tokenisation

    @staticmethod
    def _ids(tokenizer, texts: list[str]) -> list[list[int]]:
        if not texts:
            return []
        return [list(x) for x in tokenizer(texts, add_special_tokens=False)["input_ids"]]

    def tokenize_many(self, examples: Sequence[dict]) -> list[TokenizedQA]:
        """Tokenise and truncate QA examples (batched tokenizer calls)."""
        examples = list(examples)
        passages = [self.sharer_template.format(context=e["sharer_context"]) for e in examples]
        prompts = [self.prompt_template.format(question=e["question"]) for e in examples]
        targets = [self.target_template.format(answer=e["target"]) for e in examples]
        s_ids = self._ids(self.sharer_tokenizer, passages)
        p_ids = self._ids(self.receiver_tokenizer, prompts)
        t_ids = self._ids(self.receiver_tokenizer, targets)
        teacher = ([x[: self.teacher_context_len] for x in self._ids(
            self.receiver_tokenizer, [self.teacher_template.format(context=e["sharer_context"]) for e in examples])]
            if self.teacher_context_len > 0 else [None] * len(examples))
        out = []
        s_room = self.max_sharer_len - len(self._sharer_prefix)
        p_room = self.max_prompt_len - len(self._receiver_prefix)
        for e, s, p, t, tc in zip(examples, s_ids, p_ids, t_ids, teacher):
            s = s[:s_room] if self.sharer_truncation == "right" else s[max(0, len(s) - s_room):]
            p = p[max(0, len(p) - p_room):]
            t = (t + [self.receiver_eos_id])[: self.max_target_len]
            out.append(TokenizedQA(
                id=str(e.get("id", "")),
                sharer=np.asarray(self._sharer_prefix + s, np.int32),
                prompt=np.asarray(self._receiver_prefix + p, np.int32),
                target=np.asarray(t, np.int32),
                answers=list(e.get("answers") or [e["target"]]),
                teacher_context=None if tc is None else np.asarray(tc, np.int32),
            ))
        return out

    def tokenize(self, example: dict) -> TokenizedQA:
        return self.tokenize_many([example])[0]

    # ------------------------------------------------------------ buckets and padding

    def bucket_key(self, tok: TokenizedQA, mode: str = "train") -> tuple[int, int]:
        """(sharer bucket, receiver bucket) of a tokenised example."""
        r_len = len(tok.prompt) + (len(tok.target) if mode == "train" else 0)
        return (bucket_for(len(tok.sharer), self.sharer_buckets),
                bucket_for(r_len, self.receiver_buckets))

    def pad(self, tok: TokenizedQA, mode: str = "train", key: Optional[tuple[int, int]] = None
            ) -> Union[QABatch, PromptBatch]:
        """The padded arrays of one example at its bucket (or at `key`, which must fit): a `QABatch` (mode
        "train") or `PromptBatch` (mode "generate") without the batch axis."""
        if mode not in ("train", "generate"):
            raise ValueError("mode must be 'train' or 'generate'")
        ls, lr = key if key is not None else self.bucket_key(tok, mode)
        ns = len(tok.sharer)
        if ns > ls:
            raise ValueError(f"{ns} sharer tokens do not fit bucket {ls}")
        sharer_ids = np.full(ls, self.sharer_pad_id, np.int32)
        sharer_mask = np.zeros(ls, bool)
        sharer_ids[ls - ns:] = tok.sharer
        sharer_mask[ls - ns:] = True
        sharer = SharerRows(sharer_ids, sharer_mask, positions_from_mask(sharer_mask))
        n_p, n_t = len(tok.prompt), len(tok.target)
        ids = np.full(lr, self.receiver_pad_id, np.int32)
        mask = np.zeros(lr, bool)
        if mode == "train":
            if n_p + n_t > lr:
                raise ValueError(f"{n_p + n_t} receiver tokens do not fit bucket {lr}")
            ids[:n_p] = tok.prompt
            ids[n_p:n_p + n_t] = tok.target
            mask[:n_p + n_t] = True
            loss = np.zeros(lr, bool)
            loss[n_p:n_p + n_t] = True
            teacher = self._teacher_row(tok) if tok.teacher_context is not None else None
            return QABatch(sharer, ids, mask, loss, np.bool_(True), np.int32(-1), teacher)
        if n_p > lr:
            raise ValueError(f"{n_p} prompt tokens do not fit bucket {lr}")
        ids[lr - n_p:] = tok.prompt
        mask[lr - n_p:] = True
        return PromptBatch(sharer, ids, mask, positions_from_mask(mask), np.bool_(True), np.int32(-1))

    def _teacher_row(self, tok: TokenizedQA) -> TeacherRows:
        """The teacher's row, right-padded: [prefix | passage | prompt after its prefix | target].
        The offset is the passage's length: student row position t (after the prefix) holds the
        same token as teacher row position t + offset."""
        n = self.teacher_len
        pre = len(self._receiver_prefix)
        row = np.concatenate([tok.prompt[:pre], tok.teacher_context, tok.prompt[pre:], tok.target])
        ids = np.full(n, self.receiver_pad_id, np.int32)
        ids[:len(row)] = row
        mask = np.zeros(n, bool)
        mask[:len(row)] = True
        return TeacherRows(ids, mask, np.int32(len(tok.teacher_context)))

    def __call__(self, example: dict, mode: str = "train") -> Union[QABatch, PromptBatch]:
        return self.pad(self.tokenize(example), mode)

    def collate(self, toks: Sequence[TokenizedQA], mode: str = "train", batch_size: Optional[int] = None,
                rows: Optional[Sequence[int]] = None) -> Union[QABatch, PromptBatch]:
        """Stack examples of one bucket; rows beyond len(toks) (up to batch_size) are padding copies of the
        first example with `example_mask` False. `rows` (default 0, 1, ...) become `example_rows`."""
        if not toks:
            raise ValueError("empty batch")
        key = self.bucket_key(toks[0], mode)
        for t in toks[1:]:
            if self.bucket_key(t, mode) != key:
                raise ValueError("a batch must hold examples of one bucket")
        batch_size = len(toks) if batch_size is None else batch_size
        if batch_size < len(toks):
            raise ValueError("more examples than batch_size")
        padded = [self.pad(t, mode, key) for t in toks]
        batch = stack(padded + [padded[0]] * (batch_size - len(toks)))
        index = np.arange(len(toks)) if rows is None else np.asarray(rows)
        return batch._replace(example_mask=np.arange(batch_size) < len(toks),
                              example_rows=np.concatenate([index, np.full(batch_size - len(toks), index[0])]
                                                          ).astype(np.int32))


class BucketedBatches:
    """Deterministic, resumable iterator of index batches whose examples share a bucket key.

    The batches of epoch e are a function of (seed, e) and the keys only: examples are permuted
    with a generator seeded by (seed, e), grouped by key (first-come order of the permutation),
    cut into batches of `batch_size`, and the batch order is permuted again. With
    `shuffle=False` examples keep their order, batches go bucket by bucket (keys sorted).
    `drop_remainder=False` keeps each bucket's short last batch (padded later by the collator).
    """

    def __init__(self, keys: Sequence[Hashable], batch_size: int, seed: int = 0, *,
                 shuffle: bool = True, drop_remainder: bool = True,
                 num_epochs: Optional[int] = None):
        if batch_size <= 0:
            raise ValueError("batch_size must be positive")
        if int(seed) < 0:
            raise ValueError("seed must be non-negative")
        self.keys = list(keys)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.shuffle = shuffle
        self.drop_remainder = drop_remainder
        self.num_epochs = num_epochs
        self.epoch = 0
        self.position = 0
        self._plan_epoch: Optional[int] = None
        self._plan: list[np.ndarray] = []

    def epoch_plan(self, epoch: int) -> list[np.ndarray]:
        rng = np.random.default_rng([self.seed, int(epoch)])
        n = len(self.keys)
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        groups: dict[Hashable, list[int]] = {}
        for i in order:
            groups.setdefault(self.keys[i], []).append(int(i))
        batches = []
        try:
            ordered = sorted(groups)
        except TypeError:  # keys of mixed / unorderable types
            ordered = sorted(groups, key=repr)
        for key in ordered:
            idx = groups[key]
            for start in range(0, len(idx), self.batch_size):
                chunk = idx[start:start + self.batch_size]
                if len(chunk) < self.batch_size and self.drop_remainder:
                    break
                batches.append(np.asarray(chunk, np.int64))
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def _current_plan(self) -> list[np.ndarray]:
        if self._plan_epoch != self.epoch:
            self._plan = self.epoch_plan(self.epoch)
            self._plan_epoch = self.epoch
        return self._plan

    def __len__(self) -> int:
        """Batches per epoch."""
        return len(self.epoch_plan(self.epoch))

    def __iter__(self) -> "BucketedBatches":
        return self

    def __next__(self) -> np.ndarray:
        plan = self._current_plan()
        if not plan:
            raise ValueError("no batch fits: every bucket has fewer examples than batch_size "
                             "(use drop_remainder=False or a smaller batch)")
        while self.position >= len(plan):
            if self.num_epochs is not None and self.epoch + 1 >= self.num_epochs:
                raise StopIteration
            self.epoch += 1
            self.position = 0
            plan = self._current_plan()
        batch = plan[self.position]
        self.position += 1
        return batch

    def state(self) -> dict:
        """JSON-able position: the next batch is batch `position` of epoch `epoch`."""
        return {"seed": self.seed, "epoch": self.epoch, "position": self.position,
                "num_examples": len(self.keys)}

    def restore(self, state: dict) -> None:
        if int(state.get("seed", self.seed)) != self.seed:
            raise ValueError(f"state is for seed {state['seed']}, iterator has seed {self.seed}")
        if int(state.get("num_examples", len(self.keys))) != len(self.keys):
            raise ValueError("state is for a data set of a different size")
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])


class QABatchIterator:
    """Batches of padded QA arrays: `BucketedBatches` over `QAFeatures`-tokenised examples."""

    def __init__(self, features: QAFeatures, tokenized: Sequence[TokenizedQA], batch_size: int,
                 seed: int = 0, *, mode: str = "train", shuffle: bool = True,
                 drop_remainder: bool = True, num_epochs: Optional[int] = None):
        self.features = features
        self.tokenized = list(tokenized)
        self.mode = mode
        self.batch_size = batch_size
        keys = [features.bucket_key(t, mode) for t in self.tokenized]
        self.batches = BucketedBatches(keys, batch_size, seed, shuffle=shuffle,
                                       drop_remainder=drop_remainder, num_epochs=num_epochs)

    def __iter__(self) -> Iterator[Union[QABatch, PromptBatch]]:
        return self

    def __next__(self) -> Union[QABatch, PromptBatch]:
        idx = next(self.batches)
        return self.features.collate([self.tokenized[i] for i in idx], self.mode, self.batch_size, rows=idx)

    def __len__(self) -> int:
        return len(self.batches)

    def state(self) -> dict:
        return self.batches.state()

    def restore(self, state: dict) -> None:
        self.batches.restore(state)
