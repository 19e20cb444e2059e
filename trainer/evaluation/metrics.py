"""Ranking metrics for next-view prediction: exact target ranks, Recall@K, NDCG@K (numpy only).

A user's ranking is the corpus sorted by score, highest first, with the user's already-viewed
articles removed; ties are broken by corpus position (lower index first), which is what a stable
exact top-K search returns. Recall@K is the share of users whose target is in their top K (a
target outside the corpus, or excluded, counts as a miss); NDCG@K with a single relevant item is
`1 / log2(rank + 2)` when rank < K, else 0.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

LOG = logging.getLogger(__name__)

MISSED = np.iinfo(np.int64).max  # rank of a target that cannot be ranked (not in the corpus, excluded)
# Scores held at once by `batched_ranks` (float32: 256 MiB), whatever the corpus size.
MAX_SCORES_IN_MEMORY = 1 << 26


def target_ranks(scores: np.ndarray, targets: np.ndarray, exclude: Sequence[np.ndarray] | None = None) -> np.ndarray:
    """0-based rank of each user's target among the non-excluded corpus articles.

    Args:
      scores: float `[n_users, n_articles]`, higher is better.
      targets: int `[n_users]`, the target's corpus index, or -1 when it is not in the corpus.
      exclude: per user, int corpus indices to remove from the ranking (already viewed); None: none.

    Returns:
      int64 `[n_users]`; `MISSED` for targets that are -1 or excluded.

    Raises:
      ValueError: `scores` and `targets` (or `exclude`) disagree on the number of users.
    """
    scores = np.asarray(scores)
    targets = np.asarray(targets, dtype=np.int64)
    if scores.ndim != 2 or targets.shape != (scores.shape[0],):
        raise ValueError(
            f"scores must be [n_users, n_articles] and targets [n_users], got {scores.shape} and {targets.shape}"
        )
    if exclude is not None and len(exclude) != len(targets):
        raise ValueError(f"exclude has {len(exclude)} entries for {len(targets)} users")
    n_users, n_articles = scores.shape
    ranks = np.full(n_users, MISSED, dtype=np.int64)
    valid = targets >= 0
    if not valid.any():
        return ranks
    rows = np.flatnonzero(valid)
    target_scores = scores[rows, targets[rows]]
    columns = np.arange(n_articles)
    better = (scores[rows] > target_scores[:, None]) | (
        (scores[rows] == target_scores[:, None]) & (columns[None, :] < targets[rows, None])
    )
    counts = better.sum(axis=1).astype(np.int64)
    if exclude is not None:
        for j, row in enumerate(rows.tolist()):
            excluded = np.unique(np.asarray(exclude[row], dtype=np.int64))
            excluded = excluded[(excluded >= 0) & (excluded < n_articles)]
            if np.any(excluded == targets[row]):
                counts[j] = MISSED
                continue
            counts[j] -= int(better[j, excluded].sum())
    ranks[rows] = counts
    return ranks


def recall_at_k(ranks: np.ndarray, k: int) -> float:
    """Share of users whose target rank is below `k` (0.0 for no users)."""
    ranks = np.asarray(ranks)
    return float(np.mean(ranks < k)) if ranks.size else 0.0


def ndcg_at_k(ranks: np.ndarray, k: int) -> float:
    """Mean NDCG@k with one relevant item per user: `1/log2(rank+2)` if rank < k, else 0."""
    ranks = np.asarray(ranks)
    if not ranks.size:
        return 0.0
    hit = ranks < k
    gains = np.zeros(ranks.shape, dtype=np.float64)
    gains[hit] = 1.0 / np.log2(ranks[hit].astype(np.float64) + 2.0)
    return float(gains.mean())


def ranking_metrics(ranks: np.ndarray, ks: Sequence[int], ndcg_k: int) -> dict[str, float]:
    """`{"recall@K": ..., "ndcg@N": ...}` for every K in `ks` and `ndcg_k`."""
    values = {f"recall@{k}": recall_at_k(ranks, k) for k in ks}
    values[f"ndcg@{ndcg_k}"] = ndcg_at_k(ranks, ndcg_k)
    return values


def batched_ranks(
    user_vectors: np.ndarray,
    article_vectors: np.ndarray,
    targets: np.ndarray,
    exclude: Sequence[np.ndarray] | None = None,
    batch_size: int = 1024,
) -> np.ndarray:
    """`target_ranks` of exact dot-product scores, `batch_size` users at a time (bounded memory).

    The batch shrinks for large corpora so that at most `MAX_SCORES_IN_MEMORY` scores exist at once.

    Args:
      user_vectors: float32 `[n_users, d]`; article_vectors: float32 `[n_articles, d]`.
      targets, exclude: as in `target_ranks`.
    """
    if user_vectors.ndim != 2 or article_vectors.ndim != 2 or user_vectors.shape[1] != article_vectors.shape[1]:
        raise ValueError(
            f"user vectors {user_vectors.shape} and article vectors {article_vectors.shape} must be [n, d] with the same d"
        )
    batch_size = max(1, min(batch_size, MAX_SCORES_IN_MEMORY // max(len(article_vectors), 1)))
    parts = []
    for start in range(0, len(user_vectors), batch_size):
        stop = start + batch_size
        scores = user_vectors[start:stop] @ article_vectors.T
        parts.append(target_ranks(scores, targets[start:stop], None if exclude is None else exclude[start:stop]))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


# ---------------------------------------------------------------------------------------------
# Intervals: a bootstrap over users (a user's views move together, since they are not independent).
# ---------------------------------------------------------------------------------------------
BOOTSTRAP_REPLICATES = 1000
BOOTSTRAP_LEVEL = 0.95
# Users' weights held at once (int64: 64 MiB), whatever the number of users.
_MAX_WEIGHTS_IN_MEMORY = 1 << 23


def bootstrap_means(
    values: np.ndarray, users: np.ndarray | None = None, replicates: int = BOOTSTRAP_REPLICATES, seed: int = 0
) -> np.ndarray:
    """Each column's mean over views, recomputed on `replicates` resamples of the users.

    Every replicate draws as many users as there are, with replacement, and keeps all the views of
    each drawn user (as often as drawn). The same draws serve every column, so columns (e.g. two
    rankers on the same views) can be compared replicate by replicate: a paired interval.

    Args:
      values: float `[n_views, m]`. users: `[n_views]` user ids (any type; None: one user per view).
    Returns:
      float64 `[replicates, m]` (NaN where a replicate drew no views, impossible unless n_views == 0).
    Raises:
      ValueError: `users` does not have one entry per view.
    """
    values = np.asarray(values, np.float64)
    if values.ndim != 2:
        raise ValueError(f"values must be [n_views, m], got {values.shape}")
    if users is None:
        codes = np.arange(len(values))
    else:
        users = np.asarray(users)
        if users.shape != (len(values),):
            raise ValueError(f"users must be [n_views] = [{len(values)}], got {users.shape}")
        codes = np.unique(users, return_inverse=True)[1].reshape(-1)
    n_users = int(codes.max()) + 1 if len(codes) else 0
    if n_users == 0:
        return np.full((replicates, values.shape[1]), np.nan)
    sums = np.zeros((n_users, values.shape[1]))
    np.add.at(sums, codes, values)
    counts = np.bincount(codes, minlength=n_users).astype(np.float64)
    rng = np.random.default_rng(seed)
    chunk = max(1, min(replicates, _MAX_WEIGHTS_IN_MEMORY // n_users))
    out = np.empty((replicates, values.shape[1]))
    for start in range(0, replicates, chunk):
        size = min(chunk, replicates - start)
        drawn = rng.integers(n_users, size=(size, n_users)) + (np.arange(size) * n_users)[:, None]
        weights = np.bincount(drawn.reshape(-1), minlength=size * n_users).reshape(size, n_users).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[start : start + size] = (weights @ sums) / (weights @ counts)[:, None]
    return out


def percentile_interval(replicates: np.ndarray, level: float = BOOTSTRAP_LEVEL) -> list[float]:
    """`[low, high]`: the central `level` of the replicates (NaN ones left out)."""
    finite = np.asarray(replicates, np.float64)
    finite = finite[np.isfinite(finite)]
    if not finite.size:
        return [float("nan"), float("nan")]
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(finite, [tail, 100.0 - tail])
    return [float(low), float(high)]


def recall_intervals(
    ranks: dict[str, np.ndarray],
    ks: Sequence[int],
    users: np.ndarray | None = None,
    pairs: Sequence[tuple[str, str]] = (),
    replicates: int = BOOTSTRAP_REPLICATES,
    seed: int = 0,
    level: float = BOOTSTRAP_LEVEL,
) -> dict:
    """Bootstrap intervals (users resampled) of every ranker's recall@K and of ratios between rankers.

    Args:
      ranks: ranker name -> int `[n_views]` target ranks, all over the same views.
      users: `[n_views]` the user of each view (None: one user per view).
      pairs: `(a, b)` names whose ratio recall_a / recall_b gets a paired interval (the same
        resampled users for both, so what they share cancels).
    Returns:
      `{"level", "replicates", "resampled": "users", "users", "recall": {name: {"recall@K": [lo, hi]}},
      "ratio": {"a/b": {"recall@K": {"ratio", "interval": [lo, hi]}}}}`.
    Raises:
      ValueError: the rankers do not rank the same number of views, or a pair names an unknown ranker.
    """
    names = list(ranks)
    lengths = {name: len(r) for name, r in ranks.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"every ranker must rank the same views; got lengths {lengths}")
    for a, b in pairs:
        if a not in ranks or b not in ranks:
            raise ValueError(f"pair ({a!r}, {b!r}) names a ranker not in {names}")
    columns = [(name, k) for name in names for k in ks]
    n_views = next(iter(lengths.values()), 0)
    hits = np.zeros((n_views, len(columns)))
    for j, (name, k) in enumerate(columns):
        hits[:, j] = np.asarray(ranks[name]) < k
    boot = bootstrap_means(hits, users, replicates, seed)
    column_of = {c: j for j, c in enumerate(columns)}
    out: dict = {
        "level": level,
        "replicates": replicates,
        "resampled": "users",
        "users": int(len(np.unique(users))) if users is not None else n_views,
        "recall": {
            name: {f"recall@{k}": percentile_interval(boot[:, column_of[(name, k)]], level) for k in ks}
            for name in names
        },
        "ratio": {},
    }
    for a, b in pairs:
        figures = {}
        for k in ks:
            ja, jb = column_of[(a, k)], column_of[(b, k)]
            point_b = float(hits[:, jb].mean()) if n_views else 0.0
            with np.errstate(invalid="ignore", divide="ignore"):
                ratios = boot[:, ja] / boot[:, jb]
            figures[f"recall@{k}"] = {
                "ratio": float(hits[:, ja].mean() / point_b) if point_b > 0 else float("nan"),
                "interval": percentile_interval(ratios, level),
            }
        out["ratio"][f"{a}/{b}"] = figures
    return out
