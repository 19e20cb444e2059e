"""The held-out examples of an extract as evaluation reads them, and the views before them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from homefeed import features
from homefeed.layout import extract_dir as extract_layout

EXAMPLE_COLUMNS = (
    features.USER_ID,
    features.LABEL,
    features.HISTORY,
    *(features.history_attribute(a) for a in features.ARTICLE_ATTRIBUTES),
    features.RECENT_QUERIES,  # optional (searches): the model reads them as the service does
    features.EXAMPLE_AGE,
    features.VIEWED_AT,
    features.SPLIT,
)


def read_examples(examples_dir: Path) -> pa.Table:
    path = examples_dir / extract_layout.TRAINING_EXAMPLES_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: --examples must be a `candidates extract` output")
    schema = pq.read_schema(path)
    required = (features.USER_ID, features.LABEL, features.HISTORY, features.SPLIT)
    missing = [c for c in required if c not in schema.names]
    if missing:
        raise ValueError(f"{path} lacks column(s) {missing} (has {schema.names})")
    return pq.read_table(path, columns=[c for c in EXAMPLE_COLUMNS if c in schema.names])


def seen_pairs(train: pa.Table, eval_rows: pd.DataFrame) -> pd.DataFrame:
    """`(user_id, article_id)` of every view before each eval target.

    Every view but a user's first is the label of one training row, and the first is the oldest
    entry of the history of the row labelled with the second; so train labels, the last history
    entry of each train row and the eval rows' histories cover all earlier views without
    expanding every history.
    """
    history = train.column(features.HISTORY).combine_chunks()
    lengths = pc.fill_null(pc.list_value_length(history), 0).to_numpy(zero_copy_only=False)
    flat = pc.list_flatten(history).to_numpy(zero_copy_only=False)
    ends = np.cumsum(lengths)
    has = lengths > 0
    users = train.column(features.USER_ID).to_numpy(zero_copy_only=False)
    parts = [
        pd.DataFrame(
            {"user_id": users, features.ARTICLE_ID: train.column(features.LABEL).to_numpy(zero_copy_only=False)}
        ),
        pd.DataFrame({"user_id": users[has], features.ARTICLE_ID: flat[ends[has] - 1]}),
        eval_rows[["user_id", features.HISTORY]]
        .explode(features.HISTORY)
        .dropna()
        .rename(columns={features.HISTORY: features.ARTICLE_ID}),
    ]
    return pd.concat(parts, ignore_index=True).drop_duplicates()


def row_dicts(eval_rows: pd.DataFrame) -> list[dict[str, list[str]]]:
    keys = [
        features.HISTORY,
        *(features.history_attribute(a) for a in features.ARTICLE_ATTRIBUTES),
        features.RECENT_QUERIES,
    ]
    keys = [k for k in keys if k in eval_rows.columns]
    columns = {k: eval_rows[k].tolist() for k in keys}
    return [{k: list(columns[k][i]) if columns[k][i] is not None else [] for k in keys} for i in range(len(eval_rows))]


def views_before_test(table: pa.Table) -> pd.DataFrame:
    """`user_id, article_id, viewed_at` of every view before the test targets.

    Every non-test row's label is one (with its time); each user's first view has no row of its
    own and is the oldest history entry of their earliest row (its time is unknown: NaT).
    """
    is_test = pc.equal(table.column(features.SPLIT), features.TEST_SPLIT)
    before = table.filter(pc.invert(is_test))
    labels = pd.DataFrame(
        {
            "user_id": before.column(features.USER_ID).to_numpy(zero_copy_only=False),
            features.ARTICLE_ID: before.column(features.LABEL).to_numpy(zero_copy_only=False),
            "viewed_at": before.column(features.VIEWED_AT).to_pandas()
            if features.VIEWED_AT in before.column_names
            else pd.NaT,
        }
    )
    rows = table.select(
        [
            features.USER_ID,
            features.HISTORY,
            *([features.VIEWED_AT] if features.VIEWED_AT in table.column_names else []),
        ]
    ).to_pandas()
    if features.VIEWED_AT in rows.columns:
        rows = rows.sort_values([features.USER_ID, features.VIEWED_AT], kind="stable")
    first = rows.groupby(features.USER_ID, sort=False)[features.HISTORY].first()
    first = first[first.map(lambda h: h is not None and len(h) > 0)]
    firsts = pd.DataFrame({"user_id": first.index, features.ARTICLE_ID: [h[-1] for h in first], "viewed_at": pd.NaT})
    return pd.concat([labels, firsts], ignore_index=True)


def as_of(examples_dir: Path, views: pd.DataFrame) -> np.datetime64 | None:
    """The extract's as_of (extract_summary.json), else the latest view; None when neither is known."""
    summary = examples_dir / extract_layout.SUMMARY_FILE
    if summary.exists():
        value = json.loads(summary.read_text()).get("as_of")
        if value:
            return np.datetime64(pd.Timestamp(value).tz_convert("UTC").tz_localize(None), "ns")
    latest = pd.to_datetime(views["viewed_at"], utc=True).max()
    return None if pd.isna(latest) else np.datetime64(latest.tz_localize(None), "ns")


def split_protocol(examples_dir: Path) -> dict:
    """How the extract split its examples (extract_summary.json `split`, components/extract/extract.py
    `split_protocol`): `{"protocol": "time", "validation_from", "test_from", "test_to"}` or
    `{"protocol": "per-user"}`; an extract that does not say is per-user (the only split before)."""
    summary = examples_dir / extract_layout.SUMMARY_FILE
    split = json.loads(summary.read_text()).get("split") if summary.exists() else None
    return split or {"protocol": "per-user"}
