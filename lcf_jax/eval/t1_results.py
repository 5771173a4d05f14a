"""T1's per-question results (`reproduce --table t1` writes `t1_shared_context.json`), read from one run or merged
from several: a row scored into another `--out` (a new adapter, its own folder) is compared with the rows of the
main table over the same questions."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence


def read(paths: Sequence[str | Path]) -> list[dict]:
    """The rows of every file, one per (method, set), each method's sets in the first file's order. A (method, set)
    in two files must hold the same questions' answers (the first is kept); two files whose same set differs in
    split or n cannot be paired."""
    if not paths:
        raise ValueError("no T1 results file given")
    kept: dict[tuple[str, str], dict] = {}
    shape: dict[str, tuple] = {}   # set -> (split, n): what pairing needs to be the same
    for path in paths:
        for r in json.loads(Path(path).read_text()):
            s = (r.get("split"), len(r["correct_per_question"]))
            if shape.setdefault(r["set"], s) != s:
                raise ValueError(f"{path}: set {r['set']} has split/n {s}, another file has {shape[r['set']]}: "
                                 "rows can only be paired over the same questions (same --n and split)")
            key = (r["method"], r["set"])
            if key in kept and kept[key]["correct_per_question"] != r["correct_per_question"]:
                raise ValueError(f"{path}: row {r['method']!r} on {r['set']} differs from the same row in an earlier "
                                 "file; give each row from one run")
            kept.setdefault(key, r)
    order = {s: i for i, s in enumerate(shape)}
    return sorted(kept.values(), key=lambda r: order[r["set"]])
