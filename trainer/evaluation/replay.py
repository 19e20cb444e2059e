"""One protocol for validation and test: each held-out view replayed as the live service saw it.

`replay_ranks` is the one function that ranks a split's views: the per-epoch validation of
training (trainer/training/validation_set.py: early stopping and the id-dropout choice) and
`candidates evaluate` (the test split) both call it, so a validation figure and a test figure
differ only by their views. For each view at time t:

  * the corpus is the one live at t (trainer/evaluation/served_corpus.py: `created_at <= t <
    removed_at`), each listing's vector made by the article tower at its age then;
  * the user vector is the user tower's over the example's history (the H views before t, whatever
    their split) and its recent queries (the searches before t), at the serving example age;
  * the excluded (seen) set is what the live service filters at t: the user's
    `features.SEEN_LENGTH` most recently viewed distinct articles among every view before t, of
    every split (`seen_before`). The service keeps exactly that bound (serving/live/events.py
    merges the snapshot's `seen` with the live views and cuts it at SEEN_LENGTH), so offline recall
    counts what the service would have answered. Searches add no article to it.

`rank_views` scores a batch of views against every listing at once (NumPy, bounded by
`metrics.MAX_SCORES_IN_MEMORY`): fast enough to run after every epoch.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from homefeed import features
from trainer.evaluation import held_out as examples_lib
from trainer.evaluation import metrics as metrics_lib
from trainer.evaluation import served_corpus as served_lib

LOG = logging.getLogger(__name__)

SEEN_DEFINITION = (
    f"the user's last {features.SEEN_LENGTH} distinct articles among every view before the view (every split), "
    "as the live service filters"
)


class Encoder(Protocol):
    """What `replay_ranks` needs of a model: `trainer.towers.serving_model.UserEncoder` (an exported
    model) or the training loop's in-memory twin (trainer/training/validation_set.py)."""

    def encode_batched(self, rows, batch_size: int = 1024, example_age_days=...) -> np.ndarray: ...

    def article_vectors(self, raw: Mapping[str, np.ndarray]) -> np.ndarray: ...


@dataclass
class HeldOutViews:
    """One split's views to replay, in user order.

    Attributes:
      rows: the split's example rows (held_out.EXAMPLE_COLUMNS) `[n]`.
      users: `[n]` user ids; targets: int64 `[n]` served-corpus rows (-1: not a listing the
      corpus knows); times_ms: float64 `[n]` view times (NaN: unknown, ranked at as_of);
      exclude: per view, the served-corpus rows of its seen set (`seen_before`), or None.
    """

    rows: pd.DataFrame
    users: list[str]
    targets: np.ndarray
    times_ms: np.ndarray
    exclude: list[np.ndarray] | None

    def __len__(self) -> int:
        return len(self.targets)


def held_out_views(
    table: pa.Table,
    split: str,
    served: served_lib.ServedCorpus,
    max_views: int | None = None,
    seed: int = 0,
    exclude_seen: bool = True,
) -> HeldOutViews:
    """The `split` rows of an extract's examples `table` (every split, as held_out.read_examples
    gives it), at most `max_views` of them (a seeded sample), with targets, times and seen sets."""
    rows = table.filter(pc.equal(table.column(features.SPLIT), split)).to_pandas()
    rows = rows.sort_values(features.USER_ID, kind="stable").reset_index(drop=True)
    if max_views is not None and len(rows) > max_views:
        keep = np.sort(np.random.default_rng(seed).choice(len(rows), max_views, replace=False))
        rows = rows.iloc[keep].reset_index(drop=True)
    targets = served.article_ids.get_indexer(rows[features.LABEL].astype(str))
    times = (
        served_lib.timestamps_ms(rows[features.VIEWED_AT])
        if served.timed and features.VIEWED_AT in rows
        else np.full(len(rows), np.nan)
    )
    exclude = seen_before(table, rows, served.article_ids) if exclude_seen else None
    return HeldOutViews(rows, rows[features.USER_ID].astype(str).tolist(), targets.astype(np.int64), times, exclude)


