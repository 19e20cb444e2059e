"""A throw-away real redis-server for the tests of the Redis online store and live event log."""

from __future__ import annotations

import shutil
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

from tests.support.ports import free_port

MISSING = "redis-server is not installed (apt-get install redis-server; .ci/run installs it)"


def redis_binary() -> str | None:
    """The redis-server on PATH or Debian's, None when neither is there (the caller skips with MISSING)."""
    return shutil.which("redis-server") or ("/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None)


@contextmanager
def redis_server(binary: str, workdir: Path, start_timeout_s: float = 10.0):
    """Yields `redis://127.0.0.1:PORT/0` of a redis-server on a free loopback port (no persistence,
    files in `workdir`); it is stopped on exit."""
    import redis

    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis(host="127.0.0.1", port=port)
        deadline = time.monotonic() + start_timeout_s
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start on port {port}") from None
                time.sleep(0.05)
        client.close()
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
