"""Product-type taste in the sample world (SampleDataConfig.type_taste): the signal a title carries
beyond category and region, present only when asked for."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from homefeed.sample_data import ADJECTIVES, CATEGORY_NOUNS, CHURN_SETTINGS, SampleDataConfig, churn_config, generate

SMALL = dict(users=400, articles=6000, days=7)


def _types(titles: pd.Series) -> pd.Series:
    """The noun of each "<adjective> <noun>" title (adjectives may have two words)."""
    pattern = "^(?:" + "|".join(ADJECTIVES) + ") "
    return titles.str.replace(pattern, "", regex=True)


def _type_repeat_lift(events: pd.DataFrame, articles: pd.DataFrame, seed: int = 0) -> float:
    """P(a view's type = the type of the user's previous view in that category), over the same
    probability when each view's type is replaced by a random one of its category's views (the
    independent reference): ~1 when the type is chosen regardless of the user."""
    a = articles.set_index("article_id")
    views = events.sort_values(["user_id", "viewed_at", "article_id"], kind="stable").reset_index(drop=True)
    views["category"] = a["category"].reindex(views["article_id"]).to_numpy()
    views["type"] = _types(a["title"]).reindex(views["article_id"]).to_numpy()
    rng = np.random.default_rng(seed)
    views["shuffled"] = views.groupby("category")["type"].transform(lambda s: rng.permutation(s.to_numpy()))
    previous = views.groupby(["user_id", "category"])["type"].shift(1)
    has_previous = previous.notna()
    same = (views["type"] == previous)[has_previous].mean()
    reference = (views["shuffled"] == previous)[has_previous].mean()
    return float(same / reference)


@pytest.fixture(scope="module")
def worlds():
    return {taste: generate(churn_config(**SMALL, type_taste=taste)) for taste in (0.0, 0.8)}


def test_without_taste_a_title_says_nothing_about_the_user_beyond_its_category(worlds):
    assert abs(_type_repeat_lift(*worlds[0.0]) - 1.0) < 0.1


def test_with_taste_users_keep_to_their_kinds_of_items(worlds):
    assert _type_repeat_lift(*worlds[0.8]) > 1.4


def test_taste_changes_which_listings_are_opened_not_the_listings(worlds):
    (_, plain_articles), (taste_events, taste_articles) = worlds[0.0], worlds[0.8]
    pd.testing.assert_frame_equal(plain_articles, taste_articles)
    nouns = {noun for nouns in CATEGORY_NOUNS.values() for noun in nouns}
    assert set(_types(taste_articles["title"])) <= nouns
    assert taste_events.groupby(["user_id", "article_id"]).size().max() == 1  # still first views only


def test_the_churn_preset_carries_the_taste_and_the_default_world_does_not():
    assert CHURN_SETTINGS["type_taste"] > 0 and churn_config().type_taste == CHURN_SETTINGS["type_taste"]
    assert SampleDataConfig().type_taste == 0.0


@pytest.mark.parametrize("field, value", [("type_taste", 1.5), ("type_taste", -0.1), ("type_concentration", 0.0)])
def test_bad_taste_settings_name_the_setting(field, value):
    with pytest.raises(ValueError, match=field):
        generate(SampleDataConfig(users=10, articles=100, **{field: value}))
