"""Bootstrap intervals over users (trainer/evaluation/metrics.py): coverage of a known recall, users
resampled as units, and paired ratios between rankers on the same views."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.evaluation import metrics as metrics_lib


def test_the_interval_of_independent_views_matches_the_normal_approximation():
    rng = np.random.default_rng(0)
    n, p = 4000, 0.3
    ranks = np.where(rng.random(n) < p, 0, 500)
    got = metrics_lib.recall_intervals({"model": ranks}, [10])["recall"]["model"]["recall@10"]
    mean = float((ranks < 10).mean())
    half = 1.96 * np.sqrt(mean * (1 - mean) / n)
    assert got[0] < mean < got[1]
    assert got[0] == pytest.approx(mean - half, abs=0.004) and got[1] == pytest.approx(mean + half, abs=0.004)


def test_users_are_resampled_whole_so_repeated_views_of_one_user_widen_the_interval():
    rng = np.random.default_rng(1)
    per_user = np.where(rng.random(500) < 0.4, 0, 500)
    ranks = np.repeat(per_user, 8)  # each user's 8 views all hit or all miss
    users = np.repeat(np.arange(500), 8)
    as_users = metrics_lib.recall_intervals({"m": ranks}, [1], users)["recall"]["m"]["recall@1"]
    as_views = metrics_lib.recall_intervals({"m": ranks}, [1])["recall"]["m"]["recall@1"]
    assert as_users[1] - as_users[0] > 2.2 * (as_views[1] - as_views[0])  # sqrt(8) ~ 2.8 wider


def test_a_paired_ratio_cancels_what_two_rankers_share():
    rng = np.random.default_rng(2)
    n = 3000
    base = np.where(rng.random(n) < 0.3, 0, 500)
    better = base.copy()
    better[(base > 0) & (rng.random(n) < 0.05)] = 0  # the same hits plus a few more
    out = metrics_lib.recall_intervals({"model": better, "popularity": base}, [1], pairs=[("model", "popularity")])
    ratio = out["ratio"]["model/popularity"]["recall@1"]
    assert ratio["ratio"] == pytest.approx((better < 1).mean() / (base < 1).mean())
    # Each recall's own interval overlaps the other's, but the paired ratio is surely above 1.
    a, b = out["recall"]["model"]["recall@1"], out["recall"]["popularity"]["recall@1"]
    assert a[0] < b[1] and ratio["interval"][0] > 1.0
    same = metrics_lib.recall_intervals({"a": base, "b": base}, [1], pairs=[("a", "b")])
    assert same["ratio"]["a/b"]["recall@1"]["interval"] == [1.0, 1.0]


def test_rankers_of_different_views_and_unknown_pairs_are_refused():
    with pytest.raises(ValueError, match="same views"):
        metrics_lib.recall_intervals({"a": np.zeros(3), "b": np.zeros(4)}, [1])
    with pytest.raises(ValueError, match="not in"):
        metrics_lib.recall_intervals({"a": np.zeros(3)}, [1], pairs=[("a", "z")])
    with pytest.raises(ValueError, match="users"):
        metrics_lib.bootstrap_means(np.zeros((3, 1)), np.zeros(2))


def test_fresh_targets_are_those_first_viewed_less_than_a_day_before_the_view():
    import pandas as pd
    import pyarrow as pa

    from homefeed import features
    from trainer.evaluation import cold_start

    t0 = pd.Timestamp("2026-05-01T00:00:00Z")
    views = [("a", 0.0), ("a", 3.0), ("b", 2.5), ("b", 3.0), ("c", 3.0), ("d", None)]
    table = pa.table(
        {
            features.LABEL: [v[0] for v in views],
            features.VIEWED_AT: pa.array(
                [None if v[1] is None else t0 + pd.Timedelta(days=v[1]) for v in views], pa.timestamp("us", tz="UTC")
            ),
        }
    )
    at = (t0 + pd.Timedelta(days=3)).value / 1e6
    mask = cold_start.fresh_target_mask(table, ["a", "b", "c", "d", "c"], np.array([at, at, at, at, np.nan]))
    # a first viewed 3 days before; b half a day; c at the view itself; d never dated; no time: never.
    np.testing.assert_array_equal(mask, [False, True, True, False, False])
