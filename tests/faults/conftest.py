"""Fault injection, each case a real process over real HTTP (or real signals).

The publish root is built by the real writers: model directories from the serving tests' factory
(tests/support/model_factory.py: a real SavedModel, vectors, ids, histories, manifest), the index by
`build_model_index`, the version by `publish_model` (which seals it with publish.json). The service
is `candidates serve` in a subprocess on a free loopback port (tests/support/service.py); its log
is captured to a file.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from components.build_index.build import build_model_index
from homefeed.config import IndexConfig
from tests.faults.harness import SERVE_FLAGS
from tests.support import model_factory
from tests.support.service import Service

DIM = 8


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


@pytest.fixture
def start_service(tmp_path):
    started: list[Service] = []

    def start(model: Path, *extra: str, env: dict | None = None, wait: bool = True) -> Service:
        """`candidates serve --model MODEL --no-watch --reload-min-interval 0 EXTRA...`, stopped after the test."""
        service = Service(model, tmp_path / f"service-{len(started)}.log", *SERVE_FLAGS, *extra, env=env)
        started.append(service)
        if wait:
            service.wait_ready()
        return service

    yield start
    for service in started:
        service.stop()
