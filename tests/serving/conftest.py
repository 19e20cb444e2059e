"""Fixtures for the serving tests: real SavedModels and model directories, a real redis-server."""

from __future__ import annotations

from pathlib import Path

import pytest

from components.build_index.build import build_model_index
from homefeed.config import IndexConfig
from tests.support import model_factory
from tests.support.redis_server import MISSING, redis_binary, redis_server

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


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """A throw-away redis-server on a free loopback port (no persistence)."""
    binary = redis_binary()
    if binary is None:
        pytest.skip(MISSING)
    with redis_server(binary, tmp_path_factory.mktemp("redis")) as url:
        yield url
