"""Multiple-choice questions drawn from the T0 training mixture, for choice distillation (`train/choice_targets.py`).

T1 scores each choice as a continuation of `Question: {question}\\nAnswer:` that both models read; what an
adapter would have to carry there is the sharer's preference among the choices. These questions give that
preference a training signal: each is read the way T1 reads its questions, the sharer alone scores its choices
once (the teacher), and a fused receiver is trained to score them as the sharer did.

Two kinds of T0 template become questions (`splits.EVALUATED_T0_SOURCES` are never read, as for training):
  * an option list: the prompt's last block of "- option" lines holds the completion (SciQ, QASC, DREAM, CosmosQA,
    WIQA, WikiHop). The question is the prompt without that block; the choices are the options.
  * a label set: a template whose completions take 2-8 distinct values over its rows (sentiment, paraphrase,
    topic, star ratings, ...). The question is the prompt; the choices are the template's labels, sorted.
A question keeps at most `max_choices` choices: the completion and the first distractors of a seeded shuffle.
Prompts longer than `max_chars` are dropped (a context is read whole, as T1 reads its questions).
"""
from __future__ import annotations

import dataclasses
import json
import re
from typing import Optional

import numpy as np

from lcf_jax.data import sources
from lcf_jax.data import splits as splits_lib

MAX_LABELS = 8
_OPTION = re.compile(r"^\s*-\s*(\S.*?)\s*$")


def option_block(prompt: str) -> Optional[tuple[str, list[str]]]:
    """(the prompt without its last block of "- option" lines, the options) or None. Blank lines may separate
    options; any other line ends the block, and lines after it stay in the question."""
    lines = prompt.split("\n")
    i = len(lines) - 1
    while i >= 0 and not _OPTION.match(lines[i]):   # text after the block ("A:") stays in the question
        i -= 1
    end, start, options = i + 1, i + 1, []
    while i >= 0:
        m = _OPTION.match(lines[i])
        if m:
            options.insert(0, m.group(1))
            start = i
        elif lines[i].strip():
            break
        i -= 1
    if len(options) < 2:
        return None
    question = "\n".join(lines[:start] + lines[end:]).strip()
    return (question, options) if question else None


def _template_rows(path) -> list[dict]:
    rows = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        rec = json.loads(line)
        completion = rec.get("completion", "")
        if completion.endswith("<|endoftext|>"):
            completion = completion[: -len("<|endoftext|>")]
        rows.append({"prompt": rec.get("prompt", "").strip(), "completion": completion.strip()})
    return rows


def template_questions(stem: str, rows: list[dict], rng: np.random.Generator, max_choices: int) -> list[dict]:
    """A template's rows as questions {"id", "question", "choices", "gold", "source"}; [] when it is neither kind."""
    labels = sorted({r["completion"] for r in rows if r["completion"]})
    label_set = 2 <= len(labels) <= MAX_LABELS and len(rows) >= 2 * len(labels)
    out = []
    for j, r in enumerate(rows):
        gold_text = r["completion"]
        if not r["prompt"] or not gold_text:
            continue
        parsed = option_block(r["prompt"])
        if parsed is not None and gold_text in parsed[1]:
            question, choices = parsed
        elif label_set:
            question, choices = r["prompt"], labels
        else:
            continue
        choices = list(dict.fromkeys(choices))   # a repeated option is one choice
        distractors = [c for c in choices if c != gold_text]
        keep = set([gold_text] + [distractors[k] for k in rng.permutation(len(distractors))[: max_choices - 1]])
        choices = [c for c in choices if c in keep]
        out.append({"id": f"t0/{stem}-{j}", "question": question, "choices": choices,
                    "gold": choices.index(gold_text), "source": stem})
    return out


def t0_choice_questions(data_dir=None, *, per_template: int = 40, max_choices: int = 4, max_chars: int = 600,
                        seed: int = 0, stats: Optional[dict] = None) -> list[dict]:
    """Up to `per_template` questions of every T0 template that is one of the two kinds (drawn with `seed`), in
    template order; a question text seen in an earlier template is not repeated."""
    if per_template < 1 or max_choices < 2 or max_chars < 1:
        raise ValueError(f"per_template >= 1, max_choices >= 2 and max_chars >= 1, got {per_template}, {max_choices}, "
                         f"{max_chars}")
    stats = {} if stats is None else stats
    root = sources.path_of("instruct/t0", data_dir)
    seen, out = set(), []
    for i, path in enumerate(sorted(root.glob("*.jsonl"))):
        if splits_lib.evaluated_t0_source(path.stem) is not None:
            stats["excluded_templates"] = stats.get("excluded_templates", 0) + 1
            continue
        rng = np.random.default_rng([seed, i])
        qs = [q for q in template_questions(path.stem, _template_rows(path), rng, max_choices)
              if len(q["question"]) <= max_chars and q["question"] not in seen]
        if not qs:
            continue
        stats["templates"] = stats.get("templates", 0) + 1
        for k in sorted(rng.permutation(len(qs))[:per_template]):
            seen.add(qs[k]["question"])
            out.append(qs[k])
    stats["questions"] = len(out)
    return out


