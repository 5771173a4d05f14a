"""Atomic file writes: a reader sees the old file or the new one, never a part, and no temporary is left behind."""
import pytest

from lcf_jax.fileio import atomic_write_text


def test_atomic_write_text_replaces_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "sub" / "rows.json"
    atomic_write_text(target, "old")
    atomic_write_text(target, "new")
    assert target.read_text() == "new" and [p.name for p in target.parent.iterdir()] == ["rows.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "rows.json"
    atomic_write_text(target, "old")

    def broken_replace(src, dst):
        raise OSError("disk full")
    monkeypatch.setattr("lcf_jax.fileio.os.replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(target, "new")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["rows.json"]
