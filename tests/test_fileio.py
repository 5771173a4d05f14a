"""Atomic file writes: a reader sees the old file or the new one, never a part, and no temporary is left behind;
a cache filled by several processes is filled by one at a time."""
import subprocess
import sys

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


def test_exclusive_lets_one_process_in_at_a_time(tmp_path):
    log = tmp_path / "log"
    body = ("import sys, time\nfrom lcf_jax.fileio import exclusive\nwith exclusive(sys.argv[1]):\n"
            "    open(sys.argv[2], 'a').write('in ')\n    time.sleep(0.3)\n    open(sys.argv[2], 'a').write('out ')\n")
    procs = [subprocess.Popen([sys.executable, "-c", body, str(tmp_path / "cache.lock"), str(log)]) for _ in range(3)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    assert log.read_text().split() == ["in", "out"] * 3   # unlocked, they would interleave: in in in out out out
