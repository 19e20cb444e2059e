"""`candidates sync-articles --project P --dataset D`: listings read from a BigQuery articles table
(the official client against the local emulator) become the same PUT bodies as from a file."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
from extract_testdata import articles_table, load

from components.sync_articles.sync import read_articles_file, read_articles_table

ROWS = [
    {
        "article_id": "a1",
        "title": "oak desk",
        "category": "furniture",
        "region": "north",
        "created_at": "2025-01-01 08:00",
        "status": "active",
    },
    {
        "article_id": "a2",
        "title": None,
        "category": "toys",
        "region": None,
        "created_at": "2025-01-02 09:30",
        "status": "sold",
    },
    {"article_id": "a3", "title": "bike", "category": None, "region": "south", "created_at": None, "status": None},
    {
        "article_id": "a4",
        "title": "lamp",
        "category": "furniture",
        "region": "north",
        "created_at": "2024-12-31 23:59",
        "status": "deleted",
    },
]


def expected(since_day: str | None = None) -> dict[str, dict]:
    """The PUT bodies by hand: null fields left out, created_at as RFC 3339 UTC."""
    bodies = {}
    for row in ROWS:
        if since_day and (row["created_at"] is None or row["created_at"] < since_day):
            continue
        body = {k: v for k, v in row.items() if k != "created_at" and v is not None}
        if row["created_at"]:
            body["created_at"] = row["created_at"].replace(" ", "T") + ":00+00:00"
        bodies[row["article_id"]] = body
    return bodies


@pytest.mark.parametrize("since", [None, "2025-01-01"])
def test_a_bigquery_articles_table_gives_the_bodies_a_file_gives(bq_client, emulator, dataset, tmp_path, since):
    table = articles_table(ROWS)
    load(bq_client, dataset, "articles", table)
    from_table = read_articles_table(emulator.project, dataset, "articles", since, emulator.endpoint)
    assert {row["article_id"]: row for row in from_table} == expected(since and since + " 00:00")
    pq.write_table(table, tmp_path / "articles.parquet")
    assert sorted(from_table, key=lambda r: r["article_id"]) == sorted(
        read_articles_file(str(tmp_path / "articles.parquet"), since), key=lambda r: r["article_id"]
    )


def test_a_table_with_only_some_columns_and_a_missing_table(bq_client, emulator, dataset):
    load(bq_client, dataset, "listings", articles_table(ROWS[:2], columns=("article_id", "region")))
    rows = read_articles_table(emulator.project, dataset, "listings", None, emulator.endpoint)
    assert sorted(rows, key=lambda r: r["article_id"]) == [
        {"article_id": "a1", "region": "north"},
        {"article_id": "a2"},
    ]
    with pytest.raises(Exception, match="nowhere"):
        read_articles_table(emulator.project, dataset, "nowhere", None, emulator.endpoint)
