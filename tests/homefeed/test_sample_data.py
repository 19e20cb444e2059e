"""homefeed.sample.marketplace and `candidates sample-data`: determinism, schema, invariants, learnability."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from homefeed import features
from homefeed.sample import cli as data_cli
from homefeed.sample.marketplace import (
    CATEGORIES,
    REGIONS,
    SampleDataConfig,
    generate,
    write_sample_data,
)
from homefeed_cli import cli

SMALL = SampleDataConfig(users=200, articles=300, days=7, seed=3)


@pytest.fixture(scope="module")
def default_world() -> tuple[pd.DataFrame, pd.DataFrame]:
    """The demo-sized world (defaults), generated once for the module."""
    return generate(SampleDataConfig())


@pytest.fixture
def data_cli_only(monkeypatch):
    """Run `candidates` with only this module's commands registered, whatever other stages hold."""
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("homefeed.sample.cli",))


def test_same_seed_same_tables_and_different_seed_different_tables():
    events_a, articles_a = generate(SMALL)
    events_b, articles_b = generate(SampleDataConfig(users=200, articles=300, days=7, seed=3))
    pd.testing.assert_frame_equal(events_a, events_b)
    pd.testing.assert_frame_equal(articles_a, articles_b)

    events_c, articles_c = generate(SampleDataConfig(users=200, articles=300, days=7, seed=4))
    assert not events_a.equals(events_c)
    assert not articles_a.equals(articles_c)


def test_parquet_schema_matches_the_data_contract(tmp_path):
    summary = write_sample_data(tmp_path, SMALL)

    events = pq.read_table(tmp_path / "events.parquet")
    articles = pq.read_table(tmp_path / "articles.parquet")
    utc_micros = pa.timestamp("us", tz="UTC")
    assert events.schema == pa.schema(
        [("user_id", pa.string()), ("article_id", pa.string()), ("viewed_at", utc_micros)]
    )
    assert articles.schema == pa.schema(
        [
            ("article_id", pa.string()),
            ("title", pa.string()),
            ("category", pa.string()),
            ("region", pa.string()),
            ("created_at", utc_micros),
            ("status", pa.string()),
            ("removed_at", utc_micros),
        ]
    )
    assert set(features.EVENTS_REQUIRED_COLUMNS) == set(events.column_names)
    assert set(articles.column_names) - {"article_id"} == set(features.ARTICLES_OPTIONAL_COLUMNS)
    assert summary["events"] == events.num_rows and summary["articles"] == articles.num_rows == 300
    assert summary["users"] == 200
    # The extract reads the split protocol from here (components/extract/split.py dataset_split).
    assert json.loads((tmp_path / "dataset.json").read_text())["source"]["split"] == "time"
    assert not list(tmp_path.glob(".*.tmp"))  # temporaries renamed away


