"""The served corpus at time t: what the live service could answer at the moment of a held-out view.

The service is live (docs/live.md): a listing posted after the pipeline's as_of is PUT to it and
embedded by the article tower at once, a sold one disappears, and every listing's vector is made
at its age then (`now - created_at`, re-embedded when its age bucket changes). So a test view at
time t is ranked here over the listings live at t, each with its vector at age `t - created_at`,
not over the as_of snapshot with as_of ages (which holds none of the listings sold before as_of,
however alive they were at the view). This module is the one owner of that definition; the
evaluation (trainer/evaluation/evaluate.py), its cold-start figure and every baseline rank over it.

Which listings are live at t comes from the extract's `listings.parquet` (sql/listings.sql): every
listing up to as_of with its `created_at` and `removed_at` (the articles table's removal time; a
listing marked sold or deleted without one was gone by as_of at the latest). The corpus at t is
exactly the listings with `created_at <= t < removed_at`; one without `created_at` is live from its
first view at or before t. Nothing is derived from views after t: a listing removed before t is
not a candidate, however often it is viewed later (such a view is a miss for every ranker).

An extract made before `listings.parquet` existed knows no removal times: the corpus at t is then
the as_of corpus created by t, and listings removed before as_of are no candidates (logged).
Without view times (an extract without `viewed_at`) the served corpus is the as_of snapshot.
A listing's `t - created_at` enters the tower only through its log bucket
(features.age_bucket), so each (listing, bucket) pair is embedded once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from homefeed import features
from trainer.evaluation import metrics as metrics_lib
from trainer.towers import article_inputs

LOG = logging.getLogger(__name__)

DEFINITION = (
    "each view ranked over the listings live at its time (created_at <= t < removed_at, from the extract's "
    "listings; no created_at: from the first view at or before t), vectors at that age"
)
DEFINITION_WITHOUT_LISTINGS = (
    "each view ranked over the as_of corpus created by its time (the extract has no listings.parquet: "
    "listings removed before as_of are no candidates), vectors at that age"
)
MS_PER_DAY = 86_400_000.0


def age_buckets(age_days: np.ndarray) -> np.ndarray:
    """`features.age_bucket` vectorised (the same float64 operations): float `[n]` -> int64 `[n]`."""
    days = np.asarray(age_days, np.float64)
    known = days >= 0.0
    hours = np.where(known, days, 0.0) * 24.0
    bucket = 1 + np.floor(np.log(1.0 + hours) / np.log(2.0)).astype(np.int64)
    return np.where(known, np.minimum(bucket, features.AGE_BUCKETS - 1), 0)


def bucket_age_days(bucket: np.ndarray) -> np.ndarray:
    """An age in days inside each log bucket (its middle; -1, unknown, for bucket 0)."""
    bucket = np.asarray(bucket, np.int64)
    hours = 1.5 * np.exp2(np.maximum(bucket, 1) - 1.0) - 1.0
    return np.where(bucket > 0, hours / 24.0, features.UNKNOWN_AGE)


def timestamps_ms(values) -> np.ndarray:
    """float64 ms since the epoch, NaN when unknown."""
    stamps = pd.to_datetime(pd.Series(values), utc=True)
    out = stamps.map(lambda t: t.value / 1e6 if pd.notna(t) else np.nan)
    return out.to_numpy(np.float64)


@dataclass
class ServedCorpus:
    """Every listing the service may have held while the test views happened (see module docstring).

    Rows `0 .. num_exported - 1` are the model's corpus (`article_ids.txt` order), the rest the
    extract's other listings (removed before as_of), by id. Attributes:
      article_ids: pd.Index `[n]`; frame: `article_id, title, <attributes>, created_at` `[n]`;
      created_ms, live_from_ms, live_to_ms: float64 `[n]` (NaN / -inf / +inf when unknown or open);
        live at t: live_from_ms <= t < live_to_ms (live_to_ms: the removal time);
      timed: False when the views have no times (everything is always live: the as_of snapshot).
    """

    article_ids: pd.Index
    frame: pd.DataFrame
    created_ms: np.ndarray
    live_from_ms: np.ndarray
    live_to_ms: np.ndarray
    num_exported: int
    timed: bool

    @classmethod
    def snapshot(cls, article_ids: Sequence[str], articles: pd.DataFrame) -> ServedCorpus:
        """The as_of corpus, always live (the definition without view times)."""
        return cls.build(article_ids, articles, pa.table({features.LABEL: pa.array([], pa.string())}))

    @classmethod
    def build(
        cls,
        article_ids: Sequence[str],
        articles: pd.DataFrame,
        examples: pa.Table,
        listings: pd.DataFrame | None = None,
    ) -> ServedCorpus:
        """From the model's corpus (`article_ids`, its `articles.parquet` frame, possibly empty),
        the extract's examples (every split: each row's label is a view; only the first view of a
        listing without `created_at` is used) and its `listings` frame (features.LISTINGS_COLUMNS;
        None: an extract without one, see the module docstring)."""
        attrs = list(features.ARTICLE_ATTRIBUTES)
        exported = pd.DataFrame({features.ARTICLE_ID: pd.Index(article_ids).astype(str)})
        if len(articles):
            exported = exported.merge(
                articles.drop_duplicates(features.ARTICLE_ID).assign(
                    **{features.ARTICLE_ID: articles[features.ARTICLE_ID].astype(str)}
                ),
                how="left",
                on=features.ARTICLE_ID,
            )
        timed = features.VIEWED_AT in examples.column_names and examples.column(features.VIEWED_AT).null_count < len(
            examples
        )
        n = len(exported)
        if not timed:
            return cls(
                pd.Index(exported[features.ARTICLE_ID]),
                exported,
                timestamps_ms(exported.get(features.CREATED_AT, [None] * n)),
                np.full(n, -np.inf),
                np.full(n, np.inf),
                n,
                False,
            )
        if listings is None:
            LOG.warning("no listings with removal times: %s", DEFINITION_WITHOUT_LISTINGS)
            listings = pd.DataFrame({features.ARTICLE_ID: pd.Series([], dtype=str)})
        listings = listings.assign(**{features.ARTICLE_ID: listings[features.ARTICLE_ID].astype(str)})
        listings = listings.drop_duplicates(features.ARTICLE_ID).set_index(features.ARTICLE_ID)
        extra_ids = listings.index[~listings.index.isin(exported[features.ARTICLE_ID])].sort_values()
        extra = listings.loc[extra_ids].reset_index()
        columns = [features.ARTICLE_ID, features.TITLE, *attrs, features.CREATED_AT]
        frame = pd.concat(
            [exported, extra[[c for c in columns if c in extra.columns]]],
            ignore_index=True,
        )
        ids = pd.Index(frame[features.ARTICLE_ID].astype(str))
        created = (
            timestamps_ms(frame[features.CREATED_AT]) if features.CREATED_AT in frame else np.full(len(ids), np.nan)
        )
        removed = np.full(len(ids), np.nan)
        if features.REMOVED_AT in listings.columns:
            removed = timestamps_ms(listings[features.REMOVED_AT].reindex(ids))
        labels = examples.column(features.LABEL).to_pandas().astype(str)
        first = (
            pd.Series(timestamps_ms(examples.column(features.VIEWED_AT).to_pandas()), index=labels.to_numpy())
            .groupby(level=0)
            .min()
            .reindex(ids)
            .to_numpy(np.float64)
        )
        live_from = np.where(np.isnan(created), first, created)
        live_from[np.isnan(live_from)] = -np.inf  # neither created_at nor a view: always there
        live_to = np.where(np.isnan(removed), np.inf, removed)
        return cls(ids, frame, created, live_from, live_to, n, True)

    def __len__(self) -> int:
        return len(self.article_ids)

    def live_rows(self, t_ms: float) -> np.ndarray:
        """Sorted rows live at `t_ms` (NaN: the as_of snapshot, the exported rows)."""
        if not self.timed:
            return np.arange(len(self))
        if np.isnan(t_ms):
            return np.arange(self.num_exported)
        return np.flatnonzero((self.live_from_ms <= t_ms) & (t_ms < self.live_to_ms))

    def buckets_at(self, rows: np.ndarray, t_ms: float | np.ndarray) -> np.ndarray:
        """Age bucket of `rows` at `t_ms` (one time, or one per row; bucket 0 where created_at is
        unknown)."""
        created = self.created_ms[rows]
        age = np.where(np.isnan(created), features.UNKNOWN_AGE, np.maximum(0.0, (t_ms - created) / MS_PER_DAY))
        return age_buckets(age)


class ServedVectors:
    """The article tower's vector of every (listing, age bucket) the given times need.

    Args:
      corpus: the served corpus; times_ms: the view times to be ranked (NaN: as_of).
      embed: raw article features (article_inputs.raw_article_features) -> float32 `[n, d]`,
        e.g. `UserEncoder.article_vectors`, the live service's path.
      as_of_ms: the time a NaN view time stands for (the export's `now`).
    """

    def __init__(
        self,
        corpus: ServedCorpus,
        times_ms: np.ndarray,
        embed: Callable[[Mapping[str, np.ndarray]], np.ndarray],
        as_of_ms: float,
    ):
        self.corpus, self.as_of_ms = corpus, as_of_ms
        times = np.where(np.isnan(times_ms), as_of_ms, times_ms) if len(times_ms) else np.array([as_of_ms])
        lo = np.maximum(corpus.live_from_ms, times.min())
        hi = np.minimum(corpus.live_to_ms, times.max())
        rows = np.arange(len(corpus))
        self.low = np.where(lo <= hi, corpus.buckets_at(rows, lo), 0)
        high = np.where(lo <= hi, corpus.buckets_at(rows, hi), -1)
        counts = np.maximum(high - self.low + 1, 0)
        self.offsets = np.concatenate([[0], np.cumsum(counts)])[:-1]
        pair_rows = np.repeat(rows, counts)
        pair_buckets = self.low[pair_rows] + (np.arange(counts.sum()) - np.repeat(self.offsets, counts))
        frame = corpus.frame.iloc[pair_rows]
        raw = article_inputs.raw_article_features(
            frame[features.ARTICLE_ID].astype(str).tolist(),
            {a: frame[a].tolist() for a in features.ARTICLE_ATTRIBUTES if a in frame.columns},
            frame[features.TITLE].tolist() if features.TITLE in frame.columns else [None] * len(frame),
            [None] * len(frame),
            0.0,
        )
        raw[features.LABEL_AGE] = bucket_age_days(pair_buckets).astype(np.float32)
        if not np.array_equal(age_buckets(raw[features.LABEL_AGE]), pair_buckets):  # float32 rounding would show here
            raise RuntimeError("served corpus: a bucket's representative age fell outside its bucket")
        LOG.info(
            "embedding %d (listing, age bucket) pairs of %d listings for the served corpus", len(pair_rows), len(corpus)
        )
        self.vectors = embed(raw) if len(pair_rows) else np.zeros((0, 1), np.float32)

    def at(self, rows: np.ndarray, t_ms: float) -> np.ndarray:
        """float32 `[len(rows), d]`: the vectors of live `rows` at `t_ms`."""
        t = self.as_of_ms if np.isnan(t_ms) else t_ms
        return self.vectors[self.offsets[rows] + self.corpus.buckets_at(rows, t) - self.low[rows]]


def read_views(path) -> pa.Table:
    """The label and time of every view in an extract's `training_examples.parquet` (what
    `ServedCorpus.build` reads of it)."""
    import pyarrow.parquet as pq

    names = pq.read_schema(path).names
    return pq.read_table(path, columns=[c for c in (features.LABEL, features.VIEWED_AT) if c in names])


def read_listings(path) -> pd.DataFrame | None:
    """An extract's `listings.parquet` (features.LISTINGS_COLUMNS), None when the extract has none."""
    from pathlib import Path

    path = Path(path)
    return pd.read_parquet(path) if path.exists() else None