# -- training batches ----------------------------------------------------------------------------------------------
GOLD_OFF = -1e4   # the gold teacher's score of a wrong choice: its distribution is the gold choice's one-hot


def gold_scores(question: dict) -> list[float]:
    """The gold teacher's scores of a question's choices: 0 for the answer, GOLD_OFF for the others."""
    return [0.0 if i == question["gold"] else GOLD_OFF for i in range(len(question["choices"]))]


class ChoiceFileError(ValueError):
    """data.choice_file is missing or is not a file of scored questions."""


def read_scored(path: str) -> list[dict]:
    """The questions of a `train/choice_targets.py` file, each with its teacher's score of every choice."""
    from pathlib import Path

    if not Path(path).is_file():
        raise ChoiceFileError(f"data.choice_file={path!r} does not exist: write it with python -m "
                              "lcf_jax.train.choice_targets --config=<this config> --out <file>")
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    bad = [i for i, r in enumerate(rows) if not {"question", "choices", "teacher"} <= set(r)
           or len(r["teacher"]) != len(r["choices"])]
    if not rows or bad:
        raise ChoiceFileError(f"data.choice_file={path!r} is not a file of scored questions"
                              + (f" (line {bad[0] + 1} lacks question, choices or one teacher score per choice)"
                                 if bad else " (it is empty)")
                              + ": write it with python -m lcf_jax.train.choice_targets")
    return rows


class ChoiceBatches:
    """Resumable iterator of choice-distillation batches: `batch_size` questions, `group` rows each (one per choice,
    padding rows copy the first with example_mask False), `batches.SharedContextBatch` with `choice_teacher`.
    Questions are bucketed by context length; every continuation pads to the features' max_target_len.

    controls: the batch also holds every question's rows again, after all of them, with the sharer reading the
    next question of the batch instead (`shared_context.unrelated_sharer_tokens`, as T1's control reads another
    question): 2 * batch_size * group rows, the control half's teacher a copy of the first's."""

    def __init__(self, features, questions: list[dict], group: int, batch_size: int, seed: int = 0,
                 controls: bool = False):
        from lcf_jax.data.pipeline import BucketedBatches
        from lcf_jax.data.shared_context import MC_PROMPT

        if group < 2:
            raise ValueError(f"data.choice_group must be >= 2 (a choice needs another to be chosen over), got {group}")
        if controls and batch_size < 2:
            raise ValueError(f"a control reads another question of the batch: it needs batch_size >= 2, got {batch_size}")
        self.features, self.group, self.controls = features, int(group), bool(controls)
        self.items = []   # (rows, teacher scores), one per question
        for q in questions:
            if len(q["choices"]) > group:
                raise ChoiceFileError(f"question {q.get('id', '')!r} has {len(q['choices'])} choices, more than "
                                      f"data.choice_group={group}: write the file with --max-choices {group}")
            rows = [features.tokenize({"prompt": MC_PROMPT.format(question=q["question"]), "completion": c})
                    for c in q["choices"]]
            if all(r is not None for r in rows):
                self.items.append((rows, [float(x) for x in q["teacher"]]))
        if not self.items:
            raise ValueError("no choice-distillation question tokenizes to a context and choices")
        keys = [max(max(features.bucket_key(r)[:2]) for r in rows) for rows, _ in self.items]
        self.index = BucketedBatches(keys, batch_size, seed)

    def __iter__(self):
        return self

    def __next__(self):
        return self.collate_rows(next(self.index))

    def collate_rows(self, questions):
        from lcf_jax.data.pipeline import bucket_for
        from lcf_jax.data.shared_context import unrelated_sharer_tokens

        f, g = self.features, self.group
        rows, teacher, real = [], [], []
        questions = [int(i) for i in questions]
        for i in questions:
            toks, scores = self.items[i]
            pad = g - len(toks)
            rows += toks + [toks[0]] * pad
            teacher += scores + [0.0] * pad
            real += [True] * len(toks) + [False] * pad
        if self.controls:   # question k's rows, its sharer reading question k + 1 of the batch (cut or repeated)
            for k, i in enumerate(questions):
                other = self.items[questions[(k + 1) % len(questions)]][0][0].sharer
                rows += [dataclasses.replace(r, sharer=unrelated_sharer_tokens(other, len(r.sharer)))
                         for r in rows[k * g:(k + 1) * g]]
            teacher, real = teacher * 2, real * 2
        ctx = max(max(f.bucket_key(r)[:2]) for r in rows)
        batch = f.collate(rows, key=(ctx, ctx, bucket_for(f.max_target_len + 1, f.target_buckets)))
        return batch._replace(example_mask=np.asarray(real), choice_teacher=np.asarray(teacher, np.float32))

    def state(self) -> dict:
        return self.index.state()

    def restore(self, state: dict) -> None:
        self.index.restore(state)
