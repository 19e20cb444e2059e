"""Product-type taste in the sample world (SampleDataConfig.type_taste): the signal a title carries
beyond category and region, present only when asked for."""

from __future__ import annotations

import pandas as pd
import pytest

from homefeed.sample.marketplace import CATEGORY_NOUNS, CHURN_SETTINGS, SampleDataConfig, churn_config, generate
from homefeed.sample.stats import title_types, type_repeat

SMALL = dict(users=400, articles=6000, days=7)


@pytest.fixture(scope="module")
def worlds():
    return {taste: generate(churn_config(**SMALL, type_taste=taste)) for taste in (0.0, 0.8)}


def test_without_taste_a_title_says_nothing_about_the_user_beyond_its_category(worlds):
    assert abs(type_repeat(*worlds[0.0])["lift"] - 1.0) < 0.1


def test_with_taste_users_keep_to_their_kinds_of_items(worlds):
    assert type_repeat(*worlds[0.8])["lift"] > 1.4


def test_taste_changes_which_listings_are_opened_not_the_listings(worlds):
    (_, plain_articles), (taste_events, taste_articles) = worlds[0.0], worlds[0.8]
    pd.testing.assert_frame_equal(plain_articles, taste_articles)
    nouns = {noun for nouns in CATEGORY_NOUNS.values() for noun in nouns}
    assert set(title_types(taste_articles["title"])) <= nouns
    assert taste_events.groupby(["user_id", "article_id"]).size().max() == 1  # still first views only


def test_the_churn_preset_carries_the_taste_and_the_default_world_does_not():
    assert CHURN_SETTINGS["type_taste"] > 0 and churn_config().type_taste == CHURN_SETTINGS["type_taste"]
    assert SampleDataConfig().type_taste == 0.0


@pytest.mark.parametrize("field, value", [("type_taste", 1.5), ("type_taste", -0.1), ("type_concentration", 0.0)])
def test_bad_taste_settings_name_the_setting(field, value):
    with pytest.raises(ValueError, match=field):
        generate(SampleDataConfig(users=10, articles=100, **{field: value}))


def test_type_repeat_counts_repeats_of_the_previous_type_in_a_category():
    articles = pd.DataFrame(
        {
            "article_id": ["a1", "a2", "a3", "a4"],
            "category": ["bikes", "bikes", "bikes", "toys"],
            "title": ["Barely used cargo bike", "Retro cargo bike", "Vintage road bike", "Small rc car"],
        }
    )
    at = pd.to_datetime(["2026-01-01T10:00Z", "2026-01-01T10:01Z", "2026-01-01T10:02Z", "2026-01-01T10:03Z"])
    events = pd.DataFrame({"user_id": ["u1"] * 4, "article_id": ["a1", "a4", "a2", "a3"], "viewed_at": at})
    # bikes: cargo, cargo (same as previous), road (not); the toy has no previous toy
    assert list(title_types(articles["title"])) == ["cargo bike", "cargo bike", "road bike", "rc car"]
    result = type_repeat(events, articles)
    assert result["views"] == 2 and result["same_type_as_previous"] == 0.5
