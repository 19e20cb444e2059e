"""Target ranks of the model and of every baseline over the served corpus at each view's time.

trainer/evaluation/served_corpus.py says which listings are live at a test view's time t and what the
article tower makes of each at its age then; here each ranker scores exactly those (the same
rows, the same exclusions, the same tie rule), so the model and the baselines are compared on
the corpus the live service would have held:

  * model: the user vector (serving example age) against each live listing's vector at age
    `t - created_at`;
  * popularity: views per listing in the view log up to t, as a live counter holds them at the
    view (a view after t is never counted, whoever made it);
  * trending (W days): views in `(t - W, t]` (the window ends at the view, not at as_of), ties by
    views up to t;
  * item-kNN: as trainer/evaluation/baselines.py, over the live listings, from the (user, listing)
    pairs first viewed at or before t;
  * category/region popularity: as trainer/evaluation/baselines.py, its "last day" the day before t.

A view without a time (NaT) is ranked at as_of over the as_of corpus.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from homefeed import features
from trainer.evaluation import baselines as baselines_lib
from trainer.evaluation import served_corpus as served_lib


def _at(t_ms: float, as_of: np.datetime64 | None) -> np.datetime64 | None:
    return as_of if np.isnan(t_ms) else np.datetime64(int(t_ms * 1e6), "ns")


def model_ranks(
    corpus: served_lib.ServedCorpus,
    vectors: served_lib.ServedVectors | np.ndarray,
    user_vectors: np.ndarray,
    times: np.ndarray,
    targets: np.ndarray,
    exclude: Sequence[np.ndarray] | None,
) -> np.ndarray:
    """The model's ranks; `vectors` a `ServedVectors`, or the exported `[num_exported, d]` vectors
    when the corpus is the as_of snapshot (no view times, or a model that cannot embed)."""
    if isinstance(vectors, np.ndarray):
        return served_lib.ranks_over_time(
            corpus, times, targets, exclude, lambda i, rows, t: vectors[rows] @ user_vectors[i]
        )
    return served_lib.ranks_over_time(
        corpus, times, targets, exclude, lambda i, rows, t: vectors.at(rows, t) @ user_vectors[i]
    )


def baseline_ranks(
    corpus: served_lib.ServedCorpus,
    log: baselines_lib.ViewLog,
    as_of: np.datetime64 | None,
    times: np.ndarray,
    users: np.ndarray,
    histories: Sequence[np.ndarray],
    targets: np.ndarray,
    exclude: Sequence[np.ndarray] | None,
    knn_users: np.ndarray | None,
    category_region: baselines_lib.CategoryRegionPopularity,
) -> dict[str, np.ndarray]:
    """`{"popularity", "trending_<W>d" (with as_of or view times), "item_knn" (its ranks for
    `knn_users` only, as baselines.baseline_ranks), "category_region"}` ranks.

    Args:
      log: the views before the test targets, over `corpus` rows; users: each test row's user
        index in the log; histories: each test row's earlier views (item-kNN's input).
    """
    ranks_of = served_lib.ranks_over_time
    counts = ViewCounts(log)
    out = {
        "popularity": ranks_of(corpus, times, targets, exclude, lambda i, rows, t: counts.up_to(_at(t, as_of), rows))
    }
    if as_of is not None or not np.all(np.isnan(times)):
        for days in baselines_lib.TRENDING_WINDOWS_DAYS:
            out[baselines_lib.trending_name(days)] = ranks_of(
                corpus,
                times,
                targets,
                exclude,
                _trending_at(counts, days, as_of),
            )
    knn = baselines_lib.ItemKNN(log)
    out["item_knn"] = ranks_of(
        corpus, times, targets, exclude, lambda i, rows, t: knn.scores(histories[i], _at(t, as_of))[rows], knn_users
    )
    out[baselines_lib.CATEGORY_REGION_POPULARITY] = ranks_of(
        corpus, times, targets, exclude, lambda i, rows, t: category_region.scores_among(users[i], rows, _at(t, as_of))
    )
    return out


def _trending_at(
    counts: ViewCounts, days: int, as_of: np.datetime64 | None
) -> Callable[[int, np.ndarray, float], np.ndarray]:
    """`served_corpus.ranks_over_time`'s score: trending over the `days` before each view's time."""
    return lambda i, rows, t: counts.trending(_at(t, as_of), days, rows)


class ViewCounts:
    """Views per listing up to any time t, as a live counter holds them at t: popularity and
    trending at a view's time, never counting a later view. Views without a time count as old
    ones (always). O(len(rows) log n) per call: the log is sorted once by (listing, time)."""

    def __init__(self, log: baselines_lib.ViewLog):
        timed = ~np.isnat(log.viewed_at)
        self.untimed = np.bincount(log.items[~timed], minlength=log.num_items).astype(np.float64)
        self.num_views = len(log.items)
        self.unique_times, rank = np.unique(log.viewed_at[timed], return_inverse=True)
        self.stride = np.int64(len(self.unique_times) + 1)
        self.keys = np.sort(log.items[timed].astype(np.int64) * self.stride + rank.reshape(-1).astype(np.int64))

    def up_to(self, at: np.datetime64 | None, rows: np.ndarray) -> np.ndarray:
        """float64 `[len(rows)]`: each listing's views at or before `at` (None: all of them)."""
        rows = np.asarray(rows, np.int64)
        first = np.searchsorted(self.keys, rows * self.stride, side="left")
        if at is None:
            stop = np.searchsorted(self.keys, (rows + 1) * self.stride, side="left")
        else:
            rank = np.searchsorted(self.unique_times, at.astype("datetime64[ns]"), side="right")
            stop = np.searchsorted(self.keys, rows * self.stride + rank, side="left")
        return (stop - first).astype(np.float64) + self.untimed[rows]

    def trending(self, at: np.datetime64 | None, days: int, rows: np.ndarray) -> np.ndarray:
        """`baselines.trending_from_window` at `at`: views in `(at - days, at]`, ties by views up to
        `at` (None: all-time views alone)."""
        upto = self.up_to(at, rows)
        if at is None:
            return upto
        at = at.astype("datetime64[ns]")
        before = self.up_to(at - np.timedelta64(int(days * 86400e9), "ns"), rows)
        return baselines_lib.trending_from_window(upto - before, upto, self.num_views)


