"""The raw inputs of the `article_vectors` signature, made the one way for every caller.

The pipeline's export (corpus vectors, trainer/training/export.py), training's per-epoch validation
(trainer/training/data.py `transform_corpus`) and the live service (serving/live/model.py, new and
re-embedded listings) all call `raw_article_features`, so a listing gets the same vector from
each for the same `now`:

  * `label`: the article id; `label_<attr>`: its attributes, missing ones
    `features.MISSING_ATTRIBUTE` (as the extract writes them);
  * `label_title`: the title, `homefeed.tokens.normalise`d ("" when it has none);
  * `label_age_days`: `now - created_at` in days (features.age_days; UNKNOWN_AGE without
    created_at), the serving counterpart of training's `viewed_at - created_at`.

Standard library, numpy and pandas only (no TensorFlow).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from homefeed import features, tokens


def timestamp_ms(value: Any) -> float | None:
    """Milliseconds since the epoch of a timestamp (datetime, pandas Timestamp, RFC 3339 string,
    numpy datetime64); None for a missing one. Naive values are taken as UTC."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    stamp = pd.Timestamp(value)
    if pd.isna(stamp):
        return None
    if stamp.tzinfo is None:
        stamp = stamp.tz_localize("UTC")
    return stamp.value / 1e6


def now_ms() -> float:
    return datetime.now(UTC).timestamp() * 1000.0


def raw_article_features(
    article_ids: Sequence[str],
    attributes: Mapping[str, Sequence[Any]],
    titles: Sequence[Any],
    created_at: Sequence[Any],
    now: float,
) -> dict[str, np.ndarray]:
    """`features.ARTICLE_FEATURES` as arrays `[n]` (strings as object, the age float32).

    Args:
      article_ids: the ids. attributes: attr -> values (None/NaN: missing); attributes not given
        are missing. titles: raw titles (None: none). created_at: timestamps (see `timestamp_ms`).
      now: the serving time, ms since the epoch.
    """
    n = len(article_ids)
    raw: dict[str, np.ndarray] = {features.LABEL: np.asarray([str(a) for a in article_ids], dtype=object)}
    for attr in features.ARTICLE_ATTRIBUTES:
        values = attributes.get(attr)
        raw[features.label_attribute(attr)] = np.asarray(
            [
                features.MISSING_ATTRIBUTE if _missing(v) else str(v)
                for v in (values if values is not None else [None] * n)
            ],
            dtype=object,
        )
    raw[features.LABEL_TITLE] = np.asarray(
        ["" if _missing(t) else tokens.normalise(str(t)) for t in titles], dtype=object
    )
    raw[features.LABEL_AGE] = np.asarray([features.age_days(timestamp_ms(c), now) for c in created_at], np.float32)
    return raw


def corpus_article_features(corpus: pd.DataFrame, now: float) -> dict[str, np.ndarray]:
    """`raw_article_features` of every row of a corpus frame (features.CORPUS_COLUMNS; missing
    columns are missing values)."""
    n = len(corpus)

    def column(name: str) -> Sequence[Any]:
        return corpus[name].tolist() if name in corpus.columns else [None] * n

    return raw_article_features(
        corpus[features.ARTICLE_ID].astype(str).tolist(),
        {a: column(a) for a in features.ARTICLE_ATTRIBUTES if a in corpus.columns},
        column(features.TITLE),
        column(features.CREATED_AT),
        now,
    )


def corpus_now_ms(corpus: pd.DataFrame, as_of: Any = None) -> float:
    """The `now` a pipeline export measures corpus ages at: the data's as_of when known, else the
    newest created_at, else the wall clock."""
    given = timestamp_ms(as_of)
    if given is not None:
        return given
    if features.CREATED_AT in corpus.columns and corpus[features.CREATED_AT].notna().any():
        newest = timestamp_ms(pd.to_datetime(corpus[features.CREATED_AT], utc=True).max())
        if newest is not None:
            return newest
    return now_ms()


def call_article_signature(signature: Any, raw: Mapping[str, np.ndarray], batch_size: int = 8192) -> np.ndarray:
    """`float32 [n, d]`: the SavedModel's `article_vectors` signature over `raw` (see
    `raw_article_features`), `batch_size` rows at a time. Inputs the signature does not take (a
    model exported before the content inputs existed) are left out."""
    import tensorflow as tf

    from homefeed.layout.model_dir import ARTICLE_OUTPUT

    accepted = set(signature.structured_input_signature[1])
    n = len(raw[features.LABEL])
    parts = []
    for start in range(0, n, batch_size):
        batch = {
            key: tf.constant(values[start : start + batch_size], tf.float32 if key == features.LABEL_AGE else tf.string)
            for key, values in raw.items()
            if key in accepted
        }
        parts.append(signature(**batch)[ARTICLE_OUTPUT].numpy())
    return np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, 0), np.float32)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA or value is pd.NaT
