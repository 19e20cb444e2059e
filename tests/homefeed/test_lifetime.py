"""homefeed.lifetime: scratch folders named for their owner, children that die with their parent."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from homefeed import lifetime

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc and prctl")


def test_only_folders_of_dead_owners_are_removed(tmp_path):
    mine = lifetime.owned_dir(tmp_path, ".staging-")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".staging-p{dead.pid}t1b{lifetime.boot_id()}-deadbeef"  # pid gone (or reused: other start time)
    stale.mkdir()
    other_boot = tmp_path / f".staging-p{1}t1b{'0' * 8 if lifetime.boot_id() != '0' * 8 else '1' * 8}-cafe0000"
    other_boot.mkdir()
    foreign = tmp_path / ".staging-made-by-someone-else"
    foreign.mkdir()
    removed = lifetime.remove_stale_dirs(tmp_path, ".staging-")
    assert sorted(removed) == sorted([stale, other_boot])
    assert mine.exists() and foreign.exists()


def test_a_child_started_through_dies_with_parent_is_killed_with_its_parent(tmp_path):
    # parent -> child (through dies_with_parent); SIGKILL the parent, the child must go too.
    script = (
        "import subprocess, sys, time\n"
        "from homefeed import lifetime\n"
        "child = subprocess.Popen(lifetime.dies_with_parent([sys.executable, '-c', 'import time; time.sleep(60)']))\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    child_pid = int(parent.stdout.readline())
    started = lifetime.start_time(child_pid)
    assert lifetime.is_alive(child_pid, started)
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    while lifetime.is_alive(child_pid, started) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not lifetime.is_alive(child_pid, started)
