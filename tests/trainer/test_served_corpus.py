"""The served corpus at a view's time (trainer/evaluation/served_corpus.py) and the ranks over it, against
hand-built worlds and a plain reference (metrics.target_ranks over the live sub-corpus)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from homefeed import features
from trainer.evaluation import metrics as metrics_lib
from trainer.evaluation import served_corpus as served_lib

T0 = pd.Timestamp("2026-05-01T00:00:00Z")


def at(days: float) -> pd.Timestamp:
    return T0 + pd.Timedelta(days=days)


def ms(days: float) -> float:
    return at(days).value / 1e6


# The as_of corpus: a0 (created day 0), a1 (day 5), a2 (no created_at, first viewed day 4.5). s1 and
# s2 were removed before as_of: s1 created day 1.5, sold day 3.2 but viewed again on day 6 (a view
# after its removal, which must not make it live); s2 created day 7.75, removed day 8.5.
ARTICLES = pd.DataFrame(
    {
        features.ARTICLE_ID: ["a0", "a1", "a2"],
        "title": ["Oak desk", "Road bike", None],
        "category": ["c0", "c1", "c0"],
        "region": ["r0", "r0", "r1"],
        features.CREATED_AT: [at(0), at(5), pd.NaT],
    }
)
LISTINGS = pd.DataFrame(
    {
        features.ARTICLE_ID: ["a0", "a1", "a2", "s1", "s2"],
        "title": ["Oak desk", "Road bike", None, "Kids bike", "Yoga mat"],
        "category": ["c0", "c1", "c0", "c0", "c1"],
        "region": ["r0", "r0", "r1", "r0", "r0"],
        features.CREATED_AT: [at(0), at(5), pd.NaT, at(1.5), at(7.75)],
        features.REMOVED_AT: [pd.NaT, pd.NaT, pd.NaT, at(3.2), at(8.5)],
    }
)
VIEWS = [
    ("s1", 2.0, "c0", "Kids bike"),
    ("s1", 3.0, "c0", "Kids bike"),
    ("a0", 4.0, "c0", "Oak desk"),
    ("a2", 4.5, "c0", None),
    ("s1", 6.0, "c0", "Kids bike"),
    ("s2", 8.0, "c1", "Yoga mat"),
]


def views_table(with_times: bool = True) -> pa.Table:
    columns = {
        features.LABEL: [v[0] for v in VIEWS],
        features.label_attribute("category"): [v[2] for v in VIEWS],
        features.label_attribute("region"): ["r0"] * len(VIEWS),
        features.LABEL_TITLE: [v[3] for v in VIEWS],
    }
    if with_times:
        columns[features.VIEWED_AT] = pa.array([at(v[1]) for v in VIEWS], pa.timestamp("us", tz="UTC"))
    return pa.table(columns)


def corpus() -> served_lib.ServedCorpus:
    return served_lib.ServedCorpus.build(["a0", "a1", "a2"], ARTICLES, views_table(), LISTINGS)


def live_ids(c: served_lib.ServedCorpus, days: float) -> list[str]:
    return list(c.article_ids[c.live_rows(ms(days))])


def test_the_corpus_at_t_is_exactly_the_listings_created_by_t_and_not_yet_removed():
    c = corpus()
    assert list(c.article_ids) == ["a0", "a1", "a2", "s1", "s2"] and c.num_exported == 3 and c.timed
    assert c.created_ms[3] == pytest.approx(ms(1.5))
    assert c.frame.loc[3, "title"] == "Kids bike" and c.frame.loc[3, "category"] == "c0"
    assert live_ids(c, 1.0) == ["a0"]  # s1 not created yet, a1 neither; a2 not viewed yet
    assert live_ids(c, 2.5) == ["a0", "s1"]
    assert live_ids(c, 3.2) == ["a0"]  # removed_at is exclusive: gone at its removal time
    assert live_ids(c, 4.5) == ["a0", "a2"]  # no created_at: live from its first view at or before t
    assert live_ids(c, 5.0) == ["a0", "a1", "a2"]
    assert live_ids(c, 8.0) == ["a0", "a1", "a2", "s2"]
    assert live_ids(c, 8.5) == ["a0", "a1", "a2"]
    # Without view times: the as_of corpus, always live.
    snapshot = served_lib.ServedCorpus.build(["a0", "a1", "a2"], ARTICLES, views_table(with_times=False), LISTINGS)
    assert not snapshot.timed and list(snapshot.article_ids[snapshot.live_rows(ms(1.0))]) == ["a0", "a1", "a2"]
    assert list(served_lib.ServedCorpus.snapshot(["a0", "a1"], ARTICLES).article_ids) == ["a0", "a1"]


def test_a_listing_viewed_after_t_but_removed_before_t_is_not_in_the_corpus_at_t():
    # s1 was sold on day 3.2 and viewed again on day 6: at day 4 and day 6 it is not a candidate.
    c = corpus()
    assert "s1" not in live_ids(c, 4.0) and "s1" not in live_ids(c, 6.0)


def test_without_listings_only_the_as_of_corpus_is_served_and_nothing_comes_from_later_views():
    c = served_lib.ServedCorpus.build(["a0", "a1", "a2"], ARTICLES, views_table(), None)
    assert list(c.article_ids) == ["a0", "a1", "a2"]
    assert live_ids(c, 2.5) == ["a0"] and live_ids(c, 5.0) == ["a0", "a1", "a2"]


@pytest.mark.parametrize("seed", [0, 1])
def test_age_buckets_match_the_reference_and_bucket_ages_fall_in_their_bucket(seed):
    rng = np.random.default_rng(seed)
    hours = np.concatenate([2.0 ** np.arange(0, 21) - 1, rng.exponential(200, 500), [0.0]])
    days = np.concatenate([hours / 24.0, [-1.0, np.nan]])
    np.testing.assert_array_equal(served_lib.age_buckets(days), [features.age_bucket(d) for d in days])
    buckets = np.arange(features.AGE_BUCKETS)
    np.testing.assert_array_equal(served_lib.age_buckets(served_lib.bucket_age_days(buckets)), buckets)


def test_vectors_are_the_tower_at_the_age_bucket_of_each_view_time():
    c = corpus()
    calls = []

    def embed(raw):  # a tower whose vector says which listing and which age bucket it saw
        calls.append(len(raw[features.LABEL]))
        ids = [{"a0": 0, "a1": 1, "a2": 2, "s1": 3, "s2": 4}[a] for a in raw[features.LABEL]]
        buckets = [features.age_bucket(a) for a in raw[features.LABEL_AGE]]
        titles = [len(t) for t in raw[features.LABEL_TITLE]]
        return np.array([ids, buckets, titles], np.float32).T

    times = np.array([ms(2.5), ms(4.6), ms(8.0)])
    vectors = served_lib.ServedVectors(c, times, embed, as_of_ms=ms(9.0))
    assert calls == [len(vectors.vectors)]  # one call; each (listing, bucket) pair once
    assert len(vectors.vectors) == len(np.unique(vectors.vectors[:, :2], axis=0))
    for t in times:
        rows = c.live_rows(t)
        got = vectors.at(rows, t)
        np.testing.assert_array_equal(got[:, 0], rows)
        expected = [
            features.age_bucket(features.age_days(None if np.isnan(c.created_ms[r]) else c.created_ms[r], t))
            for r in rows
        ]
        np.testing.assert_array_equal(got[:, 1], expected)
    assert vectors.at(np.array([3]), ms(2.5))[0, 2] == len("kids bike")


def test_ranks_count_only_the_live_unseen_listings_with_the_reference_tie_rule():
    c = corpus()
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 3, size=len(c)).astype(np.float64)  # ties on purpose
    times = np.array([ms(2.5), ms(2.5), ms(4.6), ms(8.0), ms(3.5)])
    targets = np.array([3, 0, 1, 4, 3])  # the last: s1 after its last view, not live
    exclude = [np.array([], np.int64), np.array([2]), np.array([0]), np.array([1, 0]), np.array([], np.int64)]
    got = served_lib.ranks_over_time(c, times, targets, exclude, lambda i, rows, t: scores[rows])
    for i in range(len(targets)):
        rows = c.live_rows(times[i])
        position = np.flatnonzero(rows == targets[i])
        if not len(position):
            assert got[i] == metrics_lib.MISSED
            continue
        sub_exclude = [np.flatnonzero(np.isin(rows, exclude[i]))]
        reference = metrics_lib.target_ranks(scores[rows][None, :], position, sub_exclude)
        assert got[i] == reference[0], i
    assert got[4] == metrics_lib.MISSED
    # An excluded target is a miss; a chosen subset of rows ranks only those.
    assert (
        served_lib.ranks_over_time(c, times[:1], targets[:1], [np.array([3])], lambda i, r, t: scores[r])[0]
        == metrics_lib.MISSED
    )
    subset = served_lib.ranks_over_time(c, times, targets, exclude, lambda i, rows, t: scores[rows], np.array([2, 0]))
    np.testing.assert_array_equal(subset, got[[2, 0]])


def test_popularity_and_trending_at_a_time_equal_a_plain_count_of_the_views_up_to_it():
    from trainer.evaluation import baselines
    from trainer.evaluation.served_ranks import ViewCounts

    rng = np.random.default_rng(5)
    n_items, n_views = 12, 300
    times = np.datetime64("2026-05-01T00:00:00", "ns") + rng.integers(0, 10 * 86400, n_views).astype("timedelta64[s]")
    times[:7] = np.datetime64("NaT")  # unknown times count as old views, always
    items = rng.integers(0, n_items, n_views)
    log = baselines.ViewLog(rng.integers(0, 5, n_views), items, times, n_items)
    counts = ViewCounts(log)
    rows = np.array([0, 3, 4, 7, 11])
    untimed = np.bincount(items[:7], minlength=n_items)
    for at in times[7:27]:
        upto = np.bincount(items[7:][times[7:] <= at], minlength=n_items) + untimed
        np.testing.assert_array_equal(counts.up_to(at, rows), upto[rows])
        for days in (1, 7):
            start = at - np.timedelta64(days * 86400, "s")
            window = np.bincount(items[7:][(times[7:] > start) & (times[7:] <= at)], minlength=n_items)
            np.testing.assert_array_equal(
                counts.trending(at, days, rows), baselines.trending_from_window(window, upto, n_views)[rows]
            )
    np.testing.assert_array_equal(counts.up_to(None, rows), np.bincount(items, minlength=n_items)[rows])


def test_popularity_at_a_view_counts_no_later_view():
    # Listing 0 is viewed ten times after the test view at day 5, listing 1 twice before it: a live
    # counter at day 5 ranks listing 1 first.
    from trainer.evaluation import baselines
    from trainer.evaluation.served_ranks import ViewCounts

    day = np.timedelta64(86400, "s")
    t0 = np.datetime64("2026-05-01T00:00:00", "ns")
    times = np.array([t0 + 1 * day, t0 + 2 * day, *[t0 + 6 * day] * 10], "datetime64[ns]")
    items = np.array([1, 1, *[0] * 10])
    counts = ViewCounts(baselines.ViewLog(np.zeros(12, np.int64), items, times, 3))
    c = served_lib.ServedCorpus.snapshot(["x0", "x1", "x2"], pd.DataFrame())
    at_view = (t0 + 5 * day).astype("datetime64[ms]").astype(np.int64).astype(np.float64)
    ranks = served_lib.ranks_over_time(
        c, np.array([at_view]), np.array([1]), None, lambda i, rows, t: counts.up_to(np.datetime64(int(t), "ms"), rows)
    )
    assert ranks[0] == 0
    assert counts.trending(t0 + 5 * day, 7, np.array([0, 1])).argmax() == 1
