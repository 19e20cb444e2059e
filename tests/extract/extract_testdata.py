"""Small hand-written input tables for the SQL stage tests, and a plain-Python reference."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa

from components.extract import extract, input_files, output
from components.extract.schema import TableRef
from homefeed import features
from homefeed.config import ExtractConfig

MISSING = features.MISSING_ATTRIBUTE
TIMESTAMP = pa.timestamp("us", tz="UTC")


def ts(text: str) -> datetime:
    """'2024-01-02 10:00' -> aware UTC datetime."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def events_table(rows: list[tuple[Any, Any, Any]]) -> pa.Table:
    """(user_id, article_id, viewed_at text or datetime or None) rows."""
    users, articles, times = zip(*rows) if rows else ((), (), ())
    times = [ts(t) if isinstance(t, str) else t for t in times]
    return pa.table(
        {
            "user_id": pa.array(users, pa.string()),
            "article_id": pa.array(articles, pa.string()),
            "viewed_at": pa.array(times, TIMESTAMP),
        }
    )


def articles_table(rows: list[dict[str, Any]], columns: tuple[str, ...] | None = None) -> pa.Table:
    """Rows as dicts; `columns` picks which contract columns the table has (default: all)."""
    columns = columns or ("article_id", "title", "category", "region", "created_at", "status")
    data = {}
    for column in columns:
        values = [row.get(column) for row in rows]
        if column in ("created_at", "removed_at"):
            data[column] = pa.array([ts(v) if isinstance(v, str) else v for v in values], TIMESTAMP)
        else:
            data[column] = pa.array(values, pa.string())
    return pa.table(data)


def load(client, dataset: str, table: str, data: pa.Table) -> TableRef:
    ref = TableRef(client.project, dataset, table)
    input_files.load_table(client, ref, data)
    return ref


def run_extract(
    client,
    dataset: str,
    events: pa.Table,
    articles: pa.Table,
    out_dir: Path,
    read_client: Any = None,
    **settings: Any,
) -> tuple[extract.ExtractSummary, output.Extract]:
    """Load both tables into `dataset` and run the extract on them; (summary, read-back output).

    With `read_client` results come through the emulator's Storage Read API (as in
    `candidates extract --events ... --articles ...`), without it over REST.
    """
    load(client, dataset, "events", events)
    load(client, dataset, "articles", articles)
    # These small hand-written tables are checked against the leave-last-out rule unless a test asks
    # for the time split (test_extract_split.py).
    settings.setdefault("split", "per-user")
    config = ExtractConfig(project=client.project, dataset=dataset, **settings)
    summary = extract.extract_bigquery(client, out_dir, config, use_storage_api=False, read_client=read_client)
    return summary, output.read_extract(out_dir)


def rows_by_key(table: pa.Table, *key: str) -> dict[tuple, dict[str, Any]]:
    return {tuple(row[k] for k in key): row for row in table.to_pylist()}


# ---------------------------------------------------------------------------------------------
# The marketplace used by most tests (answers worked out by hand in test_extract_sql.py)
# ---------------------------------------------------------------------------------------------
ARTICLES = [
    {
        "article_id": "a1",
        "title": "Phone",
        "category": "phones",
        "region": "north",
        "created_at": "2023-12-01 00:00",
        "status": None,
    },
    {
        "article_id": "a2",
        "title": "Novel",
        "category": "books",
        "region": None,
        "created_at": "2024-01-01 00:00",
        "status": "active",
    },
    {"article_id": "a3", "title": "Lamp", "category": "", "region": "south", "created_at": None, "status": "ACTIVE "},
    {
        "article_id": "a4",
        "title": "Desk",
        "category": "furniture",
        "region": "south",
        "created_at": "2023-06-01 00:00",
        "status": "active",
    },
    {
        "article_id": "a5",
        "title": "Bike",
        "category": "sports",
        "region": "north",
        "created_at": "2024-01-02 00:00",
        "status": "sold",
    },
    {
        "article_id": "a6",
        "title": "Sofa",
        "category": "furniture",
        "region": "east",
        "created_at": "2024-01-02 00:00",
        "status": "deleted",
    },
]

EVENTS = [
    ("u1", "a1", "2024-01-01 10:00"),
    ("u1", "a2", "2024-01-02 10:00"),
    ("u1", "a4", "2024-01-03 10:00"),  # same time as a3: a3 comes first (article_id order)
    ("u1", "a3", "2024-01-03 10:00"),
    ("u1", "a5", "2024-01-04 10:00"),
    ("u1", "a1", "2024-01-05 10:00"),  # viewed again; the latest event overall
    ("u2", "a2", "2024-01-01 12:00"),
    ("u2", "a6", "2024-01-02 12:00"),
    ("u3", "a1", "2024-01-03 00:00"),  # a single view: no training example, but a history
]


# ---------------------------------------------------------------------------------------------
# Reference implementation (plain Python) for generated data
# ---------------------------------------------------------------------------------------------
def random_marketplace(seed: int, users: int = 25, articles: int = 12, events: int = 220):
    """Events with many ties (few distinct times), duplicates, and some articles without attributes."""
    rng = random.Random(seed)
    article_rows = [
        {"article_id": f"a{i:02d}", "category": rng.choice(["x", "y", None]), "region": rng.choice(["n", "s", ""])}
        for i in range(articles)
    ]
    base = ts("2024-03-01 00:00")
    event_rows = [
        (f"u{rng.randrange(users):02d}", f"a{rng.randrange(articles):02d}", base + timedelta(hours=rng.randrange(40)))
        for _ in range(events)
    ]
    event_rows += event_rows[:15]  # exact duplicates
    rng.shuffle(event_rows)
    return event_rows, article_rows


def reference_examples(event_rows, article_rows, history_length: int) -> dict[tuple, dict[str, Any]]:
    """What training_examples.sql must return, keyed by (user_id, viewed_at, label)."""
    attrs = {r["article_id"]: {a: (r.get(a) or MISSING) for a in features.ARTICLE_ATTRIBUTES} for r in article_rows}
    views = sorted(set(event_rows), key=lambda e: (e[0], e[2], e[1]))
    as_of = max(e[2] for e in views)
    by_user: dict[str, list] = {}
    for user, article, when in views:
        by_user.setdefault(user, []).append((article, when))
    expected = {}
    for user, seq in by_user.items():
        for i in range(1, len(seq)):
            label, when = seq[i]
            earlier = [a for a, _ in seq[max(0, i - history_length) : i]][::-1]
            expected[(user, when, label)] = {
                "history": earlier,
                "history_category": [attrs[a]["category"] for a in earlier],
                "history_region": [attrs[a]["region"] for a in earlier],
                "label_category": attrs[label]["category"],
                "label_region": attrs[label]["region"],
                "split": features.split_of(len(seq) - 1 - i),
                "example_age_days": (as_of - when).total_seconds() / 86400,
            }
    return expected
