"""Re-embedding listings whose age bucket changed: article vectors include the listing's age.

A model's corpus vectors were made with ages at its as_of (manifest `article_ages_at_ms`), a live
listing's when it was upserted. Ages are log-bucketed (homefeed.features.age_bucket: one bucket
per doubling of hours), so a listing's vector goes stale when it crosses into the next bucket: often
in its first hours, rarely later. `AgeRefresh.run` finds the listings (model corpus and live ones,
those with a `created_at`) whose bucket now differs from the one their vector was made with,
re-embeds them in one article-tower call and applies them to the served overlay (the model's row is
hidden, the fresh vector served beside it, as for an upsert). The service's live sync loop calls
it through `LiveCorpus.sync` at most every `interval_s`, for models cut at most
`MAX_MODEL_AGE_MS` before the wall clock; `stats` says what it cost.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from homefeed import features
from serving.live.articles import ACTIVE, ArticleRecord

LOG = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 60.0
# The job runs for models whose data was cut at most this long ago (a daily pipeline's); an older
# model (historical or demo data) keeps its export's vectors: wall-clock ages would be far outside
# what it was trained on.
MAX_MODEL_AGE_MS = 2 * 86_400_000


def _ms(value: Any) -> float | None:
    from trainer.towers.article_inputs import timestamp_ms

    try:
        return timestamp_ms(value)
    except (ValueError, TypeError):
        return None


@dataclass
class _ModelAges:
    """One served model's corpus: what a re-embedded row's record is made of, and each row's bucket."""

    records: dict[str, ArticleRecord]
    created_ms: dict[str, float]
    bucket: dict[str, int]


def _model_ages(pair) -> _ModelAges | None:
    """The corpus rows with a created_at of a model whose article tower reads the age; None otherwise."""
    import json

    import pyarrow.parquet as pq

    from homefeed.layout.model_dir import ARTICLES_FILE, MANIFEST_FILE

    try:
        manifest = json.loads((pair.model_dir / MANIFEST_FILE).read_text())
    except (OSError, ValueError):
        return None
    ages_at = manifest.get("article_ages_at_ms")
    path = pair.model_dir / ARTICLES_FILE
    if not manifest.get("uses_article_content") or ages_at is None or not path.exists():
        return None
    names = pq.read_schema(path).names
    if features.CREATED_AT not in names:
        return _ModelAges({}, {}, {})
    wanted = [c for c in features.CORPUS_ARTICLE_COLUMNS if c in names]
    table = pq.read_table(path, columns=wanted).to_pydict()
    records, created, bucket = {}, {}, {}
    for i, article_id in enumerate(table[features.ARTICLE_ID]):
        stamp = _ms(table[features.CREATED_AT][i])
        if stamp is None:
            continue
        values = {c: table[c][i] for c in wanted if c not in (features.ARTICLE_ID,)}
        attributes: dict[str, Any] = {a: values.get(a) for a in features.ARTICLE_ATTRIBUTES}  # str or None each
        records[article_id] = ArticleRecord(
            article_id,
            title=values.get(features.TITLE),
            **attributes,
            created_at=table[features.CREATED_AT][i].isoformat()
            if hasattr(table[features.CREATED_AT][i], "isoformat")
            else None,
        )
        created[article_id] = stamp
        bucket[article_id] = features.age_bucket(features.age_days(stamp, float(ages_at)))
    return _ModelAges(records, created, bucket)


@dataclass
class AgeRefresh:
    """The periodic re-embedding job of one process (see module docstring)."""

    interval_s: float = DEFAULT_INTERVAL_S
    stats: dict[str, float] = field(default_factory=lambda: {"runs": 0, "reembedded": 0, "seconds": 0.0})
    _pair: Any = None
    _model: _ModelAges | None = None
    _live_bucket: dict[str, int] = field(default_factory=dict)
    _last_run: float = float("-inf")

    def due(self) -> bool:
        return time.monotonic() - self._last_run >= self.interval_s

    def stale(self, pair, live: dict[str, ArticleRecord], now_ms: float) -> list[ArticleRecord]:
        """The listings whose age bucket at `now_ms` differs from their vector's (see module doc)."""
        if pair is not self._pair:
            self._pair, self._model, self._live_bucket = pair, _model_ages(pair), {}
        if self._model is None:
            return []
        out = []
        for article_id, record in live.items():
            stamp = _ms(record.created_at) if record.active else None
            if stamp is None:
                continue
            # A live listing's vector was made when it was upserted (at most a sync interval later).
            made = self._live_bucket.setdefault(
                article_id, features.age_bucket(features.age_days(stamp, record.updated_ms))
            )
            if features.age_bucket(features.age_days(stamp, now_ms)) != made:
                out.append(record)
        for article_id, bucket in self._model.bucket.items():
            if article_id in live:
                continue  # the live record is the listing's state now
            if features.age_bucket(features.age_days(self._model.created_ms[article_id], now_ms)) != bucket:
                out.append(self._model.records[article_id])
        return out

    def mark(self, records: list[ArticleRecord], now_ms: float) -> None:
        """Records that `records` were re-embedded with their ages at `now_ms`."""
        for record in records:
            bucket = features.age_bucket(features.age_days(_ms(record.created_at), now_ms))
            if (
                self._model is not None
                and record.article_id in self._model.bucket
                and record.article_id not in self._live_bucket
            ):
                self._model.bucket[record.article_id] = bucket
            else:
                self._live_bucket[record.article_id] = bucket

    def finished(self, count: int, seconds: float) -> None:
        self._last_run = time.monotonic()
        self.stats["runs"] += 1
        self.stats["reembedded"] += count
        self.stats["seconds"] += seconds
        if count:
            LOG.info("re-embedded %d listing(s) whose age bucket changed in %.1f ms", count, seconds * 1000)


def active_with_created_at(records: dict[str, ArticleRecord]) -> dict[str, ArticleRecord]:
    return {a: r for a, r in records.items() if r.status == ACTIVE and r.created_at}


def as_vectors(records: list[ArticleRecord], vectors: np.ndarray) -> dict:
    return {(r.article_id, r.attributes()): v for r, v in zip(records, vectors)}