def baseline_log(
    views: pd.DataFrame, test_users: Sequence[str], corpus_index: pd.Index
) -> tuple[baselines_lib.ViewLog, pd.Index, list[np.ndarray]]:
    """What the baselines count: `views` (the views before the test window, `held_out.views_before_test`)
    as a `ViewLog` over the corpus; the user index (those users, then the test users); and each test
    user's distinct viewed corpus rows, item-kNN's input, in `test_users` order."""
    user_index = pd.Index(pd.unique(pd.concat([views["user_id"], pd.Series(test_users)]).astype(str)))
    log = baselines_lib.ViewLog.from_ids(
        views["user_id"], views[features.ARTICLE_ID], views["viewed_at"], corpus_index, user_index
    )
    per_user = pd.Series(log.items).groupby(log.users).apply(lambda s: np.unique(s.to_numpy()))
    empty = np.zeros(0, np.int64)
    return log, user_index, [per_user.get(i, empty) for i in user_index.get_indexer(test_users)]


def category_region(served: served_lib.ServedCorpus, log, as_of) -> baselines_lib.CategoryRegionPopularity:
    """The category/region popularity baseline (trainer/evaluation/baselines.py) over the served corpus."""
    frame = served.frame

    def column(name: str) -> list:
        return (
            frame[name].fillna(features.MISSING_ATTRIBUTE).astype(str).tolist()
            if name in frame
            else [features.MISSING_ATTRIBUTE] * len(frame)
        )

    return baselines_lib.CategoryRegionPopularity(log, column("category"), column("region"), served.created_ms, as_of)
