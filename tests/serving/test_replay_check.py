"""serving/replay without the pipeline: what is held out of the input tables, and when the served
and evaluated figures count as agreeing. The whole chain runs in tests/test_replay.py."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from serving.replay import score, window

T = pd.Timestamp("2026-05-31T00:00:00Z")


def _at(hours: float) -> pd.Timestamp:
    return T + pd.Timedelta(hours=hours)


@pytest.fixture
def tables(tmp_path):
    events = pd.DataFrame(
        {
            "user_id": ["u1", "u1", "u2", "u1", "u2", "u3"],
            "article_id": ["a1", "a2", "a1", "a3", "a4", "a4"],
            "viewed_at": [_at(-5), _at(-1), _at(-2), _at(1), _at(2), _at(2)],
        }
    )
    articles = pd.DataFrame(
        {
            "article_id": ["a1", "a2", "a3", "a4", "a5"],
            "title": ["one", "two", "three", "four", "five"],
            "category": ["c"] * 5,
            "region": ["r"] * 5,
            "created_at": [_at(-48), _at(-48), _at(-10), _at(0.5), _at(-72)],
            "status": ["active", "sold", "sold", "deleted", "sold"],
            "removed_at": [pd.NaT, _at(-0.5), _at(3), _at(2), _at(-30)],
        }
    )
    articles["removed_at"] = pd.to_datetime(articles["removed_at"], utc=True)
    searches = pd.DataFrame({"user_id": ["u1", "u2"], "query": ["bike", "sofa"], "searched_at": [_at(-3), _at(2)]})
    paths = {}
    for name, frame in (("events", events), ("articles", articles), ("searches", searches)):
        paths[name] = tmp_path / f"{name}.parquet"
        frame.to_parquet(paths[name], index=False)
    return paths


def test_a_time_cut_gives_the_pipeline_only_what_was_known_at_the_cut(tables, tmp_path):
    held = window.hold_out(
        tables["events"], tables["articles"], tmp_path / "out", tables["searches"], cut="2026-05-31T00:00:00Z"
    )
    pre_events = pd.read_parquet(held.events_path)
    assert sorted(pre_events["article_id"]) == ["a1", "a1", "a2"]
    pre = pd.read_parquet(held.articles_path).set_index("article_id")
    assert sorted(pre.index) == ["a1", "a2", "a3", "a5"]  # a4 is created after the cut
    assert pre.loc["a3", "status"] == "active" and pd.isna(pre.loc["a3", "removed_at"])  # sold later: up at T
    assert pre.loc["a2", "status"] == "sold" and pre.loc["a5", "status"] == "sold"  # sold before T: as is
    assert list(pd.read_parquet(held.searches_path)["query"]) == ["bike"]

    timeline = held.timeline()
    steps = [(row.kind, row.article_id if row.kind != "search" else row.query) for row in timeline.itertuples()]
    # At 2 h: u2's search, both views of a4, then a4's removal (created, searched, viewed, taken down).
    assert steps == [
        ("create", "a4"),
        ("view", "a3"),
        ("search", "sofa"),
        ("view", "a4"),
        ("view", "a4"),
        ("remove", "a4"),
        ("remove", "a3"),
    ]
    create = timeline.iloc[0]
    assert create["created_at"] == "2026-05-31T00:30:00Z" and create["title"] == "four"
    assert list(timeline.loc[timeline["kind"] == "remove", "status"]) == ["deleted", "sold"]
    assert (held.window_views, held.window_creates, held.window_removes, held.window_searches) == (3, 1, 2, 1)


def test_a_cut_outside_the_views_is_refused_with_the_span(tables, tmp_path):
    with pytest.raises(ValueError, match="leaves 6 views before it and 0 after"):
        window.hold_out(tables["events"], tables["articles"], tmp_path / "out", cut="2026-06-30T00:00:00Z")
    with pytest.raises(ValueError, match="time zone"):
        window.hold_out(tables["events"], tables["articles"], tmp_path / "out", cut="2026-05-31T00:00:00")


def test_last_per_user_holds_out_each_users_last_view_but_a_lone_one(tables, tmp_path):
    held = window.hold_out(tables["events"], tables["articles"], tmp_path / "out", mode=window.LAST_PER_USER)
    timeline = held.timeline()
    assert list(zip(timeline["user_id"], timeline["article_id"])) == [("u1", "a3"), ("u2", "a4")]
    pre = pd.read_parquet(held.events_path)
    assert sorted(zip(pre["user_id"], pre["article_id"])) == [("u1", "a1"), ("u1", "a2"), ("u2", "a1"), ("u3", "a4")]
    assert held.cut is None


def test_served_recall_counts_hits_below_k_with_an_interval_over_users():
    ranks = np.array([0, 10, 60, 250, 199, np.iinfo(np.int64).max])
    served = score.served_recall(ranks, ["a", "a", "b", "b", "c", "c"], ks=(50, 200))
    assert served["recall@50"] == pytest.approx(2 / 6) and served["recall@200"] == pytest.approx(4 / 6)
    low, high = served["interval"]["recall@200"]
    assert low <= 4 / 6 <= high and high - low > 0
    assert served["users"] == 3 and served["views"] == 6


def _evaluation(recall: float, interval) -> dict:
    return {
        "model": {"recall@200": recall},
        "recall@200": recall,
        "intervals": {"recall": {"model": {"recall@200": list(interval)}}},
        "protocol": {"split": "test", "corpus": "live at each view"},
    }


def test_the_issue_figures_disagree_and_equal_figures_agree():
    # The news-like data set of issue 28: the service measured 0.047, `evaluate` reported 0.348.
    rows = score.report(
        {"recall@200": 0.047, "interval": {"recall@200": [0.040, 0.055]}}, _evaluation(0.348, (0.33, 0.366)), (200,)
    )
    assert not rows["recall@200"]["agrees"]
    assert rows["recall@200"]["difference"] == pytest.approx(-0.301)
    same = score.compare(0.35, [0.30, 0.40], 0.348, [0.33, 0.366])
    assert same["agrees"] and same["served_within_evaluation_interval"]


def test_agreement_is_judged_on_the_difference_not_on_overlap_nor_on_one_interval():
    # Intervals that touch, yet the difference is 2.8 standard errors: they disagree.
    touching = score.compare(0.40, [0.35, 0.45], 0.50, [0.45, 0.55])
    assert not touching["agrees"]
    assert touching["difference_interval"][1] < 0
    # A small window (wide served interval) outside the evaluation's narrow interval: within noise.
    noisy = score.compare(0.31, [0.21, 0.41], 0.348, [0.33, 0.366])
    assert noisy["agrees"] and not noisy["served_within_evaluation_interval"]


def test_an_evaluation_without_an_interval_is_refused_by_name():
    with pytest.raises(ValueError, match="no model recall@200 with an interval"):
        score.evaluation_figure({"model": {"recall@200": 0.3}}, 200)
