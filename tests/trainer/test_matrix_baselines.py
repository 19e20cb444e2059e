"""EASE and implicit ALS (trainer/evaluation/matrix_baselines.py) against their definitions."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.evaluation import matrix_baselines as mb


def _matrix(seed: int, users: int = 60, items: int = 25) -> np.ndarray:
    rng = np.random.default_rng(seed)
    taste = rng.integers(0, 3, users)
    group = np.arange(items) % 3
    p = np.where(taste[:, None] == group[None, :], 0.5, 0.05)
    return (rng.random((users, items)) < p).astype(np.float64)


@pytest.mark.parametrize("seed", [0, 1])
def test_ease_solves_its_constrained_least_squares(seed):
    x, l2 = _matrix(seed), 5.0
    b = mb.ease_weights(x, l2)
    assert np.allclose(np.diag(b), 0.0)
    # Stationarity of ||X - XB||^2 + l2 ||B||^2 with diag(B) = 0: off-diagonal gradient is zero.
    gradient = -x.T @ (x - x @ b) + l2 * b
    off = ~np.eye(len(b), dtype=bool)
    assert np.abs(gradient[off]).max() < 1e-8
    with pytest.raises(ValueError, match="max_items"):
        mb.ease_weights(x, l2, max_items=10)


def test_both_recover_the_taste_groups():
    x = _matrix(3)
    taste_of_item = np.arange(x.shape[1]) % 3
    ease = x @ mb.ease_weights(x, 5.0)
    users, items = mb.als_factors(x, factors=8, l2=0.1, alpha=5.0, iterations=10)
    als = users @ items.T
    for scores in (ease, als):
        top = scores.argmax(axis=1)
        majority = np.array([np.bincount(taste_of_item[np.flatnonzero(row)], minlength=3).argmax() for row in x])
        assert (taste_of_item[top] == majority).mean() > 0.8


def test_interaction_matrix_is_binary_and_checks_indices():
    m = mb.interaction_matrix(np.array([0, 0, 1]), np.array([2, 2, 0]), 2, 3)
    np.testing.assert_array_equal(m, [[0, 0, 1], [1, 0, 0]])
    with pytest.raises(ValueError, match="outside"):
        mb.interaction_matrix(np.array([2]), np.array([0]), 2, 3)
