"""scripts/t1_seeds.py on T1 result files built by hand: the seed mean, its controls' mean and the verdict."""
import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "t1_seeds.py"


def _row(method, correct, control_of=None):
    return {"set": "mc/x", "method": method, "correct_per_question": [100.0 * c for c in correct],
            "control_of": control_of}


def _run(tmp_path, rows, seeds):
    path = tmp_path / "t1.json"
    path.write_text(json.dumps(rows))
    return subprocess.run([sys.executable, str(SCRIPT), "--results", str(path), "--receiver", "recv",
                           "--seeds", seeds], capture_output=True, text=True)


def test_seed_mean_is_paired_per_question_against_the_receiver_and_the_controls_mean(tmp_path):
    n = 40
    recv = [0] * n
    rows = [_row("recv", recv), _row("s0", [1] * n), _row("s1", [1] * (n // 2) + [0] * (n // 2)),
            _row("s0 control", [0] * n, "s0"), _row("s1 control", [1] * (n // 4) + [0] * (3 * n // 4), "s1")]
    out = _run(tmp_path, rows, "s0,s1").stdout
    assert "| mean of the 2 seeds | 75.0 [" in out and "| 75.0 [" in out.split("mean of the 2 seeds")[1]
    assert "| mean of their controls | 12.5 [" in out
    assert "| 62.5 [" in out.split("mean of the 2 seeds")[1]          # 75.0 - 12.5, paired
    assert out.strip().endswith("both intervals excluding 0: yes")


def test_a_recipe_its_controls_match_is_not_counted_and_a_missing_control_is_said(tmp_path):
    n = 40
    half = [1] * (n // 2) + [0] * (n // 2)
    rows = [_row("recv", [0] * n), _row("s0", half), _row("s1", half), _row("s0 control", half, "s0"),
            _row("s1 control", half, "s1")]
    assert _run(tmp_path, rows, "s0,s1").stdout.strip().endswith("both intervals excluding 0: no")
    out = _run(tmp_path, rows[:4], "s0,s1").stdout
    assert "| s1 | 50.0" in out and "not scored" in out and "some controls not scored" in out
    bad = _run(tmp_path, rows, "s0,nope")
    assert bad.returncode != 0 and "no row 'nope'" in bad.stderr
    assert "at least two rows" in _run(tmp_path, rows, "s0").stderr
