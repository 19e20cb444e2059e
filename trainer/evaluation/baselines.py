"""Non-learned baselines for the evaluation: global popularity, trending, item-to-item co-occurrence.

Every baseline ranks the model's corpus for the same test users, with the same exclusions and the
same tie rule as the model (trainer/evaluation/metrics.py: ties by corpus position, i.e. by article id), and
sees the same data: the views before the test targets, as `ViewLog` rows.

  * popularity: how often each article was viewed (the view log), most first;
  * trending (window W days): views in `(as_of - W, as_of]`, most first; ties by all-time
    popularity, then corpus position;
  * item-kNN: item-to-item cosine similarity of the user-article view matrix (co-occurrence counts
    over `sqrt(n_i * n_j)`, an article's similarity with itself left out), a user's score for
    article j the sum of its similarities to every article in the user's history (all their
    earlier views). Computed per user over the users who
    share an article with them, without forming the item-item matrix, so it scales with the views
    touched rather than with the corpus squared.

numpy and pandas only.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from trainer.evaluation import metrics as metrics_lib

LOG = logging.getLogger(__name__)

TRENDING_WINDOWS_DAYS: tuple[int, ...] = (1, 7)


def trending_name(days: int) -> str:
    """Key of the trending baseline over the last `days` days (`trending_1d`)."""
    return f"trending_{days}d"


@dataclass
class ViewLog:
    """Views as corpus indices (views of articles outside the corpus are dropped by `from_ids`).

    Attributes:
      users: int `[n_views]` user index; items: int `[n_views]` corpus index;
      viewed_at: `datetime64[ns]` `[n_views]` (UTC, NaT when unknown: counted only by popularity).
      num_items: corpus size.
    """

    users: np.ndarray
    items: np.ndarray
    viewed_at: np.ndarray
    num_items: int

    @classmethod
    def from_ids(
        cls,
        user_ids: Sequence[str],
        article_ids: Sequence[str],
        viewed_at: Sequence | None,
        corpus: pd.Index,
        user_index: pd.Index,
    ) -> ViewLog:
        """Maps raw ids through `corpus` (article id -> row) and `user_index` (user id -> row)."""
        items = corpus.get_indexer(pd.Index(article_ids).astype(str))
        users = user_index.get_indexer(pd.Index(user_ids).astype(str))
        times = (
            pd.to_datetime(pd.Series(viewed_at), utc=True).dt.tz_localize(None).to_numpy("datetime64[ns]")
            if viewed_at is not None
            else np.full(len(items), np.datetime64("NaT"), "datetime64[ns]")
        )
        keep = (items >= 0) & (users >= 0)
        return cls(users[keep].astype(np.int64), items[keep].astype(np.int64), times[keep], len(corpus))


def popularity_scores(log: ViewLog) -> np.ndarray:
    """float64 `[num_items]`: views per article."""
    return np.bincount(log.items, minlength=log.num_items).astype(np.float64)


def trending_scores(log: ViewLog, as_of: np.datetime64, days: float) -> np.ndarray:
    """float64 `[num_items]`: views in `(as_of - days, as_of]`, ties broken by all-time views.

    Encoded as one score, `window_views * (total_views + 1) + all_time_views`, exact in float64
    for any realistic count.
    """
    as_of = as_of.astype("datetime64[ns]")
    start = as_of - np.timedelta64(int(days * 86400e9), "ns")
    recent = (log.viewed_at > start) & (log.viewed_at <= as_of)
    window = np.bincount(log.items[recent], minlength=log.num_items).astype(np.float64)
    return trending_from_window(window, popularity_scores(log), len(log.items))


def trending_from_window(window: np.ndarray, all_time: np.ndarray, num_views: int) -> np.ndarray:
    """The trending score of `window` views (ties by `all_time` views) out of `num_views` in all:
    `window * (num_views + 1) + all_time`, so any window lead beats any all-time lead."""
    return window * (num_views + 1) + all_time


def shared_score_ranks(scores: np.ndarray, targets: np.ndarray, exclude: Sequence[np.ndarray] | None) -> np.ndarray:
    """`metrics.target_ranks` for one score vector shared by every user, in O(n log n + seen).

    Args:
      scores: float `[n_articles]`; targets, exclude: as in `metrics.target_ranks`.
    """
    order = np.lexsort((np.arange(len(scores)), -scores))  # score desc, then corpus position
    position = np.empty(len(scores), np.int64)
    position[order] = np.arange(len(scores))
    ranks = np.full(len(targets), metrics_lib.MISSED, np.int64)
    for i, target in enumerate(targets):
        if target < 0:
            continue
        excluded = np.unique(np.asarray(exclude[i] if exclude is not None else [], np.int64))
        if np.any(excluded == target):
            continue
        ranks[i] = position[target] - int((position[excluded] < position[target]).sum())
    return ranks


class ItemKNN:
    """Item-to-item cosine co-occurrence scores over a `ViewLog` (see module docstring)."""

    def __init__(self, log: ViewLog):
        # A view matrix is binary: one (user, item) pair, dated by its first view (views without a
        # time date it as the oldest, so they count at every time).
        oldest = np.datetime64(np.iinfo(np.int64).min + 1, "ns")
        times = np.where(np.isnat(log.viewed_at), oldest, log.viewed_at).astype("datetime64[ns]")
        pairs = (
            pd.DataFrame({"u": log.users, "i": log.items, "t": times})
            .groupby(["u", "i"], sort=False, as_index=False)["t"]
            .min()
        )
        self.num_items = log.num_items
        counts = np.bincount(pairs["i"].to_numpy(), minlength=log.num_items).astype(np.float64)
        self.inv_sqrt = np.where(counts > 0, 1.0 / np.sqrt(np.maximum(counts, 1.0)), 0.0)
        by_item = pairs.sort_values(["i", "u"], kind="stable")
        by_user = pairs.sort_values(["u", "i"], kind="stable")
        self._item_users = by_item["u"].to_numpy()
        self._item_times = by_item["t"].to_numpy("datetime64[ns]")
        self._item_ptr = np.concatenate([[0], np.cumsum(counts.astype(np.int64))])
        self.num_users = int(log.users.max()) + 1 if len(log.users) else 0
        user_counts = np.bincount(by_user["u"].to_numpy(), minlength=self.num_users)
        self._user_items = by_user["i"].to_numpy()
        self._user_times = by_user["t"].to_numpy("datetime64[ns]")
        self._user_ptr = np.concatenate([[0], np.cumsum(user_counts)])
        self._pair_items = by_item["i"].to_numpy()

    def scores(self, history: np.ndarray, at: np.datetime64 | None = None) -> np.ndarray:
        """float64 `[num_items]` for a user whose history is `history` (corpus indices, unique),
        from the pairs first viewed at or before `at` (None: every pair): what a live co-occurrence
        counter held at `at`, never a later view."""
        history = np.unique(np.asarray(history, np.int64))
        if not len(history) or not self.num_users:
            return np.zeros(self.num_items)
        inv_sqrt = self.inv_sqrt
        if at is not None:
            at = at.astype("datetime64[ns]")
            counts = np.bincount(self._pair_items[self._item_times <= at], minlength=self.num_items)
            inv_sqrt = np.where(counts > 0, 1.0 / np.sqrt(np.maximum(counts, 1)), 0.0)
        starts, stops = self._item_ptr[history], self._item_ptr[history + 1]
        lengths = stops - starts
        index = np.repeat(starts - np.cumsum(np.concatenate([[0], lengths[:-1]])), lengths) + np.arange(lengths.sum())
        shared = np.repeat(inv_sqrt[history], lengths)
        if at is not None:
            shared = np.where(self._item_times[index] <= at, shared, 0.0)
        # weight of each other user: sum over shared history items of 1/sqrt(n_h)
        weights = np.bincount(self._item_users[index], weights=shared, minlength=self.num_users)
        users = np.flatnonzero(weights)
        u_starts, u_stops = self._user_ptr[users], self._user_ptr[users + 1]
        u_lengths = u_stops - u_starts
        u_index = np.repeat(u_starts - np.cumsum(np.concatenate([[0], u_lengths[:-1]])), u_lengths) + np.arange(
            u_lengths.sum()
        )
        spread = np.repeat(weights[users], u_lengths)
        if at is not None:
            spread = np.where(self._user_times[u_index] <= at, spread, 0.0)
        totals = np.bincount(self._user_items[u_index], weights=spread, minlength=self.num_items)
        scores = totals * inv_sqrt
        scores[history] -= np.where(inv_sqrt[history] > 0, 1.0, 0.0)  # an article's cosine with itself
        return scores

    def ranks(
        self, histories: Sequence[np.ndarray], targets: np.ndarray, exclude: Sequence[np.ndarray] | None
    ) -> np.ndarray:
        """`metrics.target_ranks` of `scores(histories[u])` for every user, in bounded memory."""
        batch = max(1, metrics_lib.MAX_SCORES_IN_MEMORY // max(self.num_items, 1) // 2)
        parts = []
        for start in range(0, len(targets), batch):
            stop = min(start + batch, len(targets))
            block = np.stack([self.scores(histories[u]) for u in range(start, stop)])  # stop > start
            parts.append(
                metrics_lib.target_ranks(block, targets[start:stop], None if exclude is None else exclude[start:stop])
            )
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def baseline_ranks(
    log: ViewLog,
    as_of: np.datetime64 | None,
    histories: Sequence[np.ndarray],
    targets: np.ndarray,
    exclude: Sequence[np.ndarray] | None,
    knn_users: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Target ranks of every baseline: `popularity`, `trending_<W>d` (only with `as_of`), `item_knn`.

    Args:
      log: the views before the test targets (every user's, not only the test users').
      as_of: the extract's cut-off (the trending windows end there); None: no trending baseline.
      histories: per test user, the corpus indices of their earlier views (item-kNN's input).
      targets, exclude: as in `metrics.target_ranks`.
      knn_users: positions of the test users item-kNN ranks (None: all); its ranks are only for them.
    """
    ranks = {"popularity": shared_score_ranks(popularity_scores(log), targets, exclude)}
    if as_of is not None:
        for days in TRENDING_WINDOWS_DAYS:
            ranks[trending_name(days)] = shared_score_ranks(trending_scores(log, as_of, days), targets, exclude)
    chosen = np.arange(len(targets)) if knn_users is None else np.asarray(knn_users, np.int64)
    ranks["item_knn"] = ItemKNN(log).ranks(
        [histories[i] for i in chosen], targets[chosen], None if exclude is None else [exclude[i] for i in chosen]
    )
    return ranks


