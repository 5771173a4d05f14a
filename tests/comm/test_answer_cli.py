"""`python -m lcf_jax.answer` on a user's rows: predictions written, F1/EM printed, bad rows refused."""
import json

import pytest

from lcf_jax import answer

ROWS = [{"id": "a", "sharer_context": "The Eiffel Tower was completed in 1889 for the World Fair in Paris.",
         "question": "When was the Eiffel Tower completed?", "answers": ["1889"]},
        {"id": "b", "sharer_context": "Marie Curie won the Nobel Prize in Physics in 1903.",
         "question": "Who won the Nobel Prize in Physics in 1903?"}]


@pytest.mark.real_models
def test_lcfx_with_the_shipped_adapter_writes_one_prediction_per_row(tmp_path, capsys):
    inp, out = tmp_path / "rows.jsonl", tmp_path / "preds.jsonl"
    inp.write_text("\n".join(json.dumps(r) for r in ROWS) + "\n")
    answer.main(["--protocol", "lcfx", "--input", str(inp), "--output", str(out), "--max-new-tokens", "6"])
    preds = [json.loads(line) for line in out.read_text().splitlines()]
    assert [p["id"] for p in preds] == ["a", "b"]
    from lcf_jax.comm.shipped import load_lcfx_adapter
    cfg, _, _ = load_lcfx_adapter()
    assert all(p["bytes_sent"] == cfg.slots * cfg.rank * 4 and p["latency_s"] > 0 for p in preds)  # float32 message
    assert "F1" not in capsys.readouterr().out  # row b has no answers: no score


def test_rows_without_required_fields_are_refused(tmp_path):
    inp = tmp_path / "rows.jsonl"
    inp.write_text(json.dumps({"id": "x", "question": "q"}) + "\n")
    with pytest.raises(ValueError, match=r"lacks \['sharer_context'\]"):
        answer.read_rows(inp)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        answer.read_rows(tmp_path / "missing.jsonl")
