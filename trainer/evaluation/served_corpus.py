"""The served corpus at time t: what the live service could answer at the moment of a held-out view.

The service is live (docs/live.md): a listing posted after the pipeline's as_of is PUT to it and
embedded by the article tower at once, a sold one disappears, and every listing's vector is made
at its age then (`now - created_at`, re-embedded when its age bucket changes). So a test view at
time t is ranked here over the listings live at t, each with its vector at age `t - created_at`,
not over the as_of snapshot with as_of ages (which holds none of the listings sold before as_of,
however alive they were at the view). This module is the one owner of that definition; the
evaluation (trainer/evaluation/evaluate.py), its cold-start figure and every baseline rank over it.

What the extract tells about a listing (it holds no sold-at time):

  * the as_of corpus (the model directory's `articles.parquet` / `article_ids.txt`): active at
    as_of, so live from its `created_at` (or its first view, if earlier) on;
  * every other listing a view's label names (attributes, title and `created_at = viewed_at -
    label_age_days` from the example row): sold or deleted by as_of, live from its `created_at`
    (or first view) to its LAST VIEW, the latest moment it is known to have been up. This is a
    lower bound of the live corpus (a sold listing's last hours after its last view, and listings
    sold without ever being viewed, are not known to exist); every ranker sees the same corpus.

Without view times (an extract without `viewed_at`) the served corpus is the as_of snapshot, as
before. A listing's `t - created_at` enters the tower only through its log bucket
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
    "each test view ranked over the listings live at its time (the as_of corpus created by then, "
    "and listings sold before as_of between their created_at and their last view), vectors at that age"
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
    listings known only from views, by id. Attributes:
      article_ids: pd.Index `[n]`; frame: `article_id, title, <attributes>, created_at` `[n]`;
      created_ms, live_from_ms, live_to_ms: float64 `[n]` (NaN / -inf / +inf when unknown or open);
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
    def build(cls, article_ids: Sequence[str], articles: pd.DataFrame, examples: pa.Table) -> ServedCorpus:
        """From the model's corpus (`article_ids`, its `articles.parquet` frame, possibly empty)
        and the extract's examples (every split: each row's label is a view)."""
        attrs = [a for a in features.ARTICLE_ATTRIBUTES]
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
        if not timed:
            n = len(exported)
            return cls(
                pd.Index(exported[features.ARTICLE_ID]),
                exported,
                timestamps_ms(exported.get(features.CREATED_AT, [None] * n)),
                np.full(n, -np.inf),
                np.full(n, np.inf),
                n,
                False,
            )
        names = [
            features.LABEL,
            features.VIEWED_AT,
            *(
                c
                for c in (*(features.label_attribute(a) for a in attrs), features.LABEL_TITLE, features.LABEL_AGE)
                if c in examples.column_names
            ),
        ]
        views = examples.select(names).to_pandas()
        views[features.LABEL] = views[features.LABEL].astype(str)
        views["_t"] = timestamps_ms(views[features.VIEWED_AT])
        span = views.groupby(features.LABEL)["_t"].agg(["min", "max"])
        # The latest view's row describes a listing known only from views.
        latest = (
            views.sort_values("_t", kind="stable")
            .drop_duplicates(features.LABEL, keep="last")
            .set_index(features.LABEL)
        )
        extra_ids = latest.index[~latest.index.isin(exported[features.ARTICLE_ID])].sort_values()
        rows = latest.loc[extra_ids]
        extra = pd.DataFrame({features.ARTICLE_ID: extra_ids.astype(str)})
        for a in attrs:
            column = features.label_attribute(a)
            extra[a] = rows[column].to_numpy() if column in rows else None
        extra[features.TITLE] = rows[features.LABEL_TITLE].to_numpy() if features.LABEL_TITLE in rows else None
        extra_created = np.full(len(rows), np.nan)
        if features.LABEL_AGE in rows:
            age = rows[features.LABEL_AGE].to_numpy(np.float64)
            extra_created = np.where(age >= 0, rows["_t"].to_numpy() - age * MS_PER_DAY, np.nan)
        frame = pd.concat(
            [exported, extra.assign(**{features.CREATED_AT: pd.to_datetime(extra_created, unit="ms", utc=True)})],
            ignore_index=True,
        )
        ids = pd.Index(frame[features.ARTICLE_ID].astype(str))
        created = np.concatenate(
            [
                timestamps_ms(exported[features.CREATED_AT])
                if features.CREATED_AT in exported
                else np.full(len(exported), np.nan),
                extra_created,
            ]
        )
        first = span["min"].reindex(ids).to_numpy(np.float64)
        last = span["max"].reindex(ids).to_numpy(np.float64)
        live_from = np.fmin(np.nan_to_num(created, nan=np.inf), np.nan_to_num(first, nan=np.inf))
        live_from[np.isinf(live_from)] = -np.inf  # neither created_at nor a view time: always there
        live_to = np.concatenate([np.full(len(exported), np.inf), last[len(exported) :]])
        return cls(ids, frame, created, live_from, live_to, len(exported), True)

    def __len__(self) -> int:
        return len(self.article_ids)

    def live_rows(self, t_ms: float) -> np.ndarray:
        """Sorted rows live at `t_ms` (NaN: the as_of snapshot, the exported rows)."""
        if not self.timed:
            return np.arange(len(self))
        if np.isnan(t_ms):
            return np.arange(self.num_exported)
        return np.flatnonzero((self.live_from_ms <= t_ms) & (self.live_to_ms >= t_ms))

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
    """The columns of an extract's `training_examples.parquet` that `ServedCorpus.build` reads
    (those present): every view's label, time, attributes, title and age."""
    import pyarrow.parquet as pq

    wanted = [
        features.LABEL,
        features.VIEWED_AT,
        *(features.label_attribute(a) for a in features.ARTICLE_ATTRIBUTES),
        features.LABEL_TITLE,
        features.LABEL_AGE,
    ]
    names = pq.read_schema(path).names
    return pq.read_table(path, columns=[c for c in wanted if c in names])


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
