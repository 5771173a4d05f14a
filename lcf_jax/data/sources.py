"""Readers of the raw files under the data dir into unified example dicts (pure Python, no TFDS).

Schemas (every value a plain Python str / int / list of str):

* QA ("qa"): ``{"id", "sharer_context", "question", "answers": [str, ...], "target"}``;
  ``target`` is ``answers[0]``. The sharer reads ``sharer_context``; the receiver sees only the
  question (see `pipeline.QAFeatures` for the prompt template).
* Multiple choice ("mc"): ``{"id", "question", "choices": [str, ...], "gold": int, "subject"}``.
  ``subject`` is the MMLU subject for MMLU-Redux and "" elsewhere. For the llm-foundry sets
  (ARC, OpenBookQA, PIQA, SIQA, CommonsenseQA) ``question`` is the verbatim llm-foundry ``query``,
  which is already a prompt prefix (e.g. "Question: ...", or for CommonsenseQA / SIQA a lettered
  list ending in "Answer:" with ``choices`` = ["A", "B", ...]); for MMLU-Redux it is the bare
  question and ``choices`` the bare option texts.
* Instruct ("instruct"): ``{"id", "prompt", "completion"}``.

Data dir: every reader takes ``data_dir`` (the `data_dir` setting). ``None`` means the environment
variable ``LCF_DATA_DIR`` if set, else ``../shared/data`` relative to the repository root.

Choices made here (documented, not hidden):

* SQuAD: one example per question; ``answers`` is the reference list verbatim (duplicates kept,
  as in the official evaluation, where they do not change the max).
* NQ open-book: the llm-foundry ``context`` "Context: P\\n\\nQuestion: Q\\nAnswer:" is split into
  P and Q; ``answers`` = [answer] + aliases (order kept, exact duplicates dropped).
* HotpotQA: passage = all paragraphs (distractors included) as "Title: t\\ntext", joined by a blank
  line, in file order; answers = ``answers_objects[0].spans``.
* QuAC: the passage is everything before the first "\\n\\nQuestion: " (title, background, section,
  section text); ``question`` is the rest with its leading "Question: " removed, i.e. the dialogue
  history turns followed by the final question, so that the default receiver template
  "Question: {question}\\nAnswer:" reproduces the llm-foundry prompt. ``answers`` = [answer] +
  aliases (for CANNOTANSWER: "Not enough information", "Cannot answer", "Do not know").
* MMLU-Redux: only rows with ``error_type_norm == "ok"`` are kept (5,330 of 5,700) when the field
  exists (it does in the shipped file); ``mmlu_redux_only_ok=False`` keeps all. The dev/test split
  uses the raw row index, so filtering never moves a row across splits.
* qa_train (BIG-bench): each ``input`` is split into passage and question by the task's own
  markers (see `_QA_TRAIN_FORMATS`); examples without the expected markers, with an empty part
  or without a non-empty target are dropped and counted. Natural-Instructions targets carry an
  appended "." (the un-dotted string is the span in the passage); for the span-style tasks
  (DROP, Quoref, ROPES, MultiRC) one trailing "." is removed; CosmosQA's free-text sentences are
  kept as they are.
* Disfl-QA: its passages are SQuAD v1.1 dev paragraphs (all 8,000 examples; 3,813 in SQuAD
  dev articles, 4,187 in SQuAD test articles). By default (``squad_overlap="drop"``) examples
  whose passage is a SQuAD v1.1 dev paragraph are dropped, which drops the whole file;
  ``squad_overlap="keep"`` keeps them (never for models that are evaluated on SQuAD).
* T0: templates built on an evaluated set (`splits.EVALUATED_T0_SOURCES`: MMLU, ARC, OpenBookQA,
  PIQA, SIQA, CommonsenseQA) are left out, counted in ``excluded_templates`` / ``excluded_rows``
  (in the shipped mixture 11 templates, 2,200 rows: CommonsenseQA's 5 and Social IQa's 6). The
  trailing "<|endoftext|>" of each completion is removed (the pipeline appends the model's own EOS).
* GPTeacher: prompt = instruction, plus "\\n\\n" + input when the input is non-empty.
"""
from __future__ import annotations

