"""scripts/t1_transfer.py on a T1 result file built by hand: the cells and the agreement table it prints."""
import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "t1_transfer.py"


def _row(method, choices, gold):
    return {"set": "mc/x", "method": method, "choice_per_question": choices,
            "correct_per_question": [100.0 * (c == g) for c, g in zip(choices, gold)]}


def test_an_adapter_that_copies_the_sharer_agrees_with_it_and_one_that_does_not_is_flagged(tmp_path):
    gold = [0, 0, 0, 0, 1, 1, 1, 1]
    receiver = [0, 0, 2, 2, 1, 3, 3, 3]     # right on 0, 1, 4
    sharer = [0, 2, 0, 2, 3, 1, 1, 3]       # right on 0, 2, 5, 6
    rows = [_row("recv", receiver, gold), _row("shar", sharer, gold), _row("copy", sharer, gold),
            _row("keep", receiver, gold)]
    path = tmp_path / "t1.json"
    path.write_text(json.dumps(rows))
    out = subprocess.run([sys.executable, str(SCRIPT), "--results", str(path), "--receiver", "recv", "--sharer", "shar"],
                         capture_output=True, text=True, check=True).stdout
    lines = {line.split(" | ")[0].strip("| "): line for line in out.splitlines() if line.startswith("|")}
    assert lines["only the sharer right"].startswith("| only the sharer right | 3 | 100.0")   # copy: right where the sharer is
    assert lines["only the receiver right"].startswith("| only the receiver right | 2 | 0.0")
    assert lines["copy"].startswith("| copy | 100.0") and lines["recv"].startswith("| recv | 37.5")
    assert "| keep | 37.5" in out and lines["keep"].endswith("| 0.0 [0.0, 0.0] |")


def test_gold_logprob_table_pairs_each_adapter_row_with_the_receiver_and_its_control(tmp_path):
    def row(method, logps, control_of=None):
        return {"set": "mc/x", "method": method, "choice_per_question": [0] * 4, "correct_per_question": [0.0] * 4,
                "gold_logprob_per_question": logps, "control_of": control_of}
    rows = [row("recv", [-1.0, -2.0, -1.0, -2.0]), row("shar", [-1.0] * 4), row("lcf", [-0.5, -1.5, -0.5, -1.5]),
            row("lcf control", [-0.25, -1.25, -0.25, -1.25], control_of="lcf")]
    path = tmp_path / "t1.json"
    path.write_text(json.dumps(rows))
    out = subprocess.run([sys.executable, str(SCRIPT), "--results", str(path), "--receiver", "recv", "--sharer", "shar"],
                         capture_output=True, text=True, check=True).stdout
    gold_table = out.split("gold choice log-probability")[1]
    assert "| lcf | -1.000 [-1.500, -0.500] | 0.500 [0.500, 0.500] | -0.250 [-0.250, -0.250] |" in gold_table
    assert "| lcf control | -0.750 [-1.250, -0.250] | 0.750 [0.750, 0.750] | — |" in gold_table


def test_every_row_is_paired_against_the_row_named_by_against(tmp_path):
    gold = [0, 0, 0, 0]
    rows = [_row("recv", [0, 1, 1, 1], gold), _row("shar", [0, 0, 1, 1], gold), _row("c2c", [1, 1, 1, 1], gold),
            _row("lcf", [0, 0, 0, 1], gold)]
    path = tmp_path / "t1.json"
    path.write_text(json.dumps(rows))
    out = subprocess.run([sys.executable, str(SCRIPT), "--results", str(path), "--receiver", "recv", "--sharer", "shar",
                          "--against", "c2c"], capture_output=True, text=True, check=True).stdout
    table = out.split("Δ vs c2c")[1]
    assert "| lcf | 75.0" in table and table.count("|\n") >= 3
    assert [line.split(" | ")[-1][:6] for line in table.splitlines() if line.startswith("| lcf ")] == ["75.0 ["]
    assert "| c2c |" not in table
    bad = subprocess.run([sys.executable, str(SCRIPT), "--results", str(path), "--receiver", "recv", "--sharer", "shar",
                          "--against", "nope"], capture_output=True, text=True)
    assert bad.returncode != 0 and "no row 'nope'" in bad.stderr
