"""Killing a command leaves no process behind (checked by PID), and the next run starts clean;
events from the future are counted and dropped by the real `candidates extract`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from homefeed import lifetime
from tests.support.commands import candidates_command

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]  # sample data, extracts, two pipeline starts

STARTUP_TIMEOUT_S = 240.0
GONE_TIMEOUT_S = 20.0


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("inputs")
    subprocess.run(
        candidates_command("sample-data", "--out", out, "--users", "120", "--articles", "200", "--days", "10"),
        check=True,
        capture_output=True,
        timeout=300,
    )
    return out / "events.parquet", out / "articles.parquet"


def start(argv: list, log: Path) -> subprocess.Popen:
    handle = open(log, "w")
    return subprocess.Popen(
        candidates_command(*argv), stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
    )


def follow_until(process: subprocess.Popen, wanted: str, seen: dict[int, int | None], log: Path) -> None:
    """Records every descendant of `process` until one whose command line contains `wanted` runs."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        assert process.poll() is None, f"exited early ({process.returncode}):\n{log.read_text()[-3000:]}"
        found = lifetime.descendants(process.pid)
        seen.update(found)
        for pid in found:
            try:
                if wanted in Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    time.sleep(1.0)  # let it get going (and start its own children)
                    seen.update(lifetime.descendants(process.pid))
                    return
            except OSError:
                continue
        time.sleep(0.1)
    raise TimeoutError(f"no {wanted!r} process appeared:\n{log.read_text()[-3000:]}")


def assert_all_gone(seen: dict[int, int | None]) -> None:
    deadline = time.monotonic() + GONE_TIMEOUT_S
    alive = dict(seen)
    while alive and time.monotonic() < deadline:
        alive = {pid: started for pid, started in alive.items() if lifetime.is_alive(pid, started)}
        time.sleep(0.1)
    described = []
    for pid in alive:
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")[:200]
            described.append(f"{pid}: {command!r}")
        except OSError:
            described.append(str(pid))
    for pid, started in alive.items():  # do not leave them to the rest of the suite
        if lifetime.is_alive(pid, started):
            os.kill(pid, signal.SIGKILL)
    assert not alive, "still running after the parent died:\n" + "\n".join(described)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_killing_extract_stops_the_emulator_and_the_next_run_is_clean(inputs, tmp_path, sig):
    events, articles = inputs
    out = tmp_path / "extract"
    process = start(["extract", "--events", events, "--articles", articles, "--out", out], tmp_path / "1.log")
    seen: dict[int, int | None] = {}
    follow_until(process, "bqemulator", seen, tmp_path / "1.log")
    assert seen, "extract started no child process"
    process.send_signal(sig)
    process.wait(timeout=60)
    assert_all_gone(seen)
    if sig == signal.SIGTERM:
        assert process.returncode == 128 + signal.SIGTERM, (tmp_path / "1.log").read_text()[-2000:]
        return  # an orderly stop; the next run after the harsher SIGKILL is checked below

    result = subprocess.run(
        candidates_command("extract", "--events", events, "--articles", articles, "--out", out),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "_SUCCESS").exists()
    assert not [p.name for p in tmp_path.iterdir() if ".staging-" in p.name or ".previous-" in p.name]


def test_future_events_are_counted_and_dropped_and_as_of_is_sane(inputs, tmp_path):
    events, articles = inputs
    table = pq.read_table(events)
    first = table.slice(0, 5)
    future = first.set_column(
        first.schema.get_field_index("viewed_at"),
        "viewed_at",
        pa.array([datetime(2099, 1, 1, i, tzinfo=UTC) for i in range(5)], type=table.schema.field("viewed_at").type),
    )
    pq.write_table(pa.concat_tables([table, future]), tmp_path / "events.parquet")
    result = subprocess.run(
        candidates_command(
            "extract",
            "--events",
            tmp_path / "events.parquet",
            "--articles",
            articles,
            "--out",
            tmp_path / "out",
            "--json",
        ),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "extract_summary.json").read_text())
    assert summary["dropped"]["events_in_future"] == 5
    assert datetime.fromisoformat(summary["as_of"]) <= datetime.now(UTC)
    assert summary["as_of"] == json.loads(result.stdout)["as_of"] and summary["as_of"] < "2099"
    assert "dropped 5 events dated after" in result.stderr  # and it says so in the log


@pytest.mark.e2e
def test_killing_run_local_stops_every_task_and_the_next_run_cleans_up(inputs, tmp_path):
    events, articles = inputs
    workdir = tmp_path / "runs"
    argv = ["pipeline", "run-local", "--events", events, "--articles", articles, "--workdir", workdir]
    first = start(argv, tmp_path / "1.log")
    seen: dict[int, int | None] = {}
    follow_until(first, "bqemulator", seen, tmp_path / "1.log")  # inside the extract task: 3 levels deep
    first.kill()
    first.wait(timeout=60)
    assert_all_gone(seen)
    stale = list(workdir.glob(".kfp-workspace-*"))
    assert stale, "a SIGKILLed run cannot clean up its kfp workspace itself"

    second = start(argv, tmp_path / "2.log")
    seen = {}
    follow_until(second, "bqemulator", seen, tmp_path / "2.log")
    assert not any(p.exists() for p in stale), "the next run removes the workspace of the killed one"
    second.send_signal(signal.SIGTERM)
    second.wait(timeout=60)
    assert_all_gone(seen)
    assert second.returncode != 0
    assert not list(workdir.glob(".kfp-workspace-*")), "a SIGTERMed run removes its own workspace"