import json
import os
import pathlib
import re
from typing import Any, Iterator, Optional

from lcf_jax.data import splits as splits_lib
from lcf_jax.paths import repo_root

REPO_ROOT = repo_root()
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data"  # i.e. ../shared/data from the repo root
DATA_DIR_ENV = "LCF_DATA_DIR"

# Relative paths of the raw files, by data set name.
FILES: dict[str, str] = {
    "squad": "qa_context/squad_v1.1_dev.json",
    "nq_openbook": "qa_context/nq_openbook.jsonl",
    "hotpotqa": "qa_context/hotpotqa_dev500.jsonl",
    "hotpotqa_supporting": "qa_context/hotpotqa_dev500.jsonl",   # the same rows, supporting paragraphs only
    "quac": "qa_context/quac.jsonl",
    "qa_train/drop": "qa_train/subtask028_drop_answer_generation.task.json",
    "qa_train/quoref": "qa_train/subtask002_quoref_answer_generation.task.json",
    "qa_train/ropes": "qa_train/subtask061_ropes_answer_generation.task.json",
    "qa_train/multirc": "qa_train/subtask058_multirc_question_answering.task.json",
    "qa_train/cosmosqa": "qa_train/subtask024_cosmosqa_answer_generation.task.json",
    "qa_train/disfl_qa": "qa_train/disfl_qa.task.json",
    "mc/mmlu_redux": "mc/mmlu_redux.jsonl",
    "mc/arc_challenge": "mc/arc_challenge.jsonl",
    "mc/arc_easy": "mc/arc_easy.jsonl",
    "mc/openbook_qa": "mc/openbook_qa.jsonl",
    "mc/piqa": "mc/piqa.jsonl",
    "mc/siqa": "mc/siqa.jsonl",
    "mc/commonsense_qa": "mc/commonsense_qa.jsonl",
    "instruct/t0": "instruct/t0",  # a folder of *.jsonl, one per template
    "instruct/gpteacher": "instruct/gpteacher",  # <sub>/*.json
}


def resolve_data_dir(data_dir: Optional[os.PathLike | str] = None) -> pathlib.Path:
    """The data dir: the argument, else $LCF_DATA_DIR, else ../shared/data from the repo root."""
    if data_dir is None:
        data_dir = os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR
    return pathlib.Path(data_dir).expanduser()


def path_of(name: str, data_dir: Optional[os.PathLike | str] = None) -> pathlib.Path:
    """Path of data set `name`'s raw file (or folder); raises FileNotFoundError if missing."""
    splits_lib.rule_for(name)  # unknown names fail with the list of known ones
    root = resolve_data_dir(data_dir)
    path = root / FILES[name]
    if not path.exists():
        raise FileNotFoundError(
            f"data file for {name!r} not found: {path}. The data dir ({root}) is set by the "
            f"`data_dir` setting (or ${DATA_DIR_ENV}); its default is ../shared/data relative "
            "to the repository root."
        )
    return path


