"""Fixtures for the SQL stage: one BigQuery emulator for the whole test session.

Each test loads its own small tables into a dataset of its own, so tests never see each other's
data while sharing the emulator (start-up costs a few seconds).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from components.extract import warehouse
from components.extract.warehouse import Emulator

_DATASETS = itertools.count()


@pytest.fixture(scope="session")
def emulator() -> Iterator[Emulator]:
    with warehouse.local_emulator() as running:
        yield running


@pytest.fixture(scope="session")
def bq_client(emulator: Emulator):
    return emulator.client()


@pytest.fixture(scope="session")
def read_client(emulator: Emulator):
    """Storage Read API client for the emulator (how the local extract reads results)."""
    client = emulator.read_client()
    assert client is not None, "the emulator announced no gRPC port"
    return client


@pytest.fixture
def dataset() -> str:
    """A fresh dataset name for this test (created when a table is loaded into it)."""
    return f"test_{next(_DATASETS)}"
