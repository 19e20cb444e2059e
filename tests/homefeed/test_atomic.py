"""homefeed/atomic.py: the one staged-fsync-rename writer. Readers see the old content or the new,
never a part; a failed write leaves the old content and no staging debris."""

from __future__ import annotations

import os
import stat

import pytest

from homefeed import atomic


def listing(directory):
    return sorted(p.name for p in directory.iterdir())


def test_write_text_replaces_the_file_readable_by_others(tmp_path):
    target = tmp_path / "LATEST"
    atomic.write_text(target, "v1\n")
    atomic.write_text(target, "v2\n")
    assert target.read_text() == "v2\n"
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o644  # not mkstemp's 0600
    assert listing(tmp_path) == ["LATEST"]


def test_a_failing_writer_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "plot.png"
    atomic.write_text(target, "old")

    def half_then_fail(temporary):
        temporary.write_bytes(b"half a pl")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic.write_with(target, half_then_fail)
    assert target.read_text() == "old" and listing(tmp_path) == ["plot.png"]


def test_staged_dir_appears_whole_or_not_at_all(tmp_path):
    target = tmp_path / "index"
    with pytest.raises(ValueError):
        with atomic.staged_dir(target) as staging:
            (staging / "a").write_text("1")
            raise ValueError("build failed")
    assert listing(tmp_path) == []  # neither the target nor its staging directory

    with atomic.staged_dir(target) as staging:
        (staging / "a").write_text("1")
        assert not target.exists()  # nothing under the final name until the body is done
    assert (target / "a").read_text() == "1"

    with pytest.raises(FileExistsError):  # a finished directory is never overwritten by default
        with atomic.staged_dir(target) as staging:
            (staging / "a").write_text("2")
    with atomic.staged_dir(target, replace=True) as staging:
        (staging / "b").write_text("2")
    assert listing(target) == ["b"] and listing(tmp_path) == ["index"]
