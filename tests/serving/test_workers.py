"""`candidates serve --workers 2`: /admin/reload reaches every worker; live writes need Redis; the
workers never outlive the `serve` process, even when it is SIGKILLed."""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from serve_process import free_port, publish_root, start_serve

from homefeed import lifetime
from serving.cli import WORKERS_DIR_PREFIX
from serving.query import wait_until_ready


def call(url: str, method: str = "GET", body: bytes | None = None) -> tuple[int, dict]:
    """One request on a new connection (so the kernel may hand it to either worker)."""
    request = urllib.request.Request(url, data=body, method=method, headers={"Connection": "close"})
    if body is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def running(pid: int) -> bool:
    """Whether `pid` runs (a zombie, dead but not yet reaped by whoever adopted it, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def versions_by_worker(url: str, tries: int = 60) -> dict[int, str]:
    """{worker pid: model version} from /readyz, until both workers answered (or `tries` ran out)."""
    seen: dict[int, str] = {}
    for _ in range(tries):
        status, body = call(f"{url}/readyz")
        assert status == 200, body
        seen[body["worker_pid"]] = body["model_version"]
        if len(seen) == 2:
            break
    return seen


@pytest.mark.slow
def test_reload_reaches_every_worker_and_live_writes_are_refused_without_redis(model_v1, make_model, tmp_path):
    root = publish_root(model_v1, tmp_path / "publish")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = start_serve(root, port, "--workers", "2", "--reload-min-interval", "0")
    try:
        wait_until_ready(url, process, timeout_s=120)
        deadline = time.monotonic() + 120
        while len(before := versions_by_worker(url)) < 2:  # the second worker may still be loading
            assert time.monotonic() < deadline, f"only {before} answered"
        assert set(before.values()) == {"v1"}

        shutil.copytree(make_model("v2", seed=1), root / "versions" / "v2")
        (root / "LATEST").write_text("v2\n")
        status, body = call(f"{url}/admin/reload", "POST", b"")
        assert status == 200 and body["model_version"] == "v2", body
        deadline = time.monotonic() + 60
        while set((after := versions_by_worker(url)).values()) != {"v2"} or len(after) < 2:
            assert time.monotonic() < deadline, f"the reload did not reach every worker: {after}"
            time.sleep(0.2)
        assert set(after) == set(before)  # the same two processes, reloaded (not restarted)
        # Both map one copy of v2's per-article arrays (serving/versions/shared_arrays.py), not one each.
        mapped = [
            {line.split()[-1] for line in open(f"/proc/{pid}/maps") if "/shared-arrays/" in line} for pid in after
        ]
        assert any(p.endswith("article_ids/keys.npy") for p in mapped[0] & mapped[1]), mapped

        event = {"events": [{"user_id": "u0001", "article_id": "a0003", "viewed_at": "2024-06-02T10:00:00Z"}]}
        status, body = call(f"{url}/v1/events", "POST", json.dumps(event).encode())
        assert status == 503 and "--redis-url" in body["error"]["message"], body
        status, body = call(f"{url}/v1/users/u0001/candidates?k=5")
        assert status == 200 and body["model_version"] == "v2" and len(body["candidates"]) == 5

        # No child outlives its parent: SIGKILL (no handler runs) and the workers go too.
        assert all(running(pid) for pid in after)
        process.kill()
        process.wait(timeout=10)
        deadline = time.monotonic() + 20
        while alive := [pid for pid in after if running(pid)]:
            assert time.monotonic() < deadline, f"workers {alive} outlived the killed serve process"
            time.sleep(0.1)
        # What the killed serve left (its workers' directory, shared arrays included) goes with the next serve.
        left = [p for p in Path(tempfile.gettempdir()).glob(f"{WORKERS_DIR_PREFIX}p{process.pid}t*") if p.is_dir()]
        assert len(left) == 1 and (left[0] / "shared-arrays").is_dir(), left
        assert left[0] in lifetime.remove_stale_dirs(tempfile.gettempdir(), WORKERS_DIR_PREFIX) and not left[0].exists()
    finally:
        process.send_signal(signal.SIGTERM)
        for pid in locals().get("after", ()):  # should this test fail, leave no orphan behind
            if running(pid) and process.poll() is not None:
                os.kill(pid, signal.SIGKILL)
        output = process.communicate(timeout=60)[0]
    assert "reload announced to the other workers" in output, output[-3000:]
    assert "reload announced by another worker: loaded" in output, output[-3000:]
    assert output.count("shared-arrays/") and output.count("/article_ids in ") == 2, output[-3000:]  # once per version
