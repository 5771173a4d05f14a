import json

import pytest

from lcf_jax.eval import t1_results


def _row(method, set_, correct, split="test"):
    return {"method": method, "set": set_, "split": split, "correct_per_question": correct}


def _write(path, rows):
    path.write_text(json.dumps(rows))
    return path


def test_rows_of_two_runs_are_merged_in_the_first_runs_set_order(tmp_path):
    main = _write(tmp_path / "a.json", [_row("alone", "s1", [1, 0]), _row("alone", "s2", [0, 0, 1]),
                                        _row("lcf", "s1", [1, 1]), _row("lcf", "s2", [1, 0, 1])])
    new = _write(tmp_path / "b.json", [_row("alone", "s2", [0, 0, 1]), _row("c2c", "s2", [0, 1, 1]),
                                       _row("alone", "s1", [1, 0]), _row("c2c", "s1", [0, 0])])
    rows = t1_results.read([main, new])
    per = {}
    for r in rows:
        per.setdefault(r["method"], []).extend(r["correct_per_question"])
    assert per == {"alone": [1, 0, 0, 0, 1], "lcf": [1, 1, 1, 0, 1], "c2c": [0, 0, 0, 1, 1]}


def test_rows_over_other_questions_or_conflicting_answers_are_refused(tmp_path):
    main = _write(tmp_path / "a.json", [_row("alone", "s1", [1, 0])])
    longer = _write(tmp_path / "b.json", [_row("c2c", "s1", [1, 0, 1])])
    with pytest.raises(ValueError, match="same questions"):
        t1_results.read([main, longer])
    dev = _write(tmp_path / "c.json", [_row("c2c", "s1", [1, 0], split="dev")])
    with pytest.raises(ValueError, match="same questions"):
        t1_results.read([main, dev])
    other = _write(tmp_path / "d.json", [_row("alone", "s1", [0, 0])])
    with pytest.raises(ValueError, match="differs"):
        t1_results.read([main, other])
    with pytest.raises(ValueError, match="no T1 results"):
        t1_results.read([])
