"""The simulated users' response model (homefeed/sample/response.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from homefeed.sample.response import ResponseConfig, ResponseModel

ARTICLES = pd.DataFrame(
    {
        "article_id": [f"a{i}" for i in range(40)],
        "category": [f"c{i % 4}" for i in range(40)],
        "region": [f"r{i % 2}" for i in range(40)],
    }
)


def test_preferences_depend_only_on_seed_and_user():
    one, two = ResponseModel(ARTICLES), ResponseModel(ARTICLES)
    taste, home = one.preferences("u1")
    assert np.allclose(taste, two.preferences("u1")[0]) and home == two.preferences("u1")[1]
    assert taste.sum() == pytest.approx(1.0) and not np.allclose(taste, one.preferences("u2")[0])
    other_seed = ResponseModel(ARTICLES, ResponseConfig(seed=1))
    assert not np.allclose(taste, other_seed.preferences("u1")[0])


def test_probabilities_follow_taste_region_and_rank():
    model = ResponseModel(ARTICLES, ResponseConfig(base_rate=0.05, position_half_life=5))
    taste, home = model.preferences("u1")
    favourite = model.categories[int(np.argmax(taste))]
    liked = ARTICLES[(ARTICLES.category == favourite) & (ARTICLES.region == model.regions[home])].article_id.tolist()
    disliked = ARTICLES[ARTICLES.category != favourite].article_id.tolist()
    assert model.probabilities("u1", liked[:1])[0] > model.probabilities("u1", disliked[:1])[0]
    p = model.probabilities("u1", [liked[0], liked[0]])
    assert p[1] == pytest.approx(p[0] * 0.5 ** (1 / 5))  # rank 2 gets the position decay
    assert model.probabilities("u1", ["unknown"])[0] == pytest.approx(0.05)


def test_simulated_views_match_their_expectation():
    model = ResponseModel(ARTICLES, ResponseConfig(base_rate=0.2))
    t0 = pd.Timestamp("2026-01-01", tz="UTC")
    exposures = pd.DataFrame(
        {
            "user_id": [f"u{i}" for i in range(3000)],
            "served_at": t0,
            "article_ids": [[f"a{(i + j) % 40}" for j in range(10)] for i in range(3000)],
        }
    )
    views = model.simulate(exposures, seed=3)
    expected = model.expected(exposures).sum()
    assert abs(len(views) - expected) < 4 * np.sqrt(expected)
    assert not views.duplicated(["user_id", "article_id"]).any()
    assert (views.viewed_at >= t0).all() and (views.viewed_at <= t0 + pd.Timedelta(hours=1)).all()
    assert model.simulate(exposures, seed=3).equals(views)


def test_a_listing_shown_twice_is_opened_at_most_once():
    model = ResponseModel(ARTICLES, ResponseConfig(base_rate=0.5))
    t0 = pd.Timestamp("2026-01-01", tz="UTC")
    exposures = pd.DataFrame({"user_id": ["u1", "u1"], "served_at": [t0, t0], "article_ids": [["a1"], ["a1"]]})
    p = model.probabilities("u1", ["a1"])[0]
    assert model.expected(exposures)["u1"] == pytest.approx(1 - (1 - p) ** 2)