def user_sequences(table: pa.Table) -> pd.DataFrame:
    """Every view of every user in the service's order: `user_id, article_id, viewed_at, order`
    (`order`: 0-based position in the user's views, time order, ties by article id, as
    sql/training_examples.sql numbers them). Each example's label is one view; a user's first view
    has no example and is the oldest history entry of their earliest one (time unknown: NaT, first)."""
    timed = features.VIEWED_AT in table.column_names
    frame = pd.DataFrame(
        {
            "user_id": table.column(features.USER_ID).to_numpy(zero_copy_only=False).astype(str),
            features.ARTICLE_ID: table.column(features.LABEL).to_numpy(zero_copy_only=False).astype(str),
            "viewed_at": pd.to_datetime(table.column(features.VIEWED_AT).to_pandas(), utc=True) if timed else pd.NaT,
            "history": table.column(features.HISTORY).to_pandas(),
        }
    )
    earliest = frame.sort_values(["user_id", "viewed_at"], kind="stable").groupby("user_id", sort=False).first()
    earliest = earliest[earliest["history"].map(lambda h: h is not None and len(h) > 0)]
    firsts = pd.DataFrame(
        {
            "user_id": earliest.index.astype(str),
            features.ARTICLE_ID: [str(h[-1]) for h in earliest["history"]],
            "viewed_at": pd.Series(pd.NaT, index=range(len(earliest)), dtype="datetime64[ns, UTC]"),
        }
    )
    frame = pd.concat([firsts, frame.drop(columns="history")], ignore_index=True)
    frame["viewed_at"] = pd.to_datetime(frame["viewed_at"], utc=True)
    frame = frame.sort_values(
        ["user_id", "viewed_at", features.ARTICLE_ID], na_position="first", kind="stable"
    ).reset_index(drop=True)
    frame["order"] = frame.groupby("user_id", sort=False).cumcount()
    return frame


def seen_before(
    table: pa.Table, rows: pd.DataFrame, corpus_index: pd.Index, length: int = features.SEEN_LENGTH
) -> list[np.ndarray]:
    """Per row of `rows` (examples of `table`), the served-corpus rows of the user's seen set at
    the view: the `length` most recently viewed distinct articles among every view of the user
    before it (any split), as the live service holds it. Articles the corpus does not know count
    toward the bound but exclude nothing."""
    sequences = user_sequences(table)
    codes, uniques = pd.factorize(sequences[features.ARTICLE_ID])
    corpus_rows = corpus_index.get_indexer(uniques)
    starts = sequences.groupby("user_id", sort=False)["order"].idxmin()
    key = pd.MultiIndex.from_arrays([sequences["user_id"], sequences["viewed_at"], sequences[features.ARTICLE_ID]])
    position = pd.Series(np.arange(len(sequences)), index=key)
    position = position[~position.index.duplicated(keep="last")]
    times = (
        pd.to_datetime(rows[features.VIEWED_AT], utc=True)
        if features.VIEWED_AT in rows
        else pd.Series(pd.NaT, index=rows.index)
    )
    wanted = pd.MultiIndex.from_arrays([rows[features.USER_ID].astype(str), times, rows[features.LABEL].astype(str)])
    at = position.reindex(wanted).to_numpy()
    empty = np.zeros(0, np.int64)
    out = []
    for user, end in zip(rows[features.USER_ID].astype(str), at):
        if np.isnan(end) or user not in starts.index:
            out.append(empty)
            continue
        before = codes[int(starts[user]) : int(end)][::-1]
        distinct = pd.unique(before)[:length]
        served = corpus_rows[distinct]
        out.append(np.unique(served[served >= 0]).astype(np.int64))
    return out


