"""The service as the tests run it: a real HTTP server on a free loopback port.

`Service`: `candidates serve` in its own process (what users and the faults run), its output in a
log file. `running_app`: the FastAPI app under uvicorn in a thread of the test process (the live
tests: faster to start, and the test can reach into the same process).
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from tests.support.commands import candidates_command
from tests.support.ports import free_port

READY_TIMEOUT_S = 120.0


class Service:
    """`candidates serve --model MODEL --port PORT FLAGS...` in a subprocess; `log()` is everything it wrote.

    Call `wait_ready()` before the first request and `stop()` at the end (a `finally`, or a fixture's
    teardown): the process is the test's, nothing else ends it.
    """

    def __init__(self, model: Path, log_path: Path, *flags: str, env: dict | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = open(log_path, "w")
        self.process = subprocess.Popen(
            candidates_command("serve", "--model", model, "--port", self.port, *flags),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
        )

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> dict:
        """The /readyz body once it answers 200; fails with the log's tail if the process exits or time runs out."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the service exited ({self.process.returncode}):\n{self.log()[-3000:]}")
            try:
                status, body = self.get("/readyz")
                if status == 200:
                    return body
            except OSError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"the service did not become ready in {timeout_s:.0f} s:\n{self.log()[-3000:]}")

    def request(self, method: str, path: str, headers: dict | None = None, data: bytes | None = None):
        """(status, parsed JSON body, content type); a non-JSON body fails the test."""
        request = urllib.request.Request(self.url + path, method=method, headers=headers or {}, data=data)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                raw, status, kind = response.read(), response.status, response.headers.get("content-type", "")
        except urllib.error.HTTPError as error:
            raw, status, kind = error.read(), error.code, error.headers.get("content-type", "")
        assert kind.startswith("application/json"), f"{method} {path[:80]}: {status} {kind}: {raw[:200]!r}"
        return status, json.loads(raw), kind

    def get(self, path: str):
        status, body, _ = self.request("GET", path)
        return status, body

    def post(self, path: str, **kwargs):
        status, body, _ = self.request("POST", path, **kwargs)
        return status, body

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        """SIGTERM (SIGKILL after 30 s); the exit status."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._log.close()
        return self.process.returncode


@contextmanager
def running_app(settings, start_timeout_s: float = 120.0):
    """Yields an `httpx.Client` on `create_app(settings)` served by uvicorn in a thread (stopped on exit)."""
    import httpx
    import uvicorn

    from serving.http.app import create_app

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_config=None, lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the service did not start")
        time.sleep(0.05)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(timeout=30)
