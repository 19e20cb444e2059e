"""Fault injection, each case a real process over real HTTP (or real signals).

The publish root is built by the real writers: model directories from the serving tests' factory
(tests/serving/model_factory.py: a real SavedModel, vectors, ids, histories, manifest), the index by
`build_model_index`, the version by `publish_model` (which seals it with publish.json). The service
is `candidates serve` in a subprocess on a free loopback port; its log is captured to a file.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serving"))

import model_factory

from components.build_index.build import build_model_index
from components.publish.publish import publish_model
from homefeed.config import IndexConfig, PublishConfig

DIM = 8
READY_TIMEOUT_S = 120.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def candidates_command(*argv) -> list[str]:
    return [sys.executable, "-m", "homefeed_cli", *map(str, argv)]


@pytest.fixture(scope="session")
def saved_models(tmp_path_factory) -> dict[int, tuple[Path, object]]:
    root = tmp_path_factory.mktemp("fault_saved_models")
    return {
        seed: (root / f"s{seed}", model_factory.save_hashing_model(root / f"s{seed}", DIM, seed)) for seed in (0, 1)
    }


@pytest.fixture(scope="session")
def model_dirs(saved_models, tmp_path_factory) -> dict[str, Path]:
    """Two finished model directories with index/ and evaluation.json (v1: seed 0, v2: seed 1)."""
    root = tmp_path_factory.mktemp("fault_models")
    made = {}
    for version, seed in (("v1", 0), ("v2", 1)):
        path, table = saved_models[seed]
        target = model_factory.make_model_dir(root / version, path, table, version=version, seed=seed, n_articles=300)
        build_model_index(target, IndexConfig())
        (target / "evaluation.json").write_text(json.dumps({"recall@200": 0.5}))
        made[version] = target
    return made


def publish(model_dir: Path, root: Path) -> None:
    decision = publish_model(
        model_dir,
        root,
        PublishConfig(min_recall_at_200=0.1, max_regression=1.0),
        user_histories=model_dir / "user_histories.parquet",
    )
    assert decision.published, decision.reason


class Service:
    """`candidates serve` in a subprocess; `log()` is everything it wrote."""

    def __init__(self, model: Path, log_path: Path, *extra: str, env: dict | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        command = candidates_command(
            "serve", "--model", model, "--port", self.port, "--no-watch", "--reload-min-interval", "0", *extra
        )
        self._log = open(log_path, "w")
        self.process = subprocess.Popen(
            command,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
        )

    def wait_ready(self) -> dict:
        deadline = time.monotonic() + READY_TIMEOUT_S
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
        raise TimeoutError(f"the service did not become ready:\n{self.log()[-3000:]}")

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
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._log.close()
        return self.process.returncode


@pytest.fixture
def start_service(tmp_path):
    started: list[Service] = []

    def start(model: Path, *extra: str, env: dict | None = None, wait: bool = True) -> Service:
        service = Service(model, tmp_path / f"service-{len(started)}.log", *extra, env=env)
        started.append(service)
        if wait:
            service.wait_ready()
        return service

    yield start
    for service in started:
        service.stop()


def copy_tree(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target
