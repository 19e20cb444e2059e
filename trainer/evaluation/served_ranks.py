"""Target ranks of the model and of every baseline over the served corpus at each view's time.

trainer/evaluation/served_corpus.py says which listings are live at a test view's time t and what the
article tower makes of each at its age then; here each ranker scores exactly those (the same
rows, the same exclusions, the same tie rule), so the model and the baselines are compared on
the corpus the live service would have held:

  * model: the user vector (serving example age) against each live listing's vector at age
    `t - created_at`;
  * popularity: views per listing in the view log (all views before the test targets);
  * trending (W days): views in `(t - W, t]` (the window ends at the view, not at as_of), ties by
    all-time views;
  * item-kNN: as trainer/evaluation/baselines.py, over the live listings;
  * category/region popularity: as trainer/evaluation/baselines.py, its "last day" the day before t.

A view without a time (NaT) is ranked at as_of over the as_of corpus.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

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
    popularity = baselines_lib.popularity_scores(log)
    out = {"popularity": ranks_of(corpus, times, targets, exclude, lambda i, rows, t: popularity[rows])}
    if as_of is not None or not np.all(np.isnan(times)):
        trending = _Trending(log, popularity)
        for days in baselines_lib.TRENDING_WINDOWS_DAYS:
            out[baselines_lib.trending_name(days)] = ranks_of(
                corpus, times, targets, exclude, trending.score_of_window(days, as_of)
            )
    knn = baselines_lib.ItemKNN(log)
    out["item_knn"] = ranks_of(
        corpus, times, targets, exclude, lambda i, rows, t: knn.scores(histories[i])[rows], knn_users
    )
    out[baselines_lib.CATEGORY_REGION_POPULARITY] = ranks_of(
        corpus, times, targets, exclude, lambda i, rows, t: category_region.scores_among(users[i], rows, _at(t, as_of))
    )
    return out


class _Trending:
    """`baselines.trending_scores` at any time, from the views in the window only (time-sorted once)."""

    def __init__(self, log: baselines_lib.ViewLog, popularity: np.ndarray):
        order = np.argsort(log.viewed_at, kind="stable")  # NaT last: never in a window
        self.times, self.items = log.viewed_at[order], log.items[order]
        self.popularity, self.num_views = popularity, len(log.items)

    def score_of_window(self, days: int, as_of: np.datetime64 | None) -> Callable[[int, np.ndarray, float], np.ndarray]:
        """`served_corpus.ranks_over_time`'s score for the `days`-day window ending at each view."""
        return lambda i, rows, t: self.scores(_at(t, as_of), days, rows)

    def scores(self, at: np.datetime64 | None, days: int, rows: np.ndarray) -> np.ndarray:
        if at is None:  # no time at all: all-time views
            return self.popularity[rows]
        at = at.astype("datetime64[ns]")
        start, stop = np.searchsorted(self.times, [at - np.timedelta64(int(days * 86400e9), "ns"), at], side="right")
        window = np.bincount(self.items[start:stop], minlength=len(self.popularity)).astype(np.float64)
        return baselines_lib.trending_from_window(window[rows], self.popularity[rows], self.num_views)