def rank_views(
    served: served_lib.ServedCorpus,
    vectors: served_lib.ServedVectors | np.ndarray,
    user_vectors: np.ndarray,
    times_ms: np.ndarray,
    targets: np.ndarray,
    exclude: Sequence[np.ndarray] | None,
) -> np.ndarray:
    """int64 `[n]` 0-based ranks of each view's target among the listings live at its time, the
    excluded rows left out, ties by corpus row (metrics' tie rule); `metrics.MISSED` when the target
    is unknown, not live at the view, or excluded. The same ranks as
    `served_corpus.ranks_over_time`, a batch of views scored against every listing at once.

    Args:
      vectors: a `ServedVectors` (each listing at its age at each view), or float32
        `[num_exported, d]` vectors of the as_of corpus (its first rows; no ages).
      user_vectors: float32 `[n, d]`; times_ms: float64 `[n]` (NaN: the as_of corpus).
    """
    n_views = len(targets)
    ranks = np.full(n_views, metrics_lib.MISSED, np.int64)
    fixed, timed = (vectors, None) if isinstance(vectors, np.ndarray) else (None, vectors)
    n = min(len(served), len(fixed)) if fixed is not None else len(served)
    chosen = np.flatnonzero((targets >= 0) & (targets < n))
    if not len(chosen) or not n:
        return ranks
    columns = np.arange(n)
    multi = (
        np.zeros(0, np.int64)
        if timed is None
        else np.flatnonzero(np.diff(np.append(timed.offsets, len(timed.vectors)))[:n] != 1)
    )
    batch = max(1, min(len(chosen), metrics_lib.MAX_SCORES_IN_MEMORY // (16 * n)))
    users = np.ascontiguousarray(user_vectors, np.float32)
    for start in range(0, len(chosen), batch):
        views = chosen[start : start + batch]
        t = times_ms[views].astype(np.float64)
        if timed is None:
            scores = users[views] @ np.asarray(fixed)[:n].T
        else:
            pair_scores = users[views] @ timed.vectors.T
            # Only listings whose age bucket changes within the views' times need one per view.
            index = np.broadcast_to(timed.offsets[None, :n], (len(views), n)).copy()
            if multi.size:
                at = np.where(np.isnan(t), timed.as_of_ms, t)[:, None]
                created = served.created_ms[None, multi]
                age = np.where(
                    np.isnan(created), features.UNKNOWN_AGE, np.maximum(0.0, (at - created) / served_lib.MS_PER_DAY)
                )
                index[:, multi] += served_lib.age_buckets(age) - timed.low[None, multi]
            np.clip(index, 0, max(pair_scores.shape[1] - 1, 0), out=index)
            scores = np.take_along_axis(pair_scores, index, axis=1)
        if served.timed:
            tt = t[:, None]
            live = (served.live_from_ms[None, :n] <= tt) & (tt < served.live_to_ms[None, :n])
            untimed = np.isnan(t)
            if untimed.any():
                live[untimed] = columns < served.num_exported
        else:
            live = np.ones(scores.shape, bool)
        rows = np.arange(len(views))
        target = targets[views]
        mine = scores[rows, target][:, None]
        above = live & ((scores > mine) | ((scores == mine) & (columns[None, :] < target[:, None])))
        rankable = live[rows, target]
        if exclude is not None:
            for j, view in enumerate(views):
                excluded = exclude[view]
                excluded = excluded[(excluded >= 0) & (excluded < n)]
                if len(excluded):
                    rankable[j] &= not np.any(excluded == target[j])
                    above[j, excluded] = False
        ranks[views] = np.where(rankable, above.sum(axis=1), metrics_lib.MISSED)
    return ranks


def replay_ranks(
    encoder: Encoder,
    views: HeldOutViews,
    served: served_lib.ServedCorpus,
    as_of_ms: float,
    batch_size: int = 1024,
    example_age_days: float | np.ndarray = features.SERVING_EXAMPLE_AGE,
    fixed_vectors: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """`(ranks int64 [n], user vectors float32 [n, d])` of `views` under `encoder`'s model: the one
    ranking of validation and test (module docstring).

    Args:
      as_of_ms: the time a view without a time stands for (the export's `now`).
      example_age_days: the example age fed to the user tower (serving: `SERVING_EXAMPLE_AGE`).
      fixed_vectors: the as_of corpus's vectors, used instead of embedding each listing at each
        view's age (a model that cannot embed new listings).
    """
    rows = examples_lib.row_dicts(views.rows)
    user_vectors = encoder.encode_batched(rows, batch_size, example_age_days=example_age_days)
    vectors: served_lib.ServedVectors | np.ndarray = (
        fixed_vectors
        if fixed_vectors is not None
        else served_lib.ServedVectors(served, views.times_ms, encoder.article_vectors, float(as_of_ms))
    )
    ranks = rank_views(served, vectors, user_vectors, views.times_ms, views.targets, views.exclude)
    return ranks, user_vectors
