"""Token alignment of a SHARED context tokenized by two different tokenizers.

Both models read the same text; LCF and C2C fuse, for every receiver token, the K/V of one sharer
token. `align_offsets` picks that token from the two tokenizers' character offset mappings of the
same text:

* a receiver token with character span [a, b) maps to the sharer tokens whose spans overlap it;
  when several do, it takes the LAST of them. In a causal model the last covering sharer token's K/V
  was computed attending to all the earlier ones, so it summarises the whole overlap (and everything
  before it); the earlier covering tokens add nothing it has not already seen. (This can look a
  few characters ahead of the receiver token, e.g. receiver "H" -> sharer "Hé"; that is harmless for
  a context both models read in full before any query token.)
* a token with an empty span (BOS and other added special tokens, span (k, k)) maps to the last
  sharer token that starts before k, i.e. to the sharer's first token (its BOS if it has one) at the
  start of the text, and to the preceding context elsewhere.
* a non-empty receiver span that no sharer token overlaps (e.g. whitespace one tokenizer drops)
  uses the same rule as an empty span at its end: the last sharer token starting before b.

C2C's own aligner (rosetta/model/aligner.py) instead decodes each receiver token and re-tokenizes it
with the sharer tokenizer, picking the FIRST or LONGEST piece; the offset rule above is this
project's choice (it never re-tokenizes and handles byte-split Unicode and merged whitespace).

Offsets are Python character offsets, as fast Hugging Face tokenizers return them with
`return_offsets_mapping=True`. Byte-level BPE may split one character (emoji, CJK) into several
tokens that all carry the same span; they are handled like any other overlap.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def align_offsets(receiver_offsets: Sequence[tuple[int, int]],
                  sharer_offsets: Sequence[tuple[int, int]]) -> np.ndarray:
    """receiver_offsets: [Tr] (start, end) pairs; sharer_offsets: [Ts] pairs (Ts >= 1).

    Returns int32 [Tr]: for each receiver token the index of the sharer token whose K/V it fuses.
    """
    r = np.asarray(receiver_offsets, np.int64).reshape(-1, 2)
    s = np.asarray(sharer_offsets, np.int64).reshape(-1, 2)
    if s.shape[0] == 0:
        raise ValueError("the sharer tokenization is empty: there is nothing to align to")
    s_start, s_end = s[:, 0], s[:, 1]
    s_nonempty = s_end > s_start
    out = np.zeros(r.shape[0], np.int32)
    idx = np.arange(s.shape[0])
    for i, (a, b) in enumerate(r):
        if b > a:
            cover = s_nonempty & (s_start < b) & (s_end > a)
            if cover.any():
                out[i] = idx[cover][-1]
                continue
            anchor = b
        else:
            anchor = a
        # Last sharer token that starts before the anchor; the first token if none does.
        before = s_start < anchor
        out[i] = idx[before][-1] if before.any() else 0
    return out


def tokenize_with_offsets(tokenizer, text: str, add_special_tokens: bool = True):
    """(ids [T], offsets [T, 2]) from a fast Hugging Face tokenizer."""
    enc = tokenizer(text, add_special_tokens=add_special_tokens, return_offsets_mapping=True)
    return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]


def align_text(text: str, sharer_tokenizer, receiver_tokenizer, add_special_tokens: bool = True):
    """Tokenizes `text` with both tokenizers; returns (sharer_ids, receiver_ids, alignment [Tr])."""
    s_ids, s_off = tokenize_with_offsets(sharer_tokenizer, text, add_special_tokens)
    r_ids, r_off = tokenize_with_offsets(receiver_tokenizer, text, add_special_tokens)
    return s_ids, r_ids, align_offsets(r_off, s_off)


def _cap(ids: list, offsets: list, max_len: int, keep: str):
    """At most max_len tokens; keeping the end still keeps the leading special tokens (e.g. BOS, an
    attention sink the model expects first)."""
    if len(ids) <= max_len:
        return ids, offsets
    if keep == "start":
        return ids[:max_len], offsets[:max_len]
    n_special = next((i for i, (a, b) in enumerate(offsets) if b > a), len(ids))
    n_special = min(n_special, max_len - 1)
    tail = max_len - n_special
    return ids[:n_special] + ids[-tail:], offsets[:n_special] + offsets[-tail:]


def tokenize_pair(text: str, sharer_tok, receiver_tok, max_len: int, keep: str = "start"):
    """(sharer_ids, receiver_ids, alignment, weight) of one text, both at most max_len tokens.

    A text longer than max_len sharer tokens is cut at a sharer token boundary, keeping its start
    (`keep="start"`: passages) or its end (`keep="end"`: instructions, whose question comes last), so
    both tokenizations cover the same characters. weight marks receiver tokens with a non-empty
    character span (BOS and other special tokens have no counterpart in the sharer's text).
    """
    if keep not in ("start", "end"):
        raise ValueError(f"keep must be 'start' or 'end', got {keep!r}")
    s_ids, s_off = tokenize_with_offsets(sharer_tok, text)
    if len(s_ids) > max_len:
        if keep == "start":
            text = text[: s_off[max_len - 1][1]]
        else:
            nonempty = [a for a, b in s_off[len(s_ids) - max_len + 1:] if b > a]  # +1: room for a BOS
            text = text[nonempty[0]:] if nonempty else text
        s_ids, s_off = _cap(*tokenize_with_offsets(sharer_tok, text), max_len, keep)
    r_ids, r_off = _cap(*tokenize_with_offsets(receiver_tok, text), max_len, keep)
    align = align_offsets(r_off, s_off)
    weight = np.array([b > a for a, b in r_off], bool)
    return s_ids, r_ids, align, weight


def alignment_to_slots(alignments: Sequence[np.ndarray], sharer_mask: np.ndarray,
                       receiver_mask: np.ndarray) -> np.ndarray:
    """Batched alignment into cache slots.

    alignments: B arrays, alignments[b][k] = index of the sharer token (k-th real sharer token of row
    b) fused into the k-th real receiver token. sharer_mask [B, Ss], receiver_mask [B, Sr]: where the
    real tokens sit in the two caches (left padding or any other placement; real tokens in order).
    Returns int32 [B, Sr]: for each receiver cache slot the sharer cache slot to read, -1 for
    receiver slots that hold no real token (LCF/C2C leave those untouched).
    """
    sharer_mask = np.asarray(sharer_mask, bool)
    receiver_mask = np.asarray(receiver_mask, bool)
    if sharer_mask.ndim != 2 or receiver_mask.ndim != 2 or sharer_mask.shape[0] != receiver_mask.shape[0]:
        raise ValueError(f"masks must be [B, S] with the same B, got {sharer_mask.shape} and {receiver_mask.shape}")
    if len(alignments) != receiver_mask.shape[0]:
        raise ValueError(f"{len(alignments)} alignments for a batch of {receiver_mask.shape[0]}")
    out = np.full(receiver_mask.shape, -1, np.int32)
    for b, al in enumerate(alignments):
        al = np.asarray(al, np.int64)
        s_slots = np.nonzero(sharer_mask[b])[0]
        r_slots = np.nonzero(receiver_mask[b])[0]
        if al.shape[0] != r_slots.shape[0]:
            raise ValueError(f"row {b}: alignment has {al.shape[0]} entries but the receiver mask holds "
                             f"{r_slots.shape[0]} real tokens")
        if al.size and (al.min() < 0 or al.max() >= s_slots.shape[0]):
            raise ValueError(f"row {b}: alignment indices must lie in [0, {s_slots.shape[0]}) (the sharer "
                             f"row's real tokens), got [{al.min()}, {al.max()}]")
        out[b, r_slots] = s_slots[al]
    return out


def left_pad_masks(lengths: Sequence[int], width: int) -> np.ndarray:
    """[B, width] bool mask of left-padded rows of the given lengths."""
    lengths = np.asarray(lengths)
    if (lengths > width).any():
        raise ValueError(f"lengths {lengths.tolist()} exceed width {width}")
    return np.arange(width)[None, :] >= (width - lengths)[:, None]