def test_world_invariants(default_world):
    events, articles = default_world
    config = SampleDataConfig()

    assert len(articles) == config.articles and articles["article_id"].is_unique
    assert articles["article_id"].iloc[0] == "a000001" and articles["article_id"].str.len().eq(7).all()
    per_user = events.groupby("user_id").size()
    assert len(per_user) == config.users  # every user appears ...
    assert per_user.min() >= 3  # ... with at least 3 views
    assert per_user.max() > 5 * per_user.median()  # heavy-tailed activity
    assert 35 <= per_user.mean() <= 60
    assert not events.duplicated(["user_id", "article_id"]).any()  # a view is a first view
    assert set(events["article_id"]) <= set(articles["article_id"])

    # Times: the fixed window (not the wall clock), and never a view before the listing existed.
    end = pd.Timestamp(config.end)
    assert events["viewed_at"].min() >= end - pd.Timedelta(days=config.days)
    assert events["viewed_at"].max() < end
    created = events["article_id"].map(articles.set_index("article_id")["created_at"])
    assert (events["viewed_at"] > created).all()
    assert (articles["created_at"] < end - pd.Timedelta(days=config.days)).mean() == pytest.approx(0.2, abs=0.02)

    # Removal times: exactly the sold and deleted listings have one, after creation and before the
    # end, and nobody views a listing at or after it.
    gone = articles["status"] != "active"
    assert (articles["removed_at"].notna() == gone).all()
    assert (articles.loc[gone, "removed_at"] > articles.loc[gone, "created_at"]).all()
    assert (articles.loc[gone, "removed_at"] < end).all()
    removed = events["article_id"].map(articles.set_index("article_id")["removed_at"])
    assert not (events["viewed_at"] >= removed).any()

    # Statuses: about 15% sold, a few deleted, the rest active.
    shares = articles["status"].value_counts(normalize=True)
    assert set(shares.index) == set(features.ARTICLE_STATUSES)
    assert shares["sold"] == pytest.approx(0.15, abs=0.03)
    assert 0 < shares["deleted"] < 0.05
    assert set(articles["category"]) == set(CATEGORIES) and set(articles["region"]) == set(REGIONS)
    assert articles["title"].str.match(r"^[A-Z][\w-]*( \w+)? [\w' -]+$").all()

    # Popularity is heavy-tailed: the top 1% of articles draw several times their share of views.
    counts = events["article_id"].value_counts()
    assert counts.iloc[: len(articles) // 100].sum() / len(events) > 0.05


def _consecutive_share(views: pd.DataFrame, column: str) -> float:
    """Share of a user's consecutive view pairs (in row order) with the same `column` value."""
    values, users = views[column].to_numpy(), views["user_id"].to_numpy()
    same_user = users[1:] == users[:-1]
    return float((values[1:] == values[:-1])[same_user].mean())


def test_users_mostly_browse_their_home_region_and_stay_in_category(default_world):
    events, articles = default_world
    views = events.merge(articles[["article_id", "category", "region"]], on="article_id")
    views = views.sort_values(["user_id", "viewed_at", "article_id"])
    top_region_share = views.groupby("user_id")["region"].agg(lambda r: r.value_counts(normalize=True).iloc[0])
    assert top_region_share.median() > 0.5  # one region dominates (8 regions, the largest has ~24%)

    # Short-term structure: in time order, consecutive views share a category far more often than
    # the same views in a random order (which only reflects the user's overall taste).
    shuffled = views.sample(frac=1.0, random_state=0).sort_values("user_id", kind="stable")
    in_order, by_taste = _consecutive_share(views, "category"), _consecutive_share(shuffled, "category")
    assert in_order > by_taste + 0.1, (in_order, by_taste)


def _recall_at_k(events: pd.DataFrame, articles: pd.DataFrame, k: int) -> tuple[float, float]:
    """Recall@k of popularity and of a category-aware popularity baseline, quality protocol.

    Each user's last view (by viewed_at, then article_id) is the target, the rest is history;
    already-viewed articles are excluded. The personalised baseline ranks, by training view count,
    the unseen articles in the categories of the user's last 5 views.
    """
    ordered = events.sort_values(["user_id", "viewed_at", "article_id"])
    target = ordered.groupby("user_id").tail(1).set_index("user_id")["article_id"]
    train = ordered.drop(ordered.groupby("user_id").tail(1).index)
    counts = train["article_id"].value_counts()
    category = articles.set_index("article_id")["category"]
    ranked = counts.index.to_numpy()
    ranked_by_category = {c: ranked[category.loc[ranked].to_numpy() == c] for c in category.unique()}
    histories = train.groupby("user_id")["article_id"].agg(list)

    popular_hits = personal_hits = 0
    for user, label in target.items():
        history = histories.get(user, [])
        seen = set(history)
        popular = [a for a in ranked[: k + len(seen)] if a not in seen][:k]
        popular_hits += label in popular
        recent_categories = set(category.loc[history[-5:]])
        pool = np.concatenate([ranked_by_category[c][: k + len(seen)] for c in recent_categories] or [[]])
        pool = sorted((a for a in pool if a not in seen), key=lambda a: -counts[a])[:k]
        personal_hits += label in pool
    return popular_hits / len(target), personal_hits / len(target)


def test_learnable_a_personalised_baseline_clearly_beats_popularity(default_world):
    events, articles = default_world
    popular, personal = _recall_at_k(events, articles, k=50)
    assert popular > 0.02  # popularity is a real baseline, not zero ...
    assert personal >= 1.3 * popular, (popular, personal)  # ... and personal taste beats it clearly


def test_bad_settings_are_refused_with_the_setting_named():
    with pytest.raises(ValueError, match="articles must be >= 50"):
        generate(SampleDataConfig(articles=10))
    with pytest.raises(ValueError, match="sold_share"):
        generate(SampleDataConfig(sold_share=1.5))
    with pytest.raises(ValueError, match="end"):
        generate(SampleDataConfig(end="next tuesday"))


@pytest.mark.parametrize(
    "config",
    [
        SampleDataConfig(users=300, articles=50, days=1, views_per_user=30, seed=1),
        # Few listings, none listed before the window: users run out of unopened listings.
        SampleDataConfig(
            users=300, articles=50, days=1, views_per_user=30, seed=1, prelisted_share=0.0, min_views_per_user=8
        ),
    ],
)
def test_tiny_world_still_gives_every_user_their_minimum_of_first_views(config):
    events, articles = generate(config)
    per_user = events.groupby("user_id").size()
    assert len(per_user) == config.users and per_user.min() >= config.min_views_per_user
    assert not events.duplicated(["user_id", "article_id"]).any()
    created = events["article_id"].map(articles.set_index("article_id")["created_at"])
    assert (events["viewed_at"] > created).all()
    assert events["viewed_at"].max() < pd.Timestamp(config.end)


def test_cli_round_trip(tmp_path, capsys, data_cli_only):
    out = tmp_path / "sample"
    code = cli.main(
        ["sample-data", "--out", str(out), "--users", "200", "--articles", "300", "--days", "7", "--seed", "3"]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "events by 200 users" in printed and str(out / "events.parquet") in printed

    expected_events, expected_articles = generate(SMALL)
    pd.testing.assert_frame_equal(pd.read_parquet(out / "events.parquet"), expected_events, check_dtype=False)
    pd.testing.assert_frame_equal(pd.read_parquet(out / "articles.parquet"), expected_articles, check_dtype=False)


def test_cli_bad_setting_is_one_line_error(tmp_path, capsys, data_cli_only):
    code = cli.main(["sample-data", "--out", str(tmp_path / "x"), "--articles", "10"])
    assert code == 2
    assert "articles must be >= 50" in capsys.readouterr().err
    assert not (tmp_path / "x" / "events.parquet").exists()


def test_cli_help_states_the_config_defaults():
    subparsers = argparse.ArgumentParser().add_subparsers()
    data_cli.register(subparsers)
    help_text = subparsers.choices["sample-data"].format_help()
    defaults = SampleDataConfig()
    for option in data_cli.SAMPLE_DATA_OPTIONS:
        assert f"default: {getattr(defaults, option)})" in help_text, option
