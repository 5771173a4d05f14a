"""Token alignment: hand-made offsets, a tiny local tokenizer pair, and the two bundled tokenizers."""

import numpy as np
import pytest

from lcf_jax.adapters.align import align_offsets, align_text, alignment_to_slots, left_pad_masks
from tests.offset_tok import OffsetTok

TEXTS = [
    "Héllo  wörld, café au lait!",
    "中文 和 English 混合 text",
    "emoji 🙂🚀 and   spaces   here 😀",
    "digits 1234567 and 3.14159, 2026-01-01",
    "   leading spaces",
]


def test_last_covering_token_wins():
    # receiver "Hello" (0,5) covered by sharer "He"(0,2) "llo"(2,5) -> last = 1
    assert align_offsets([(0, 5)], [(0, 2), (2, 5)]).tolist() == [1]
    # receiver pieces inside one sharer token all map to it
    assert align_offsets([(0, 2), (2, 5)], [(0, 5)]).tolist() == [0, 0]
    # partial overlaps: receiver (1,3) overlaps sharer (0,2) and (2,4) -> 1
    assert align_offsets([(1, 3)], [(0, 2), (2, 4), (4, 6)]).tolist() == [1]


def test_empty_spans_and_uncovered_tokens():
    # receiver BOS (0,0) -> sharer BOS (0,0) / first token
    assert align_offsets([(0, 0), (0, 3)], [(0, 0), (0, 3)]).tolist() == [0, 1]
    assert align_offsets([(0, 0), (0, 3)], [(0, 3)]).tolist() == [0, 0]
    # mid-text empty span (a special token at char 3) -> last sharer token starting before 3
    assert align_offsets([(3, 3)], [(0, 2), (2, 5), (5, 7)]).tolist() == [1]
    # receiver whitespace token (3,4) that no sharer token covers -> preceding sharer token
    assert align_offsets([(3, 4)], [(0, 3), (4, 6)]).tolist() == [0]


def _check_alignment(text, s_off, r_off, al):
    assert al.shape == (len(r_off),) and al.dtype == np.int32
    assert (al >= 0).all() and (al < len(s_off)).all()
    assert (np.diff(al) >= 0).all(), "alignment of a shared text is monotone"
    for (a, b), j in zip(r_off, al):
        sa, sb = s_off[j]
        if b > a:
            covering = [i for i, (x, y) in enumerate(s_off) if y > x and x < b and y > a]
            if covering:
                assert j == covering[-1], (text, (a, b), j, covering)


@pytest.mark.parametrize("text", TEXTS)
def test_local_tokenizer_pair(text):
    s_tok, r_tok = OffsetTok("words", bos=False), OffsetTok("chars", bos=True)
    s_ids, r_ids, al = align_text(text, s_tok, r_tok)
    s_off = s_tok(text)["offset_mapping"]
    r_off = r_tok(text)["offset_mapping"]
    _check_alignment(text, s_off, r_off, al)
    assert al[0] == 0  # receiver BOS -> sharer first token


@pytest.fixture(scope="module")
def bundled_tokenizers():
    try:
        from lcf_jax.models.registry import load_tokenizer
        return load_tokenizer("smollm2-135m-instruct"), load_tokenizer("gemma3-270m")
    except Exception as e:  # model packages missing
        pytest.skip(f"bundled tokenizers unavailable: {e}")


@pytest.mark.parametrize("direction", ["smol->gemma", "gemma->smol"])
def test_bundled_tokenizers(bundled_tokenizers, direction):
    smol, gemma = bundled_tokenizers
    s_tok, r_tok = (smol, gemma) if direction == "smol->gemma" else (gemma, smol)
    for text in TEXTS:
        s = s_tok(text, return_offsets_mapping=True)
        r = r_tok(text, return_offsets_mapping=True)
        s_off, r_off = [tuple(o) for o in s["offset_mapping"]], [tuple(o) for o in r["offset_mapping"]]
        _, _, al = align_text(text, s_tok, r_tok)
        _check_alignment(text, s_off, r_off, al)
        for (a, b), j in zip(r_off, al):
            if b == a == 0:  # Gemma's BOS -> SmolLM2's first token
                assert j == 0
    # A concrete case: Gemma splits "中文" as " 中" + "文"; both map to the SmolLM2 pieces of the same chars.
    text = "Héllo 中文 🙂 12345"
    _, _, al = align_text(text, smol, gemma)
    s_off = [tuple(o) for o in smol(text, return_offsets_mapping=True)["offset_mapping"]]
    r_off = [tuple(o) for o in gemma(text, return_offsets_mapping=True)["offset_mapping"]]
    for (a, b), j in zip(r_off, al):
        if b > a:
            sa, sb = s_off[j]
            assert sa < b and sb > a  # overlapping characters


def test_alignment_to_slots_left_padding():
    als = [np.array([0, 0, 1, 2]), np.array([0, 1])]
    s_mask = left_pad_masks([3, 2], 5)
    r_mask = left_pad_masks([4, 2], 6)
    out = alignment_to_slots(als, s_mask, r_mask)
    assert out.tolist() == [[-1, -1, 2, 2, 3, 4], [-1, -1, -1, -1, 3, 4]]
    with pytest.raises(ValueError, match="alignment has 3 entries"):
        alignment_to_slots([np.array([0, 1, 2]), np.array([0, 1])], s_mask, r_mask)
    with pytest.raises(ValueError, match="must lie in"):
        alignment_to_slots([np.array([0, 0, 1, 3]), np.array([0, 1])], s_mask, r_mask)
