"""Generated EXTRACT_DIR data with planted structure for the trainer tests (never real data).

60 articles in 6 categories of 10 (`a000`..`a059`, category `c<i // 10>`, region `r<i % 2>`) plus
one corpus article nobody viewed (`NEW_ARTICLE`, category c0). Each user walks their home
category's cycle: after article `c*10 + j` they usually open `c*10 + (j+1) % 10`, with an
occasional detour to a random other article. So the next view is predictable from the most
recent one, while every article is about as popular as any other: a sequence-aware model must
beat popularity by a wide margin.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from components.extract.output import output_schema
from homefeed import features
from homefeed.layout import extract_dir as extract_layout

N_CATEGORIES = 6
PER_CATEGORY = 10
N_ARTICLES = N_CATEGORIES * PER_CATEGORY
NEW_ARTICLE = "a999"  # in the corpus, never viewed: gets an OOV-id + attribute vector
H = 10  # history length used by the tests' transform

# Titles carry the category's words (plus the article's own number), created_at goes back one
# hour per article from CREATED_BASE, so the article tower's content inputs have signal.
CATEGORY_WORDS = ("oak desk", "road bike", "baby stroller", "winter jacket", "lego set", "yoga mat")
CREATED_BASE = pd.Timestamp("2026-05-01T00:00:00Z")

# The extract stage's own output schema: test inputs look exactly like a real EXTRACT_DIR.
EXAMPLES_SCHEMA = output_schema("training_examples")


def article(i: int) -> str:
    return f"a{i:03d}"


def category(article_id: str) -> str:
    return "c0" if article_id == NEW_ARTICLE else f"c{int(article_id[1:]) // PER_CATEGORY}"


def region(article_id: str) -> str:
    return "r0" if article_id == NEW_ARTICLE else f"r{int(article_id[1:]) % 2}"


def title(article_id: str) -> str:
    return f"Brand new {CATEGORY_WORDS[int(category(article_id)[1:])].title()} no. {article_id[1:]}"


def created_at(article_id: str) -> pd.Timestamp:
    return CREATED_BASE - pd.Timedelta(hours=0 if article_id == NEW_ARTICLE else int(article_id[1:]))


def user_views(n_users: int, seed: int) -> dict[str, list[str]]:
    """Each user's views in time order (distinct articles, 6-10 of them)."""
    rng = np.random.default_rng(seed)
    views = {}
    for u in range(n_users):
        home = u % N_CATEGORIES
        position = int(rng.integers(PER_CATEGORY))
        sequence = [home * PER_CATEGORY + position]
        length = int(rng.integers(6, 11))
        while len(sequence) < length:
            if rng.random() < 0.15:
                candidate = int(rng.integers(N_ARTICLES))
            else:
                position = (position + 1) % PER_CATEGORY
                candidate = home * PER_CATEGORY + position
            if candidate not in sequence:
                sequence.append(candidate)
        views[f"u{u:04d}"] = [article(i) for i in sequence]
    return views


def example_rows(views: dict[str, list[str]], history_length: int = H) -> list[dict[str, Any]]:
    """Training examples per the EXTRACT_DIR contract: one per view after the first; last = test, the one before = validation."""
    rows = []
    for user, sequence in views.items():
        for t in range(1, len(sequence)):
            history = list(reversed(sequence[:t]))[:history_length]
            label = sequence[t]
            rows.append(
                {
                    features.USER_ID: user,
                    features.LABEL: label,
                    features.label_attribute("category"): category(label),
                    features.label_attribute("region"): region(label),
                    features.LABEL_TITLE: title(label),
                    # Viewed "now" (CREATED_BASE) and again later: ages spread over a few buckets.
                    features.LABEL_AGE: (CREATED_BASE - created_at(label)).total_seconds() / 86400 + 0.5 * t,
                    features.HISTORY: history,
                    features.history_attribute("category"): [category(a) for a in history],
                    features.history_attribute("region"): [region(a) for a in history],
                    features.EXAMPLE_AGE: float(len(sequence) - t),
                    features.VIEWED_AT: None,
                    features.SPLIT: features.split_of(len(sequence) - 1 - t),
                }
            )
    return rows


def corpus_frame() -> pd.DataFrame:
    ids = [article(i) for i in range(N_ARTICLES)] + [NEW_ARTICLE]
    return pd.DataFrame(
        {
            "article_id": ids,
            "title": [title(a) for a in ids],
            "category": [category(a) for a in ids],
            "region": [region(a) for a in ids],
            "created_at": pd.Series([created_at(a) for a in ids], dtype="datetime64[us, UTC]"),
            "view_count": np.ones(len(ids), dtype=np.int64),
        }
    )


def write_extract_dir(path: Path, n_users: int = 300, seed: int = 7) -> Path:
    """Writes `training_examples.parquet`, `articles.parquet` and `_SUCCESS` under `path`."""
    path.mkdir(parents=True, exist_ok=True)
    rows = example_rows(user_views(n_users, seed))
    pq.write_table(pa.Table.from_pylist(rows, schema=EXAMPLES_SCHEMA), path / extract_layout.TRAINING_EXAMPLES_FILE)
    corpus_frame().to_parquet(path / extract_layout.CORPUS_FILE, index=False)
    (path / extract_layout.SUCCESS_MARKER).write_text("")
    return path


# Small and quick, still well able to learn the planted sequences.
SMALL_TRAIN_CONFIG = dict(
    embedding_dim=16,
    attribute_embedding_dim=8,
    tower_units=(32,),
    output_dim=16,
    recent_items=2,
    dropout=0.0,
    temperature=0.1,
    learning_rate=0.01,
    batch_size=64,
    epochs=12,
    early_stopping_patience=4,
    eval_k=10,  # the corpus has 61 articles: recall@200 would be 1.0 from the first epoch
    popular_articles=20,
    seed=3,
    id_dropout=0.5,  # one model per fixture (test_id_dropout_choice.py trains the choice)
    id_dropout_choices=(),
)