def rank_among(scores: np.ndarray, rows: np.ndarray, target: int, excluded: np.ndarray | None) -> int:
    """0-based rank of corpus row `target` among `rows` (sorted) scored `scores`, the `excluded`
    rows left out; ties by corpus row (metrics' tie rule). `metrics.MISSED` when the target is not
    among `rows` or is excluded."""
    position = np.searchsorted(rows, target)
    if target < 0 or position >= len(rows) or rows[position] != target:
        return metrics_lib.MISSED
    if excluded is not None and len(excluded) and np.any(excluded == target):
        return metrics_lib.MISSED
    mine = scores[position]
    beats = (scores > mine) | ((scores == mine) & (rows < target))
    if excluded is not None and len(excluded):
        beats &= ~np.isin(rows, excluded)
    return int(beats.sum())


def ranks_over_time(
    corpus: ServedCorpus,
    times_ms: np.ndarray,
    targets: np.ndarray,
    exclude: Sequence[np.ndarray] | None,
    score: Callable[[int, np.ndarray, float], np.ndarray],
    users: np.ndarray | None = None,
) -> np.ndarray:
    """int64 `[len(users)]` ranks of each chosen row's target over the corpus live at its time.

    Args:
      times_ms: float `[n]` view times (NaN: as_of). targets: int `[n]` corpus rows (-1: unknown).
      exclude: per row, corpus rows the user has seen. score: `(row i, live rows, t_ms) -> float
        [len(live rows)]`. users: which rows to rank (default all).
    """
    chosen = np.arange(len(targets)) if users is None else np.asarray(users, np.int64)
    out = np.full(len(chosen), metrics_lib.MISSED, np.int64)
    for j, i in enumerate(chosen):
        if targets[i] < 0:
            continue
        rows = corpus.live_rows(float(times_ms[i]))
        out[j] = rank_among(
            score(int(i), rows, float(times_ms[i])), rows, int(targets[i]), None if exclude is None else exclude[i]
        )
    return out
