"""Shared-context batches (LCF, C2C): one text read by both models, then the receiver's continuation.

Each instruction example {prompt, completion} becomes
  * the context `context_template.format(prompt=...)`, tokenized by BOTH tokenizers over the same
    characters (a long one keeps its last max_context_len sharer tokens, where an instruction's
    question is: `adapters.align.tokenize_pair(keep="end")`),
    with each receiver token's sharer token (`align_offsets`: the last sharer token covering it);
  * the receiver's target `target_template.format(completion=...)` + EOS, at most max_target_len.

The receiver's context cache holds all context tokens but the last; the continuation it runs on the
fused cache is [last context token] + target, so every target token (the first one included) is
predicted, and from a fused cache. Batch layout (`batches.SharedContextBatch`, what `train/objective.py` reads):
  sharer.ids/.mask/.positions [B, Ts]               the context, sharer tokens, left-padded
  receiver_ctx_ids/receiver_ctx_mask [B, Tc]        the context but its last token, receiver tokens, left-padded
  alignment [B, Tc]                                 sharer cache slot fused into each receiver slot, -1 on padding
  receiver_ids/receiver_mask/loss_mask [B, Tr]      [last context token] + target, right-padded; loss on the target
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np

from lcf_jax.adapters.align import tokenize_pair
from lcf_jax.data.batches import SharedContextBatch, SharerRows
from lcf_jax.data.pipeline import BucketedBatches, bucket_for, default_buckets, pad_id, positions_from_mask

DEFAULT_CONTEXT_TEMPLATE = "{prompt}\n"
DEFAULT_TARGET_TEMPLATE = "{completion}"
# How a multiple-choice question is read (T1, and choice distillation): each choice " {choice}" continues it.
MC_PROMPT = "Question: {question}\nAnswer:"


@dataclasses.dataclass
class TokenizedShared:
    id: str
    sharer: np.ndarray          # [Ts] context, sharer tokens
    receiver_ctx: np.ndarray    # [Tc + 1] context, receiver tokens (the last one opens the continuation)
    alignment: np.ndarray       # [Tc + 1] sharer token index per receiver context token
    target: np.ndarray          # [Tt] receiver target tokens, EOS included


class SharedContextFeatures:
    def __init__(self, sharer_tokenizer, receiver_tokenizer, *, max_context_len: int = 256, max_target_len: int = 32,
                 context_template: str = DEFAULT_CONTEXT_TEMPLATE, target_template: str = DEFAULT_TARGET_TEMPLATE,
                 append_eos: bool = True):
        if max_context_len < 2 or max_target_len < 1:
            raise ValueError(f"max_context_len must be >= 2 and max_target_len >= 1, got {max_context_len}, "
                             f"{max_target_len}")
        eos = getattr(receiver_tokenizer, "eos_token_id", None)
        if eos is None:
            raise ValueError("the receiver tokenizer needs an eos_token_id for targets")
        self.sharer_tokenizer, self.receiver_tokenizer = sharer_tokenizer, receiver_tokenizer
        self.max_context_len, self.max_target_len = int(max_context_len), int(max_target_len)
        self.context_template, self.target_template = context_template, target_template
        self.eos, self.append_eos = int(eos), bool(append_eos)
        self.sharer_pad, self.receiver_pad = pad_id(sharer_tokenizer), pad_id(receiver_tokenizer)
        self.context_buckets = default_buckets(self.max_context_len)
        self.target_buckets = default_buckets(self.max_target_len + 1, smallest=8)

    def tokenize(self, example: dict) -> Optional[TokenizedShared]:
        """None when the context yields fewer than 2 receiver tokens (nothing to fuse)."""
        text = self.context_template.format(prompt=example["prompt"])
        s_ids, r_ids, align, _ = tokenize_pair(text, self.sharer_tokenizer, self.receiver_tokenizer,
                                               self.max_context_len, keep="end")
        if len(r_ids) < 2 or not s_ids:
            return None
        target = self.receiver_tokenizer(self.target_template.format(completion=example["completion"]),
                                         add_special_tokens=False)["input_ids"]
        target = (list(target) + [self.eos] * self.append_eos)[: self.max_target_len]
        if not target:
            return None
        return TokenizedShared(str(example.get("id", "")), np.asarray(s_ids, np.int32), np.asarray(r_ids, np.int32),
                               np.asarray(align, np.int32), np.asarray(target, np.int32))

    def tokenize_sharer_prefixed(self, example: dict, sharer_prefix: str) -> Optional[TokenizedShared]:
        """As `tokenize`, with the sharer alone reading `sharer_prefix` before the prompt: its cache of the context
        has attended to that text, the receiver's has not, and each receiver token stays fused with the sharer token
        of its own characters (a long prefix loses its start, never the context). A probe of what the sharer's cache
        can carry (`eval/hint_probe.py`)."""
        tok = self.tokenize(example)
        longer = self.tokenize({**example, "prompt": sharer_prefix + example["prompt"]})
        if tok is None or longer is None:
            return None
        bos = getattr(self.sharer_tokenizer, "bos_token_id", None)
        head = int(bos is not None and len(tok.sharer) > 0 and tok.sharer[0] == bos)   # the BOS stays first
        m = len(longer.sharer) - len(tok.sharer)
        if m <= 0 or list(longer.sharer[:head]) != list(tok.sharer[:head]) \
                or list(longer.sharer[head + m:]) != list(tok.sharer[head:]):
            raise ValueError(f"the sharer prefix {sharer_prefix[:40]!r} changes how the context "
                             f"{example['prompt'][:40]!r} tokenizes, or leaves it no room (max_context_len "
                             f"{self.max_context_len}): end the prefix with a newline and keep it short")
        alignment = np.where(tok.alignment >= head, tok.alignment + m, tok.alignment).astype(np.int32)
        return dataclasses.replace(tok, sharer=longer.sharer, alignment=alignment)

    def tokenize_many(self, examples: Sequence[dict]) -> list[TokenizedShared]:
        return [t for t in (self.tokenize(e) for e in examples) if t is not None]

    def bucket_key(self, tok: TokenizedShared) -> tuple[int, int, int]:
        return (bucket_for(len(tok.sharer), self.context_buckets),
                bucket_for(len(tok.receiver_ctx) - 1, self.context_buckets),
                bucket_for(len(tok.target) + 1, self.target_buckets))

    def collate(self, toks: Sequence[TokenizedShared], key: Optional[tuple[int, int, int]] = None
                ) -> SharedContextBatch:
        """Stack examples of one bucket, or of several into the padded shape `key` (e.g. the largest of
        their bucket keys, as the multiple-choice scorer does for the choices of one question)."""
        keys = {self.bucket_key(t) for t in toks}
        if key is None and len(keys) != 1:
            raise ValueError(f"a batch must hold examples of one bucket, got {sorted(keys)}")
        ls, lc, lr = key if key is not None else keys.pop()
        b = len(toks)
        s_ids, s_mask = np.full((b, ls), self.sharer_pad, np.int32), np.zeros((b, ls), bool)
        c_ids, c_mask = np.full((b, lc), self.receiver_pad, np.int32), np.zeros((b, lc), bool)
        alignment = np.full((b, lc), -1, np.int32)
        r_ids, r_mask = np.full((b, lr), self.receiver_pad, np.int32), np.zeros((b, lr), bool)
        loss = np.zeros((b, lr), bool)
        for i, t in enumerate(toks):
            ns, nc, nt = len(t.sharer), len(t.receiver_ctx) - 1, len(t.target)
            s_ids[i, ls - ns:], s_mask[i, ls - ns:] = t.sharer, True
            c_ids[i, lc - nc:], c_mask[i, lc - nc:] = t.receiver_ctx[:-1], True
            alignment[i, lc - nc:] = (ls - ns) + t.alignment[:-1]
            r_ids[i, : nt + 1] = np.concatenate([t.receiver_ctx[-1:], t.target])
            r_mask[i, : nt + 1] = True
            loss[i, 1: nt + 1] = True
        return SharedContextBatch(SharerRows(s_ids, s_mask, positions_from_mask(s_mask)), c_ids, c_mask, alignment,
                                  r_ids, r_mask, loss, np.ones(b, bool))


def mc_features(sharer_tok, receiver_tok, max_context_len: int = 512, max_choice_len: int = 64) -> SharedContextFeatures:
    """Features of multiple-choice rows: the context is `MC_PROMPT` as it is, each continuation " {choice}"."""
    return SharedContextFeatures(sharer_tok, receiver_tok, max_context_len=max_context_len,
                                 max_target_len=max_choice_len, context_template="{prompt}",
                                 target_template=" {completion}", append_eos=False)


class SharedContextBatches:
    """Resumable iterator of shared-context train batches (state: the bucketed index iterator's)."""

    def __init__(self, features: SharedContextFeatures, tokenized: Sequence[TokenizedShared], batch_size: int,
                 seed: int = 0):
        if not tokenized:
            raise ValueError("no shared-context training examples (check data.train_sets)")
        self.features, self.tokenized = features, list(tokenized)
        self.index = BucketedBatches([features.bucket_key(t) for t in self.tokenized], batch_size, seed)

    def __iter__(self):
        return self

    def __next__(self) -> SharedContextBatch:
        return self.collate_rows(next(self.index))

    def collate_rows(self, rows) -> SharedContextBatch:
        """The batch of these example indices (a subclass may attach more to it)."""
        return self.features.collate([self.tokenized[i] for i in rows])

    def state(self) -> dict:
        return self.index.state()

    def restore(self, state: dict) -> None:
        self.index.restore(state)


def unrelated_sharer_tokens(other: np.ndarray, n: int) -> np.ndarray:
    """n sharer tokens of another question: its first n, or its first token then the rest repeated (never a
    second BOS) when it is shorter. The control keeps the length, so every alignment index stays in range."""
    if len(other) >= n:
        return other[:n]
    return np.concatenate([other[:1], np.resize(other[1:] if len(other) > 1 else other, n - 1)]).astype(other.dtype)