def _read_jsonl(path: pathlib.Path) -> Iterator[dict]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def _read_json(path: pathlib.Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _dedup(xs) -> list[str]:
    out: list[str] = []
    for x in xs:
        if isinstance(x, str) and x not in out:
            out.append(x)
    return out


def _qa(id_: str, passage: str, question: str, answers: list[str]) -> dict:
    return {
        "id": id_,
        "sharer_context": passage,
        "question": question,
        "answers": list(answers),
        "target": answers[0],
    }


# ---------------------------------------------------------------- QA with their own contexts
# Each `_iter_*` yields (unit_index, example); unit_index is what splits.split_of looks at.


def _iter_squad(path: pathlib.Path, stats: dict) -> Iterator[tuple[int, dict]]:
    data = _read_json(path)["data"]
    for article_index, article in enumerate(data):
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                answers = [a["text"] for a in qa["answers"]]
                if not answers:
                    stats["dropped"] = stats.get("dropped", 0) + 1
                    continue
                yield article_index, _qa(qa["id"], paragraph["context"], qa["question"], answers)


_NQ_RE = re.compile(r"\AContext: (?P<p>.*)\n\nQuestion: (?P<q>.*)\nAnswer:\s*\Z", re.S)


def _iter_nq_openbook(path: pathlib.Path, stats: dict) -> Iterator[tuple[int, dict]]:
    for row, rec in enumerate(_read_jsonl(path)):
        m = _NQ_RE.match(rec["context"])
        answers = _dedup([rec.get("answer")] + list(rec.get("aliases") or []))
        if m is None or not answers:
            stats["dropped"] = stats.get("dropped", 0) + 1
            continue
        yield row, _qa(f"nq_openbook-{row}", m["p"].strip(), m["q"].strip(), answers)


def _iter_hotpotqa(path: pathlib.Path, stats: dict, supporting_only: bool = False) -> Iterator[tuple[int, dict]]:
    """All ten paragraphs, or (supporting_only) the two marked `is_supporting`: a passage that holds the
    answer and fits a short context."""
    for row, rec in enumerate(_read_jsonl(path)):
        passage = "\n\n".join(
            f"Title: {c['title']}\n{c['paragraph_text'].strip()}" for c in rec["contexts"]
            if c.get("is_supporting") or not supporting_only
        )
        answers = _dedup(rec["answers_objects"][0]["spans"])
        if not answers:
            stats["dropped"] = stats.get("dropped", 0) + 1
            continue
        yield row, _qa(rec.get("question_id") or f"hotpotqa-{row}", passage,
                       rec["question_text"].strip(), answers)


def _iter_quac(path: pathlib.Path, stats: dict) -> Iterator[tuple[int, dict]]:
    for row, rec in enumerate(_read_jsonl(path)):
        passage, sep, rest = rec["context"].partition("\n\nQuestion: ")
        answers = _dedup([rec.get("answer")] + list(rec.get("aliases") or []))
        rest = re.sub(r"\nAnswer:\s*\Z", "", rest).strip()
        if not sep or not passage.strip() or not rest or not answers:
            stats["dropped"] = stats.get("dropped", 0) + 1
            continue
        yield row, _qa(f"quac-{row}", passage.strip(), rest, answers)


# ---------------------------------------------------------------- qa_train (BIG-bench files)

_WS_LINES = re.compile(r"[ \t]*\n[ \t]*")


def _clean(s: str) -> str:
    return _WS_LINES.sub("\n", s).strip()


def _split_ni(inp: str, prefix: str, require: Optional[str] = None):
    """'<prefix><passage> \\nQuestion: <question>' -> (passage, question) or None."""
    if not inp.startswith(prefix):
        return None
    passage, sep, question = inp[len(prefix):].rpartition("\nQuestion: ")
    if not sep or (require is not None and require not in passage):
        return None
    return passage, question


def _split_multirc(inp: str):
    parts = _split_ni(inp, "Paragraph- ")
    if parts is None:
        return None
    passage, question = parts
    # "Sent 1: A.Sent 2: B." -> "A. B."
    passage = re.sub(r"\s*Sent \d+:\s*", " ", " " + passage)
    return passage, question


def _split_disfl(inp: str):
    question, sep, passage = inp.partition("\ncontext: ")
    if not sep:
        return None
    return passage, question


# name -> (splitter(input) -> (passage, question) | None, strip one trailing "." from targets)
_QA_TRAIN_FORMATS = {
    "qa_train/drop": (lambda s: _split_ni(s, "Passage: "), True),
    "qa_train/quoref": (lambda s: _split_ni(s, "Passage: "), True),
    "qa_train/ropes": (lambda s: _split_ni(s, "", require="\nStory: ")
                       if s.startswith("Background Paragraph: ") else None, True),
    "qa_train/multirc": (_split_multirc, True),
    "qa_train/cosmosqa": (lambda s: _split_ni(s, "Context: "), False),
    "qa_train/disfl_qa": (_split_disfl, False),
}


def _squad_paragraph_key(text: str) -> str:
    # Disfl-QA re-tokenises SQuAD text ("Earth ' s"), so compare alphanumerics only.
    return re.sub(r"[^0-9a-z]", "", text.lower())[:200]


def squad_paragraph_keys(data_dir=None) -> dict[str, int]:
    """Normalised-prefix key of every SQuAD v1.1 dev paragraph -> its article index."""
    data = _read_json(path_of("squad", data_dir))["data"]
    return {
        _squad_paragraph_key(p["context"]): ai
        for ai, article in enumerate(data)
        for p in article["paragraphs"]
    }


def _iter_qa_train(name: str, path: pathlib.Path, stats: dict, data_dir,
                   squad_overlap: str = "drop") -> Iterator[tuple[int, dict]]:
    if squad_overlap not in ("drop", "keep"):
        raise ValueError(f"squad_overlap must be 'drop' or 'keep', not {squad_overlap!r}")
    splitter, strip_dot = _QA_TRAIN_FORMATS[name]
    squad_keys = (squad_paragraph_keys(data_dir)
                  if name == "qa_train/disfl_qa" and squad_overlap == "drop" else None)
    short = name.split("/", 1)[1]
    for i, ex in enumerate(_read_json(path)["examples"]):
        stats["total"] = stats.get("total", 0) + 1
        parts = splitter(ex.get("input", ""))
        targets = ex.get("target")
        targets = [targets] if isinstance(targets, str) else list(targets or [])
        targets = [t.strip() for t in targets if isinstance(t, str)]
        if strip_dot:
            targets = [t[:-1].rstrip() if t.endswith(".") else t for t in targets]
        targets = _dedup(t for t in targets if t)
        passage, question = (_clean(parts[0]), _clean(parts[1])) if parts else ("", "")
        if not passage or not question or not targets:
            stats["dropped_unsplittable"] = stats.get("dropped_unsplittable", 0) + 1
            continue
        if squad_keys is not None and _squad_paragraph_key(passage) in squad_keys:
            stats["dropped_squad_overlap"] = stats.get("dropped_squad_overlap", 0) + 1
            continue
        yield i, _qa(f"{short}-{i}", passage, question, targets)


# ---------------------------------------------------------------- multiple choice


def _iter_mc(name: str, path: pathlib.Path, stats: dict,
             mmlu_redux_only_ok: bool = True) -> Iterator[tuple[int, dict]]:
    short = name.split("/", 1)[1]
    for row, rec in enumerate(_read_jsonl(path)):
        if "query" in rec:  # llm-foundry schema
            question, choices, gold, subject = rec["query"], rec["choices"], rec["gold"], ""
        else:  # MMLU-Redux schema
            if mmlu_redux_only_ok and "error_type_norm" in rec and rec["error_type_norm"] != "ok":
                stats["dropped_not_ok"] = stats.get("dropped_not_ok", 0) + 1
                continue
            question, choices, gold = rec["question"], rec["choices"], rec["answer"]
            subject = rec.get("subject", "")
        gold = int(gold)
        if not 0 <= gold < len(choices):
            stats["dropped"] = stats.get("dropped", 0) + 1
            continue
        yield row, {"id": f"{short}-{row}", "question": question,
                    "choices": [str(c) for c in choices], "gold": gold, "subject": subject}


# ---------------------------------------------------------------- instruct


def _iter_t0(path: pathlib.Path, stats: dict) -> Iterator[tuple[int, dict]]:
    i = 0
    for f in sorted(path.glob("*.jsonl")):
        if splits_lib.evaluated_t0_source(f.stem) is not None:  # built on an evaluated set: never read
            stats["excluded_templates"] = stats.get("excluded_templates", 0) + 1
            stats["excluded_rows"] = stats.get("excluded_rows", 0) + sum(1 for _ in _read_jsonl(f))
            continue
        for line_no, rec in enumerate(_read_jsonl(f)):
            completion = rec.get("completion", "")
            if completion.endswith("<|endoftext|>"):
                completion = completion[: -len("<|endoftext|>")]
            prompt, completion = rec.get("prompt", "").strip(), completion.strip()
            if not prompt or not completion:
                stats["dropped"] = stats.get("dropped", 0) + 1
                continue
            yield i, {"id": f"t0/{f.stem}-{line_no}", "prompt": prompt, "completion": completion}
            i += 1


def _iter_gpteacher(path: pathlib.Path, stats: dict) -> Iterator[tuple[int, dict]]:
    files = sorted(path.glob("*/*.json"))
    if not files:
        raise FileNotFoundError(f"no GPTeacher *.json files under {path}")
    i = 0
    for f in files:
        for j, rec in enumerate(_read_json(f)):
            instruction = (rec.get("instruction") or "").strip()
            inp = (rec.get("input") or "").strip()
            response = (rec.get("response") or "").strip()
            if not instruction or not response:
                stats["dropped"] = stats.get("dropped", 0) + 1
                continue
            prompt = instruction + ("\n\n" + inp if inp else "")
            yield i, {"id": f"gpteacher/{f.parent.name}-{j}", "prompt": prompt,
                      "completion": response}
            i += 1


# ---------------------------------------------------------------- public entry points


def iter_indexed(name: str, data_dir=None, stats: Optional[dict] = None,
                 **options) -> Iterator[tuple[int, dict]]:
    """Yield (unit_index, example) for every kept example of `name`, all splits, in file order.

    `unit_index` is what `splits.split_of(name, unit_index)` looks at. `stats`, when given, is
    filled with counters ("kept", "dropped_*", ...). Options: ``squad_overlap`` (Disfl-QA),
    ``mmlu_redux_only_ok`` (MMLU-Redux).
    """
    stats = {} if stats is None else stats
    path = path_of(name, data_dir)
    if name in splits_lib.QA_TRAIN_SETS:
        allowed = {"squad_overlap"}
    elif name == "mc/mmlu_redux":
        allowed = {"mmlu_redux_only_ok"}
    else:
        allowed = set()
    unknown = set(options) - allowed
    if unknown:
        raise TypeError(f"options {sorted(unknown)} do not apply to {name!r}")
    if name == "squad":
        it = _iter_squad(path, stats)
    elif name == "nq_openbook":
        it = _iter_nq_openbook(path, stats)
    elif name in ("hotpotqa", "hotpotqa_supporting"):
        it = _iter_hotpotqa(path, stats, supporting_only=name == "hotpotqa_supporting")
    elif name == "quac":
        it = _iter_quac(path, stats)
    elif name in splits_lib.QA_TRAIN_SETS:
        it = _iter_qa_train(name, path, stats, data_dir, **options)
    elif name in splits_lib.MC_SETS:
        it = _iter_mc(name, path, stats, **options)
    elif name == "instruct/t0":
        it = _iter_t0(path, stats)
    elif name == "instruct/gpteacher":
        it = _iter_gpteacher(path, stats)
    else:  # pragma: no cover - rule_for already rejected it
        raise AssertionError(name)
    return _counted(it, stats)


def _counted(it, stats):
    for item in it:
        stats["kept"] = stats.get("kept", 0) + 1
        yield item


def iter_examples(name: str, split: Optional[str] = None, data_dir=None,
                  stats: Optional[dict] = None, **options) -> Iterator[dict]:
    """Examples of `name` in file order; only those of `split` when given (checked)."""
    if split is not None:
        splits_lib.check_split(name, split)
    indexed = iter_indexed(name, data_dir, stats, **options)  # raises eagerly on a bad name/path
    return (ex for index, ex in indexed
            if split is None or splits_lib.split_of(name, index) == split)


def read(name: str, split: Optional[str] = None, data_dir=None,
         stats: Optional[dict] = None, max_examples: Optional[int] = None,
         **options) -> list[dict]:
    """List of examples of `name` (optionally one split, optionally the first `max_examples`)."""
    out = []
    for ex in iter_examples(name, split, data_dir, stats, **options):
        if max_examples is not None and len(out) >= max_examples:
            break
        out.append(ex)
    return out
