"""Fixtures for the serving tests: real SavedModels and model directories, a real redis-server."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import model_factory
import pytest

from components.build_index.build import build_model_index
from homefeed.config import IndexConfig

DIM = 16


@pytest.fixture(scope="session")
def saved_models(tmp_path_factory) -> dict[int, tuple[Path, object]]:
    """Two SavedModels with different embedding tables (seed -> (path, table)), built once."""
    root = tmp_path_factory.mktemp("saved_models")
    return {
        seed: (root / f"s{seed}", model_factory.save_hashing_model(root / f"s{seed}", DIM, seed)) for seed in (0, 1)
    }


@pytest.fixture(scope="session")
def make_model(saved_models, tmp_path_factory):
    """`make_model(version, seed=0, index=True, **kwargs) -> model dir` (flat index unless told)."""

    def make(
        version: str, seed: int = 0, index: bool = True, index_config: IndexConfig | None = None, **kwargs
    ) -> Path:
        path, table = saved_models[seed]
        target = tmp_path_factory.mktemp("models") / version
        model_factory.make_model_dir(target, path, table, version=version, seed=seed, **kwargs)
        if index:
            build_model_index(target, index_config or IndexConfig())
        return target

    return make


@pytest.fixture(scope="session")
def model_v1(make_model) -> Path:
    return make_model("v1")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """A throw-away redis-server on a free loopback port (no persistence)."""
    binary = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server; .ci/run installs it)")
    port = _free_port()
    workdir = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    import redis

    client = redis.Redis(host="127.0.0.1", port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"redis-server did not start on port {port}") from None
            time.sleep(0.05)
    client.close()
    yield f"redis://127.0.0.1:{port}/0"
    process.terminate()
    process.wait(timeout=10)
