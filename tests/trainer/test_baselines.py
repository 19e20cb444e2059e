"""The evaluation's baselines against small hand-computed rankings and a dense reference."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from trainer.evaluation import baselines
from trainer.evaluation import metrics as metrics_lib

DAY = np.timedelta64(86400, "s")
T0 = np.datetime64("2024-01-01T00:00:00", "ns")
AS_OF = T0 + 10 * DAY
CORPUS = pd.Index(["a0", "a1", "a2", "a3", "a4"])
USERS = pd.Index(["u1", "u2", "u3"])
# (user, article, day): u1 {a0, a1}, u2 {a0, a2, a1}, u3 {a3}; a4 never viewed; a9 not in the corpus.
VIEWS = [
    ("u1", "a0", 0.0),
    ("u1", "a1", 5.0),
    ("u2", "a0", 1.0),
    ("u2", "a2", 6.0),
    ("u2", "a1", 9.5),
    ("u3", "a3", 9.8),
    ("u3", "a9", 9.9),
]


def view_log() -> baselines.ViewLog:
    users, articles, days = zip(*VIEWS)
    times = [T0 + np.timedelta64(int(d * 86400), "s") for d in days]
    return baselines.ViewLog.from_ids(users, articles, times, CORPUS, USERS)


def order(scores: np.ndarray) -> list[str]:
    """The corpus ranked as the evaluation ranks it (score desc, ties by corpus position)."""
    return [CORPUS[i] for i in np.lexsort((np.arange(len(scores)), -scores))]


def test_the_view_log_drops_articles_outside_the_corpus():
    log = view_log()
    assert len(log.items) == 6 and log.num_items == 5


def test_popularity_counts_views_and_breaks_ties_by_corpus_position():
    scores = baselines.popularity_scores(view_log())
    np.testing.assert_array_equal(scores, [2, 2, 1, 1, 0])
    assert order(scores) == ["a0", "a1", "a2", "a3", "a4"]


def test_trending_counts_the_window_before_as_of_then_all_time_views():
    log = view_log()
    # last day (9, 10]: a1 (9.5) and a3 (9.8), one view each; a1 has more views overall.
    assert order(baselines.trending_scores(log, AS_OF, 1)) == ["a1", "a3", "a0", "a2", "a4"]
    # last 7 days (3, 10]: a1 twice, a2 and a3 once (tie: equal totals, so corpus position).
    assert order(baselines.trending_scores(log, AS_OF, 7)) == ["a1", "a2", "a3", "a0", "a4"]
    # (5, 9.5]: a1's view at day 5 (= as_of - W) is outside, its view at as_of inside, a2's at 6 inside.
    as_of = T0 + np.timedelta64(int(9.5 * 86400), "s")
    np.testing.assert_array_equal(baselines.trending_scores(log, as_of, 4.5) // (len(log.items) + 1), [0, 1, 1, 0, 0])
    assert order(baselines.trending_scores(log, as_of, 4.5)) == ["a1", "a2", "a0", "a3", "a4"]


def test_item_knn_scores_are_summed_cosine_co_occurrences():
    knn = baselines.ItemKNN(view_log())
    # counts a0 2, a1 2, a2 1, a3 1; co-views a0-a1 2, a0-a2 1, a1-a2 1.
    np.testing.assert_allclose(knn.scores(np.array([0])), [0, 1.0, 1 / np.sqrt(2), 0, 0], atol=1e-12)
    np.testing.assert_allclose(knn.scores(np.array([0, 1])), [1.0, 1.0, np.sqrt(2), 0, 0], atol=1e-12)
    np.testing.assert_allclose(knn.scores(np.array([3])), [0, 0, 0, 0, 0], atol=1e-12)
    np.testing.assert_allclose(knn.scores(np.array([], np.int64)), np.zeros(5))


def test_baseline_ranks_exclude_the_users_views():
    log = view_log()
    histories = [np.array([0, 1]), np.array([0]), np.array([3])]
    targets = np.array([2, 2, 4])
    ranks = baselines.baseline_ranks(log, AS_OF, histories, targets, histories)
    # popularity a0 a1 a2 a3 a4: u1 without a0, a1 -> a2 first; u2 without a0 -> a1, a2; u3 -> a0 a1 a2 a4.
    assert ranks["popularity"].tolist() == [0, 1, 3]
    assert ranks["trending_1d"].tolist() == [1, 2, 3]  # a1 a3 a0 a2 a4
    assert ranks["trending_7d"].tolist() == [0, 1, 3]  # a1 a2 a3 a0 a4
    # item-kNN: u1 a2 1.41 first; u2 a1 1.0 then a2 0.71; u3 all zero -> corpus order a0 a1 a2 a4.
    assert ranks["item_knn"].tolist() == [0, 1, 3]
    assert set(baselines.baseline_ranks(log, None, histories, targets, histories)) == {"popularity", "item_knn"}


def test_a_target_already_viewed_or_outside_the_corpus_is_a_miss():
    log = view_log()
    ranks = baselines.baseline_ranks(log, AS_OF, [np.array([0, 1])] * 2, np.array([1, -1]), [np.array([0, 1])] * 2)
    for name, values in ranks.items():
        assert values.tolist() == [metrics_lib.MISSED] * 2, name


@pytest.mark.parametrize("seed", [0, 1])
def test_item_knn_matches_a_dense_item_item_matrix(seed):
    rng = np.random.default_rng(seed)
    n_users, n_items = 40, 30
    users = rng.integers(0, n_users, 400)
    items = np.minimum(rng.zipf(1.5, 400) - 1, n_items - 1)
    log = baselines.ViewLog(users, items, np.full(400, np.datetime64("NaT"), "datetime64[ns]"), n_items)
    matrix = np.zeros((n_users, n_items))
    matrix[users, items] = 1.0
    counts = matrix.sum(axis=0)
    norm = np.where(counts > 0, 1 / np.sqrt(np.maximum(counts, 1)), 0)
    similarity = (matrix.T @ matrix) * norm[:, None] * norm[None, :]
    np.fill_diagonal(similarity, 0.0)
    knn = baselines.ItemKNN(log)
    histories = [np.flatnonzero(matrix[u]) for u in range(n_users)]
    for u in range(n_users):
        np.testing.assert_allclose(knn.scores(histories[u]), similarity[histories[u]].sum(axis=0), atol=1e-9)
    targets = rng.integers(0, n_items, n_users)
    expected = metrics_lib.target_ranks(np.stack([similarity[h].sum(axis=0) for h in histories]), targets, histories)
    # the dense sums and the sparse ones may differ in the last bit: compare ranks where no near-tie exists
    got = knn.ranks(histories, targets, histories)
    assert np.mean(got == expected) >= 0.95


def test_item_knn_on_a_sample_of_users_ranks_only_those():
    log = view_log()
    histories = [np.array([0, 1]), np.array([0]), np.array([3])]
    targets = np.array([2, 2, 4])
    ranks = baselines.baseline_ranks(log, AS_OF, histories, targets, histories, knn_users=np.array([1, 2]))
    assert ranks["item_knn"].tolist() == [1, 3] and len(ranks["popularity"]) == 3


def test_category_region_scores_among_live_rows_order_them_as_the_full_corpus_does():
    # Cells: a0, a1 (c0/r0); a2 (c1/r0); a3, a4 (c0/r1). created_at: a4 newest, a2 unknown.
    log = view_log()
    created = np.array([0.0, 1.0, np.nan, 2.0, 3.0]) * 86_400_000.0
    baseline = baselines.CategoryRegionPopularity(
        log, ["c0", "c0", "c1", "c0", "c0"], ["r0", "r0", "r0", "r1", "r1"], created, AS_OF
    )
    for user in range(3):
        full = baseline.scores(user)
        for rows in (np.arange(5), np.array([0, 2, 4]), np.array([1, 3])):
            among = baseline.scores_among(user, rows, AS_OF)
            assert order(np.where(np.isin(np.arange(5), rows), full, -np.inf))[: len(rows)] == [
                CORPUS[rows[j]] for j in np.lexsort((rows, -among))
            ]
    # The "last day" ends at the time given: at day 6.5 only the a2 view (c1/r0) is recent, so for
    # u3 (who viewed a3, c0/r1) their own cell comes first, then c1/r0 before c0/r0.
    early = baseline.scores_among(2, np.arange(5), T0 + np.timedelta64(int(6.5 * 86400), "s"))
    assert CORPUS[np.lexsort((np.arange(5), -early))[0]] in ("a3", "a4")  # u3's own cell first
    assert early[2] > early[0] and early[2] > early[1]  # then c1/r0, the only cell viewed in (5.5, 6.5]


@pytest.mark.parametrize("seed", [0, 1])
def test_item_knn_at_a_time_counts_only_the_pairs_first_viewed_by_then(seed):
    rng = np.random.default_rng(seed)
    n_views, n_items = 400, 30
    times = np.datetime64("2026-05-01T00:00:00", "ns") + rng.integers(0, 10 * 86400, n_views).astype("timedelta64[s]")
    log = baselines.ViewLog(rng.integers(0, 40, n_views), rng.integers(0, n_items, n_views), times, n_items)
    knn = baselines.ItemKNN(log)
    for at in np.sort(times)[[50, 200, 399]]:
        known = times <= at
        reference = baselines.ItemKNN(baselines.ViewLog(log.users[known], log.items[known], times[known], n_items))
        history = np.unique(log.items[known][:5])
        np.testing.assert_allclose(knn.scores(history, at), reference.scores(history), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(knn.scores(np.array([1, 2])), knn.scores(np.array([1, 2]), times.max()))


def test_item_knn_at_a_view_never_uses_a_later_co_view():
    # u1 views 0 then 1 on day 1; u2 views 0 on day 1 and 2 on day 9. At day 5 a user who viewed 0
    # is sent to 1 only: the co-view of 0 and 2 had not happened.
    day = np.timedelta64(86400, "s")
    t0 = np.datetime64("2026-05-01T00:00:00", "ns")
    log = baselines.ViewLog(
        np.array([1, 1, 2, 2]), np.array([0, 1, 0, 2]), np.array([t0, t0, t0, t0 + 8 * day], "datetime64[ns]"), 3
    )
    scores = baselines.ItemKNN(log).scores(np.array([0]), t0 + 4 * day)
    assert scores[1] > 0 and scores[2] == 0
