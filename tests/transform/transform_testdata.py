"""Hand-made EXTRACT_DIR data for the transform tests (never the extract stage itself).

A few users with histories longer than the test H, eval examples holding articles never seen in
training, and one malformed record per kind of problem. Imported by conftest.py and the tests.
"""

from __future__ import annotations

import argparse
import collections
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from components.extract.output import output_schema
from homefeed import features
from homefeed.layout import extract_dir as extract_layout

# The history length used by the shared run: shorter than most test histories, so truncation shows.
H = 4
UNSEEN_LABEL = "a99"  # eval-only label: never in the train split
UNSEEN_HISTORY = "a98"  # eval-only history entry: never in the train split

# The extract stage's own output schema: test inputs look exactly like a real EXTRACT_DIR.
EXAMPLES_SCHEMA = output_schema("training_examples")


def category(article: str) -> str:
    return f"cat{int(article[1:]) % 3}"


def region(article: str) -> str:
    return f"reg{int(article[1:]) % 2}"


# Users' recent queries: non-ASCII, full-width, punctuation, mixed case; every third user has none.
QUERIES = ["유모차 Baby", "Baby-Stroller!", "ＡＢＣ lamp", "café crème", "Ёлка, ёлка", "ﬁsh cake", "유모차"]


def queries_of(user: str, t: int) -> list[str]:
    u = int(user[1:]) if user[1:].isdigit() else 0
    return [] if u % 3 == 0 else [QUERIES[(u + t + k) % len(QUERIES)] for k in range(1 + (u + t) % 3)]


def example(user: str, label: str, history: list[str], split: str, age: float) -> dict[str, Any]:
    """One training-example row in the EXTRACT_DIR layout, attributes derived from the ids."""
    return {
        features.USER_ID: user,
        features.LABEL: label,
        features.label_attribute("category"): category(label),
        features.label_attribute("region"): region(label),
        features.HISTORY: list(history),
        features.history_attribute("category"): [category(a) for a in history],
        features.history_attribute("region"): [region(a) for a in history],
        features.RECENT_QUERIES: queries_of(user, len(history)),
        features.EXAMPLE_AGE: age,
        features.VIEWED_AT: None,
        features.SPLIT: split,
    }


def good_rows() -> list[dict[str, Any]]:
    """Valid examples: 8 users, 3-9 views each; each user's last view is their eval example."""
    rows = []
    for u in range(8):
        user = f"u{u:02d}"
        views = [f"a{(u * 2 + k * 3) % 18:02d}" for k in range(3 + 2 * (u % 4))]
        if u == 7:
            views[-1] = UNSEEN_LABEL
        for t in range(1, len(views)):
            history = list(reversed(views[:t]))  # most recent first
            split = features.split_of(len(views) - 1 - t)
            if u == 6 and split == features.TEST_SPLIT:
                history = [UNSEEN_HISTORY, *history]
            rows.append(example(user, views[t], history, split, age=float(len(views) - t) + 0.25 * u))
    return rows


def bad_rows() -> list[tuple[str, dict[str, Any]]]:
    """(expected reason, row): one malformed record per kind of problem."""
    base = example("bad", "a01", ["a02", "a03"], features.TRAIN_SPLIT, 1.0)
    cases = [
        ("label is null", {features.LABEL: None}),
        ("history_category length differs from history", {features.history_attribute("category"): ["cat0"]}),
        ("split is not one of 'train', 'validation', 'test'", {features.SPLIT: "eval"}),
        ("example_age_days is not finite", {features.EXAMPLE_AGE: math.nan}),
        ("history has an empty string", {features.HISTORY: ["a02", ""]}),
        ("history is null", {features.HISTORY: None}),
    ]
    return [(reason, {**base, features.USER_ID: f"bad{i}", **change}) for i, (reason, change) in enumerate(cases)]


def write_extract_dir(path: Path, rows: list[dict[str, Any]], *, success: bool = True) -> Path:
    """Writes an EXTRACT_DIR-shaped directory (examples, corpus, _SUCCESS) holding `rows`."""
    path.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(rows, schema=EXAMPLES_SCHEMA)
    pq.write_table(table, path / extract_layout.TRAINING_EXAMPLES_FILE)
    articles = sorted({f"a{i:02d}" for i in range(18)} | {UNSEEN_LABEL, UNSEEN_HISTORY})
    corpus = pa.table(
        {
            "article_id": articles,
            "title": [f"title {a}" for a in articles],
            "category": [category(a) for a in articles],
            "region": [region(a) for a in articles],
            "created_at": pa.array([None] * len(articles), pa.timestamp("us", tz="UTC")),
            "view_count": pa.array([1] * len(articles), pa.int64()),
        }
    )
    pq.write_table(corpus, path / extract_layout.CORPUS_FILE)
    if success:
        (path / extract_layout.SUCCESS_MARKER).write_text("")
    return path


def expected_article_vocabulary(rows: list[dict[str, Any]], history_length: int) -> collections.Counter:
    """Counts of each article over train histories (first `history_length`) and train labels."""
    counts: collections.Counter = collections.Counter()
    for row in rows:
        if row[features.SPLIT] == features.TRAIN_SPLIT:
            counts.update(row[features.HISTORY][:history_length])
            counts[row[features.LABEL]] += 1
    return counts


@dataclass
class TransformRun:
    """The shared run of `candidates transform` on the hand-made EXTRACT_DIR."""

    examples_dir: Path
    output_dir: Path
    good: list[dict[str, Any]]
    bad: list[tuple[str, dict[str, Any]]]
    summary: dict[str, Any]
    printed: str


def transform_parser() -> argparse.ArgumentParser:
    """A `candidates`-like parser holding only the transform sub-command (no other stage needed)."""
    from components.transform import cli as transform_cli

    parser = argparse.ArgumentParser(prog="candidates")
    transform_cli.register(parser.add_subparsers(dest="command"))
    return parser
