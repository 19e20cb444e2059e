"""The local warehouse helpers: DuckDB's spatial extension from the wheel, clients, empty files."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
from extract_testdata import ARTICLES, articles_table, events_table

from components.extract import extract, warehouse


def test_spatial_extension_is_installed_from_the_wheel_not_downloaded(tmp_path):
    source = warehouse.spatial_extension_file()
    assert source.name == "spatial.duckdb_extension" and "duckdb_extension_spatial" in str(source)
    home = tmp_path / "home"
    home.mkdir()
    assert warehouse.ensure_spatial_extension(home) == home
    installed = list(home.glob(".duckdb/extensions/v*/*/spatial.duckdb_extension"))
    assert len(installed) == 1 and installed[0].stat().st_size == source.stat().st_size
    assert warehouse.ensure_spatial_extension(home) == home  # second time: nothing to do


def test_emulator_clients_point_at_the_endpoint(emulator):
    client = warehouse.emulator_client(emulator.endpoint.removeprefix("http://"), "some-project")
    assert client.project == "some-project"
    assert emulator.endpoint == client._connection.API_BASE_URL
    assert emulator.grpc_endpoint and emulator.grpc_endpoint.startswith("127.0.0.1:")
    assert warehouse.Emulator("http://127.0.0.1:1").read_client() is None


def test_an_empty_input_file_fails_before_any_emulator_starts(tmp_path):
    pq.write_table(events_table([]), tmp_path / "events.parquet")
    pq.write_table(articles_table(ARTICLES), tmp_path / "articles.parquet")
    with pytest.raises(ValueError, match=r"events file '.*events\.parquet' has no rows"):
        extract.extract_local(tmp_path / "events.parquet", tmp_path / "articles.parquet", tmp_path / "out")
