"""A local offset tokenizer for tiny models: words (with or without their leading space) or 2-character
chunks (+ BOS), ids hashed into a
tiny vocabulary. Enough of the Hugging Face call signature for alignment and shared-context code."""
import re


class OffsetTok:
    def __init__(self, kind, vocab=96, bos=None):
        self.kind, self.vocab = kind, vocab
        self.bos = (kind == "chars") if bos is None else bos
        self.pad_token_id, self.eos_token_id, self.bos_token_id = 0, 2, 1

    def __call__(self, text, add_special_tokens=True, return_offsets_mapping=True):
        if isinstance(text, (list, tuple)):
            rows = [self(t, add_special_tokens) for t in text]
            return {k: [r[k] for r in rows] for k in ("input_ids", "offset_mapping")}
        if self.kind == "words":
            spans = [m.span() for m in re.finditer(r"\s*\S+", text)]
        elif self.kind == "bare":   # words without their leading whitespace (as trimmed byte-level offsets)
            spans = [m.span() for m in re.finditer(r"\S+", text)]
        else:
            spans = [(i, min(i + 2, len(text))) for i in range(0, len(text), 2)]
        if self.bos and add_special_tokens:
            spans = [(0, 0)] + spans
        ids = [3 + sum(map(ord, text[a:b])) % (self.vocab - 3) if b > a else 1 for a, b in spans]
        return {"input_ids": ids, "offset_mapping": spans}