CATEGORY_REGION_POPULARITY = "category_region"  # key of the category/region popularity baseline


class CategoryRegionPopularity:
    """The user's favourite category and region cells, newest listings first: the non-learned
    answer for new listings (they have no views of their own).

    A user's score for article j orders by, in turn: the user's earlier views in j's (category,
    region) cell, the cell's views in the last day before as_of (all users), then j's
    `created_at` (newer first; unknown oldest), then corpus position (metrics' tie rule).

    Args:
      log: the views before the test targets (as `ViewLog`).
      categories, regions: per corpus row, its values (missing ones a value of their own).
      created_at_ms: float `[num_items]`, NaN when unknown.
      as_of: the extract's cut-off; None: the cell's all-time views instead of the last day's.
    """

    def __init__(
        self,
        log: ViewLog,
        categories: Sequence[str],
        regions: Sequence[str],
        created_at_ms: np.ndarray,
        as_of: np.datetime64 | None,
    ):
        cells = pd.MultiIndex.from_arrays([pd.Index(categories).astype(str), pd.Index(regions).astype(str)])
        self.cell, _ = pd.factorize(cells)
        self.num_cells = int(self.cell.max()) + 1 if len(self.cell) else 0
        recent = np.ones(len(log.items), bool)
        if as_of is not None:
            as_of = as_of.astype("datetime64[ns]")
            recent = (log.viewed_at > as_of - np.timedelta64(86_400 * 10**9, "ns")) & (log.viewed_at <= as_of)
        cell_views = np.bincount(self.cell[log.items[recent]], minlength=self.num_cells).astype(np.float64)
        created = np.nan_to_num(np.asarray(created_at_ms, np.float64), nan=-np.inf)
        self.created = created
        order = np.argsort(log.viewed_at, kind="stable")  # for the day before any time (scores_among)
        self._view_times, self._view_cells = log.viewed_at[order], self.cell[log.items[order]]
        # One float per article for the last two keys: rank of (cell views, created_at) ascending.
        order = np.lexsort((created, cell_views[self.cell]))
        self.secondary = np.empty(len(order), np.float64)
        self.secondary[order] = np.arange(len(order))
        self.log = log
        self._user_cells: dict[int, np.ndarray] = {}
        by_user = pd.DataFrame({"u": log.users, "c": self.cell[log.items]}).groupby("u")["c"]
        for user, values in by_user:
            self._user_cells[int(user)] = np.bincount(values.to_numpy(), minlength=self.num_cells)

    def scores(self, user: int) -> np.ndarray:
        """float64 `[num_items]` for user index `user` (see class docstring)."""
        counts = self._user_cells.get(int(user), np.zeros(self.num_cells))
        return counts[self.cell] * (len(self.secondary) + 1.0) + self.secondary

    def scores_among(self, user: int, rows: np.ndarray, at: np.datetime64 | None) -> np.ndarray:
        """float64 `[len(rows)]`: `scores(user)` of corpus `rows` only, ordered among themselves,
        the cell's views counted in the day before `at` (None: all of them) instead of as_of."""
        counts = self._user_cells.get(int(user), np.zeros(self.num_cells))
        if at is None:
            window = self._view_cells
        else:
            at = at.astype("datetime64[ns]")
            start, stop = np.searchsorted(
                self._view_times, [at - np.timedelta64(86_400 * 10**9, "ns"), at], side="right"
            )
            window = self._view_cells[start:stop]
        cell_views = np.bincount(window, minlength=self.num_cells).astype(np.float64)
        cells = self.cell[rows]
        secondary = np.empty(len(rows), np.float64)
        secondary[np.lexsort((self.created[rows], cell_views[cells]))] = np.arange(len(rows))
        return counts[cells] * (len(rows) + 1.0) + secondary

    def ranks(self, users: Sequence[int], targets: np.ndarray, exclude: Sequence[np.ndarray] | None) -> np.ndarray:
        """`metrics.target_ranks` of every user's scores, in bounded memory."""
        batch = max(1, metrics_lib.MAX_SCORES_IN_MEMORY // max(len(self.secondary), 1) // 2)
        parts = []
        for start in range(0, len(targets), batch):
            stop = min(start + batch, len(targets))
            block = np.stack([self.scores(users[i]) for i in range(start, stop)])
            parts.append(
                metrics_lib.target_ranks(block, targets[start:stop], None if exclude is None else exclude[start:stop])
            )
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)
