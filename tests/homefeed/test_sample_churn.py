"""`sample-data --churn`: listings live about a day and most views go to recent listings."""

from __future__ import annotations

import pandas as pd
import pytest

from homefeed.sample.marketplace import CHURN_SETTINGS, SampleDataConfig, churn_config, generate
from homefeed_cli import cli

SMALL_CHURN = dict(users=300, articles=2000, days=6, seed=5)


@pytest.fixture(scope="module")
def churn_world() -> tuple[pd.DataFrame, pd.DataFrame]:
    return generate(churn_config(**SMALL_CHURN))


def _ages_days(events: pd.DataFrame, articles: pd.DataFrame) -> pd.Series:
    created = events["article_id"].map(articles.set_index("article_id")["created_at"])
    return (events["viewed_at"] - created).dt.total_seconds() / 86400


def test_churn_listings_live_about_a_day_and_most_views_are_fresh(churn_world):
    events, articles = churn_world
    ages = _ages_days(events, articles)
    assert (ages > 0).all()
    assert ages.median() < 0.75 and (ages < 1.0).mean() > 0.75, ages.describe()
    # Listings are taken down: by the window's end only those listed in about the last days are active.
    end = pd.Timestamp(churn_config().end)
    active = articles[articles["status"] == "active"]
    recent = active["created_at"] >= end - pd.Timedelta(days=3)
    assert recent.mean() > 0.9 and len(active) < 0.25 * len(articles)
    # Every listing taken down carries its true removal time, about a lifetime after its creation.
    gone = articles[articles["status"] != "active"]
    assert gone["removed_at"].notna().all() and active["removed_at"].isna().all()
    lifetime = gone["removed_at"] - gone["created_at"].clip(lower=end - pd.Timedelta(days=churn_config().days))
    assert lifetime.dt.total_seconds().median() / 86400 < 1.5
    # Nobody views a listing after it is gone: a listing's views span about its lifetime.
    span = events.groupby("article_id")["viewed_at"].agg(lambda s: (s.max() - s.min()).total_seconds() / 86400)
    assert span.median() < 1.0
    per_user = events.groupby("user_id").size()
    assert len(per_user) == SMALL_CHURN["users"] and per_user.min() >= 3
    assert not events.duplicated(["user_id", "article_id"]).any()


def test_without_churn_listings_are_viewed_for_days(churn_world):
    events, articles = generate(SampleDataConfig(**SMALL_CHURN))
    assert _ages_days(events, articles).median() > 2 * _ages_days(*churn_world).median()


def test_churn_preset_is_the_settings_with_overrides_on_top():
    config = churn_config(users=7)
    assert config.users == 7 and all(getattr(config, k) == v for k, v in CHURN_SETTINGS.items())
    with pytest.raises(ValueError, match="listing_lifetime_days"):
        generate(SampleDataConfig(listing_lifetime_days=-1))


def test_cli_churn_flag_writes_the_churn_world(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("homefeed.sample.cli",))
    out = tmp_path / "churn"
    argv = ["sample-data", "--churn", "--out", str(out), *[f"--{k}={v}" for k, v in SMALL_CHURN.items()]]
    assert cli.main(argv) == 0
    events, articles = generate(churn_config(**SMALL_CHURN))
    pd.testing.assert_frame_equal(pd.read_parquet(out / "events.parquet"), events, check_dtype=False)
    pd.testing.assert_frame_equal(pd.read_parquet(out / "articles.parquet"), articles, check_dtype=False)
