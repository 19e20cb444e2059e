"""EASE and implicit ALS: the matrix-factorisation baselines the quality benchmark computes (NumPy).

Both learn from a binary user x listing matrix of the views before the test targets (what the
model is trained on) and score every listing for a user from their row, so they are ranked by
served_corpus.ranks_over_time over the same live corpus, with the same exclusions, as the model:

  * EASE (Steck 2019): item-item weights B = -P / diag(P), diag(B) = 0, P = (X^T X + l2 I)^-1;
    scores x_u B. Dense `[n_items, n_items]`: refused past `max_items`.
  * ALS for implicit feedback (Hu, Koren and Volinsky 2008): confidence 1 + alpha x, preference
    x > 0, alternating exact least squares for user and item factors.
"""

from __future__ import annotations

import logging

import numpy as np

LOG = logging.getLogger(__name__)

MAX_EASE_ITEMS = 12_000  # B is dense float64 [n, n]: 1.1 GiB at this size


def interaction_matrix(users: np.ndarray, items: np.ndarray, num_users: int, num_items: int) -> np.ndarray:
    """float64 `[num_users, num_items]`: 1 where the user viewed the listing (any number of times).

    Raises:
      ValueError: an index outside the matrix, or `users` and `items` of different lengths.
    """
    users, items = np.asarray(users, np.int64), np.asarray(items, np.int64)
    if users.shape != items.shape:
        raise ValueError(f"users {users.shape} and items {items.shape} must have the same shape")
    if len(users) and (users.min() < 0 or users.max() >= num_users or items.min() < 0 or items.max() >= num_items):
        raise ValueError(f"user or item index outside [{num_users}, {num_items}]")
    matrix = np.zeros((num_users, num_items))
    matrix[users, items] = 1.0
    return matrix


def ease_weights(matrix: np.ndarray, l2: float = 500.0, max_items: int = MAX_EASE_ITEMS) -> np.ndarray:
    """float64 `[n_items, n_items]` EASE weights of a `[n_users, n_items]` interaction matrix.

    Raises:
      ValueError: more than `max_items` listings (the dense weights would not fit).
    """
    n = matrix.shape[1]
    if n > max_items:
        raise ValueError(f"EASE needs a dense [{n}, {n}] matrix; more than max_items={max_items} listings")
    gram = matrix.T @ matrix
    gram[np.diag_indices(n)] += l2
    inverse = np.linalg.inv(gram)
    weights = -inverse / np.diag(inverse)[None, :]
    weights[np.diag_indices(n)] = 0.0
    return weights


def als_factors(
    matrix: np.ndarray,
    factors: int = 64,
    l2: float = 0.1,
    alpha: float = 10.0,
    iterations: int = 15,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """(user factors `[n_users, f]`, item factors `[n_items, f]`) of implicit ALS; scores = U V^T."""
    rng = np.random.default_rng(seed)
    n_users, n_items = matrix.shape
    user_f = rng.normal(0.0, 0.01, (n_users, factors))
    item_f = rng.normal(0.0, 0.01, (n_items, factors))
    eye = l2 * np.eye(factors)
    for _ in range(iterations):
        user_f = _als_half(matrix, item_f, alpha, eye)
        item_f = _als_half(matrix.T, user_f, alpha, eye)
    return user_f, item_f


def _als_half(matrix: np.ndarray, fixed: np.ndarray, alpha: float, eye: np.ndarray) -> np.ndarray:
    """Each row's exact least-squares factors given the other side's `fixed` factors."""
    base = fixed.T @ fixed + eye
    out = np.zeros((matrix.shape[0], fixed.shape[1]))
    for row in range(matrix.shape[0]):
        seen = np.flatnonzero(matrix[row])
        if not len(seen):
            continue
        confidence = alpha * matrix[row, seen]
        vectors = fixed[seen]
        left = base + (vectors * confidence[:, None]).T @ vectors
        right = vectors.T @ (1.0 + confidence)
        out[row] = np.linalg.solve(left, right)
    return out
