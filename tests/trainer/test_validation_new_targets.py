"""Validation ranks targets without a corpus row (new listings) by their own vectors, as the
service would: against the reference ranking with the target appended as the corpus's last row."""

from __future__ import annotations

import numpy as np

from trainer.evaluation import metrics as metrics_lib
from trainer.training.validation_set import EvalSet, target_ranks


def test_new_targets_are_ranked_by_their_own_vector_and_the_others_as_before():
    rng = np.random.default_rng(0)
    n, n_articles, d = 40, 30, 4
    users = rng.integers(-2, 3, size=(n, d)).astype(np.float32)  # small integers: ties on purpose
    articles = rng.integers(-2, 3, size=(n_articles, d)).astype(np.float32)
    own = rng.integers(-2, 3, size=(n, d)).astype(np.float32)
    targets = rng.integers(0, n_articles, size=n)
    new = rng.random(n) < 0.5
    targets[new] = -1
    exclude = [rng.choice(n_articles, size=rng.integers(0, 5), replace=False) for _ in range(n)]
    eval_set = EvalSet({}, targets, exclude, new)

    got = target_ranks(users, articles, eval_set, target_vectors=own)
    for i in range(n):
        if new[i]:  # the reference: the target as one more article after the corpus
            scores = np.concatenate([users[i] @ articles.T, [users[i] @ own[i]]])[None, :]
            expected = metrics_lib.target_ranks(scores, np.array([n_articles]), [exclude[i]])[0]
        else:
            expected = metrics_lib.target_ranks((users[i] @ articles.T)[None, :], targets[i : i + 1], [exclude[i]])[0]
        assert got[i] == expected, i
    # Without own vectors they are misses (the old definition), the others unchanged.
    old = target_ranks(users, articles, eval_set)
    assert np.all(old[new] == metrics_lib.MISSED) and np.array_equal(old[~new], got[~new])
