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
