"""Ranking metrics against an independent argsort-based computation."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.evaluation import metrics
from trainer.evaluation.evaluate import popularity_ranks
from trainer.evaluation.plot import recall_curve


def _reference_rank(scores: np.ndarray, target: int, excluded: set[int]) -> int:
    """Rank by a stable sort on -score (ties: lower index first), excluded articles removed."""
    order = [j for j in np.argsort(-scores, kind="stable") if j not in excluded]
    return order.index(target) if target in order else metrics.MISSED


def test_target_ranks_match_a_stable_sort_with_exclusions_and_ties():
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 5, size=(40, 30)).astype(np.float32)  # many ties on purpose
    targets = rng.integers(-1, 30, size=40)
    exclude = [rng.choice(30, size=rng.integers(0, 8), replace=False) for _ in range(40)]
    got = metrics.target_ranks(scores, targets, exclude)
    for i in range(40):
        expected = metrics.MISSED if targets[i] < 0 else _reference_rank(scores[i], targets[i], set(exclude[i]))
        assert got[i] == expected, i


def test_batched_ranks_equal_unbatched():
    rng = np.random.default_rng(2)
    users, articles = rng.normal(size=(25, 4)), rng.normal(size=(50, 4))
    targets = rng.integers(0, 50, size=25)
    exclude = [rng.choice(50, size=5, replace=False) for _ in range(25)]
    np.testing.assert_array_equal(
        metrics.batched_ranks(users, articles, targets, exclude, batch_size=7),
        metrics.target_ranks(users @ articles.T, targets, exclude),
    )
    with pytest.raises(ValueError, match="same d"):
        metrics.batched_ranks(users, articles[:, :3], targets)


def test_popularity_ranks_equal_the_general_computation():
    rng = np.random.default_rng(3)
    counts = rng.integers(0, 6, size=30).astype(float)
    targets = rng.integers(-1, 30, size=20)
    exclude = [rng.choice(30, size=4, replace=False) for _ in range(20)]
    np.testing.assert_array_equal(
        popularity_ranks(counts, targets, exclude),
        metrics.target_ranks(np.tile(counts, (20, 1)), targets, exclude),
    )


def test_recall_and_ndcg_values():
    ranks = np.array([0, 1, 9, 10, metrics.MISSED])
    assert metrics.recall_at_k(ranks, 1) == pytest.approx(0.2)
    assert metrics.recall_at_k(ranks, 10) == pytest.approx(0.6)
    assert metrics.ndcg_at_k(ranks, 10) == pytest.approx((1 + 1 / np.log2(3) + 1 / np.log2(11)) / 5)
    assert metrics.ranking_metrics(ranks, (1, 10), 10) == {
        "recall@1": pytest.approx(0.2),
        "recall@10": pytest.approx(0.6),
        "ndcg@10": pytest.approx(metrics.ndcg_at_k(ranks, 10)),
    }
    np.testing.assert_allclose(recall_curve(ranks, 11), [0.2, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4, 0.6, 0.8])
    assert metrics.recall_at_k(np.array([]), 5) == 0.0


def test_early_stopping_k_shrinks_when_the_corpus_is_smaller_than_k():
    from trainer.training.epochs import early_stopping_k

    assert early_stopping_k(200, 5000) == 200
    assert early_stopping_k(200, 61) == 6
    assert early_stopping_k(200, 5) == 1
