"""Several workers (serving/http/workers.py), real gunicorn on 127.0.0.1: a reload (LATEST, SIGHUP,
/admin/reload) reaches every worker; /metrics adds up every worker's counters; live writes need
Redis; no worker outlives the master (SIGKILL or SIGTERM); the plain `gunicorn -c` launch works."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from serve_process import LAUNCHER, free_port, publish_root

from serving.query import wait_until_ready

pytestmark = pytest.mark.slow


def call(url: str, method: str = "GET", body: bytes | None = None) -> tuple[int, dict | str]:
    """One request on a new connection (so the kernel may hand it to either worker)."""
    request = urllib.request.Request(url, data=body, method=method, headers={"Connection": "close"})
    if body is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            text = response.read().decode()
            return response.status, json.loads(text) if "json" in response.headers.get("content-type", "") else text
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def running(pid: int) -> bool:
    """Whether `pid` runs (a zombie, dead but not yet reaped by whoever adopted it, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def workers_of(master: int) -> set[int]:
    children = Path(f"/proc/{master}/task/{master}/children")
    return {int(p) for p in children.read_text().split()} if children.exists() else set()


def versions_by_worker(url: str, master: int, timeout_s: float = 300) -> dict[int, str]:
    """{worker pid: model version} from /readyz once every current worker of `master` answered."""
    seen: dict[int, str] = {}
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            status, body = call(f"{url}/readyz")
        except OSError:  # an old worker closing, or new ones still loading, as gunicorn replaces them
            status, body = 0, {}
        if status == 200:
            seen[body["worker_pid"]] = body["model_version"]
        current = workers_of(master)
        if len(current) == 2 and current <= set(seen):
            return {pid: seen[pid] for pid in current}
        assert time.monotonic() < deadline, f"workers {current} did not all answer: {seen}"


def wait_for_versions(url: str, master: int, version: str, timeout_s: float = 300) -> dict[int, str]:
    deadline = time.monotonic() + timeout_s
    while set((now := versions_by_worker(url, master)).values()) != {version}:
        assert time.monotonic() < deadline, f"not every worker serves {version}: {now}"
        time.sleep(0.2)
    return now


def requests_counted(url: str, endpoint: str) -> float:
    status, text = call(f"{url}/metrics")
    assert status == 200
    pattern = rf'^candidates_http_requests_total\{{endpoint="{re.escape(endpoint)}",status="200"\}} (\S+)$'
    return sum(float(m.group(1)) for m in re.finditer(pattern, text, re.M))


def settled_count(url: str, endpoint: str, expected: float | None = None, timeout_s: float = 10.0) -> float:
    """The request counter once it stops moving (or reaches `expected`).

    A request is counted after its response has gone out, so the last answer a client saw may be
    counted a moment later: read until two readings agree, or the expected figure shows.
    """
    deadline = time.monotonic() + timeout_s
    previous = requests_counted(url, endpoint)
    while time.monotonic() < deadline:
        time.sleep(0.3)
        current = requests_counted(url, endpoint)
        if current == expected or (expected is None and current == previous):
            return current
        previous = current
    return previous


def test_a_reload_reaches_every_worker_and_no_worker_outlives_a_killed_master(model_v1, make_model, tmp_path):
    root = publish_root(model_v1, tmp_path / "publish")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-c", LAUNCHER, "serve", "--model", str(root), "--port", str(port), "--workers", "2"]
    command += ["--reload-min-interval", "0", "--watch-interval", "0.5"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    workers: set[int] = set()
    try:
        wait_until_ready(url, process, timeout_s=400)  # each worker loads the test's SavedModel (no NumPy towers)
        first = versions_by_worker(url, process.pid)
        assert set(first.values()) == {"v1"} and len(first) == 2
        workers |= set(first)
        # Both map the one index file their master loaded before forking.
        index_maps = [{line.split()[-1] for line in open(f"/proc/{pid}/maps") if "/index/" in line} for pid in first]
        assert index_maps[0] & index_maps[1], index_maps

        # LATEST changes: the master sees it, loads v2 and replaces both workers.
        shutil.copytree(make_model("v2", seed=1), root / "versions" / "v2")
        (root / "LATEST").write_text("v2\n")
        second = wait_for_versions(url, process.pid, "v2")
        assert not set(second) & set(first), (first, second)  # new processes, forked from the reloaded master
        workers |= set(second)

        # POST /admin/reload on one worker: every worker serves the new version.
        shutil.copytree(make_model("v3", seed=0), root / "versions" / "v3")
        (root / "LATEST").write_text("v3\n")
        status, body = call(f"{url}/admin/reload", "POST", b"")
        assert status == 200 and body["model_version"] == "v3", body
        third = wait_for_versions(url, process.pid, "v3")
        workers |= set(third)

        # SIGHUP to the master replaces the workers (still v3).
        process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 300
        while set(fourth := versions_by_worker(url, process.pid)) & set(third):
            assert time.monotonic() < deadline, f"SIGHUP did not replace the workers {third}"
            time.sleep(0.2)
        assert set(fourth.values()) == {"v3"}
        workers |= set(fourth)

        event = {"events": [{"user_id": "u0001", "article_id": "a0003", "viewed_at": "2024-06-02T10:00:00Z"}]}
        status, body = call(f"{url}/v1/events", "POST", json.dumps(event).encode())
        assert status == 503 and "--redis-url" in body["error"]["message"], body
        status, body = call(f"{url}/v1/users/u0001/candidates?k=5")
        assert status == 200 and body["model_version"] == "v3" and len(body["candidates"]) == 5

        # SIGKILL: no handler runs in the master, and still no worker outlives it.
        assert all(running(pid) for pid in fourth)
        process.kill()
        process.wait(timeout=10)
        deadline = time.monotonic() + 20
        while alive := [pid for pid in fourth if running(pid)]:
            assert time.monotonic() < deadline, f"workers {alive} outlived the killed master"
            time.sleep(0.1)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=60)[0]
        for pid in workers:  # should this test fail, leave no orphan behind
            if running(pid):
                os.kill(pid, signal.SIGKILL)
    assert "LATEST changed: reloading every worker" in output, output[-3000:]
    assert output.count("Hang up: Master") >= 3, output[-3000:]  # LATEST, /admin/reload, SIGHUP: gunicorn's reloads


def test_plain_gunicorn_sums_every_workers_metrics_and_sigterm_stops_them_all(model_v1, tmp_path):
    root = publish_root(model_v1, tmp_path / "publish")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    metrics_dir = tmp_path / "metrics"
    env = {
        **os.environ,
        "CANDIDATES_MODEL": str(root),
        "CANDIDATES_WORKERS": "2",
        "CANDIDATES_WATCH_LATEST": "false",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
    }
    app = "serving.http.app:create_app_from_environment(preload=True)"
    command = [sys.executable, "-m", "gunicorn", "-c", "python:serving.http.gunicorn_conf", "-b", f"127.0.0.1:{port}"]
    process = subprocess.Popen([*command, app], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    workers: set[int] = set()
    try:
        wait_until_ready(url, process, timeout_s=180)
        before = settled_count(url, "/readyz")
        served: dict[int, int] = {}
        deadline = time.monotonic() + 60
        while len(served) < 2 or sum(served.values()) < 20:  # both workers answered, 20 requests in all
            status, body = call(f"{url}/readyz")
            assert status == 200, body
            served[body["worker_pid"]] = served.get(body["worker_pid"], 0) + 1
            assert time.monotonic() < deadline, f"one worker answered everything: {served}"
        workers = set(served)
        assert workers == workers_of(process.pid)
        # Every worker's counters, added up: one worker's alone would miss the other's answers.
        answered = sum(served.values())
        assert settled_count(url, "/readyz", expected=before + answered) - before == answered, served
        assert list(metrics_dir.glob("counter_*.db")), "no per-process metric files"

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
        deadline = time.monotonic() + 20
        while alive := [pid for pid in workers if running(pid)]:
            assert time.monotonic() < deadline, f"workers {alive} outlived the stopped master"
            time.sleep(0.1)
    finally:
        if process.poll() is None:
            process.kill()
        output = process.communicate(timeout=60)[0]
        for pid in workers:
            if running(pid):
                os.kill(pid, signal.SIGKILL)
    assert "Booting worker" in output, output[-3000:]
