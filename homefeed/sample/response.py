"""Simulated users who answer what they are shown: the response model of an online experiment.

The users of the sample marketplace (homefeed/sample/marketplace.py) have a taste over categories
(a Dirichlet draw with the generator's `taste_concentration`) and a home region (where the
generator puts `home_region_share` of their sessions). Shown a list of listings, a user opens the
listing at rank r (1 first) with probability

    min(max_probability, base_rate * taste_appeal * region_appeal * 0.5 ** ((r - 1) / position_half_life))

where `taste_appeal` is n_categories * taste[category] and `region_appeal` the home region's
`home_region_share` (the others' `1 - home_region_share`) over its share of regions: both average
1 over a user's categories and regions, so a list that follows the user's taste is opened more
and one that ignores it averages `base_rate` per slot. A listing is opened at most once per user
(across every list that showed it), at a uniformly random time within `view_delay_s` of the first
answer that showed it.

Each user's preferences are drawn from a generator seeded by `seed` and the user id, so any user
id, in any order and any process, always gets the same ones. `expected` gives the exact expected
views of each user, which is what an experiment report's estimate is checked against.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from homefeed.sample.marketplace import SampleDataConfig


@dataclass(frozen=True)
class ResponseConfig:
    """How simulated users react to a list (see the module docstring)."""

    seed: int = 42
    base_rate: float = 0.03
    position_half_life: float = 10.0
    max_probability: float = 0.9
    view_delay_s: float = 3600.0

    def validate(self) -> None:
        if not 0 < self.base_rate <= 1 or not 0 < self.max_probability <= 1:
            raise ValueError(
                f"base_rate ({self.base_rate}) and max_probability ({self.max_probability}) must be in (0, 1]"
            )
        if self.position_half_life <= 0 or self.view_delay_s <= 0:
            raise ValueError(
                f"position_half_life ({self.position_half_life}) and view_delay_s ({self.view_delay_s}) must be > 0"
            )


class ResponseModel:
    """Who opens what. `articles`: article_id, category, region (the sample's articles.parquet)."""

    def __init__(
        self, articles: pd.DataFrame, config: ResponseConfig | None = None, world: SampleDataConfig | None = None
    ):
        self.config = config or ResponseConfig()
        self.config.validate()
        self.world = world or SampleDataConfig()
        missing = {"article_id", "category", "region"} - set(articles.columns)
        if missing:
            raise ValueError(f"the articles table lacks column(s) {', '.join(sorted(missing))}")
        self.categories = sorted(articles["category"].astype(str).unique())
        self.regions = sorted(articles["region"].astype(str).unique())
        category_code = {c: i for i, c in enumerate(self.categories)}
        region_code = {r: i for i, r in enumerate(self.regions)}
        self._category = dict(zip(articles["article_id"], articles["category"].astype(str).map(category_code)))
        self._region = dict(zip(articles["article_id"], articles["region"].astype(str).map(region_code)))
        n_regions = len(self.regions)
        share = self.world.home_region_share
        self._home_appeal = share * n_regions if n_regions > 1 else 1.0
        self._away_appeal = (1 - share) * n_regions / (n_regions - 1) if n_regions > 1 else 1.0

    def preferences(self, user_id: str) -> tuple[np.ndarray, int]:
        """The user's taste over `self.categories` (sums to 1) and home region (index into `self.regions`)."""
        digest = hashlib.sha256(f"{self.config.seed}\x1f{user_id}".encode()).digest()
        rng = np.random.default_rng(int.from_bytes(digest[:8], "big"))
        taste = rng.dirichlet(np.full(len(self.categories), self.world.taste_concentration))
        return taste, int(rng.integers(len(self.regions)))

    def probabilities(self, user_id: str, article_ids: list[str]) -> np.ndarray:
        """P(open) of each listing of one list shown to `user_id` (rank = position + 1): `float [len]`.
        A listing missing from the articles table has average appeal."""
        taste, home = self.preferences(user_id)
        categories = np.fromiter((self._category.get(a, -1) for a in article_ids), np.int64, len(article_ids))
        regions = np.fromiter((self._region.get(a, -1) for a in article_ids), np.int64, len(article_ids))
        known = categories >= 0
        region_appeal = np.where(regions == home, self._home_appeal, self._away_appeal)
        appeal = np.where(known, len(self.categories) * taste[np.where(known, categories, 0)] * region_appeal, 1.0)
        position = 0.5 ** (np.arange(len(article_ids)) / self.config.position_half_life)
        return np.minimum(self.config.max_probability, self.config.base_rate * appeal * position)

    def _user_chances(self, user_id: str, lists: list[list[str]]) -> dict[str, float]:
        """Per listing shown to the user: P(opened at least once) over every list that showed it."""
        unseen: dict[str, float] = {}
        for ids in lists:
            for article, p in zip(ids, self.probabilities(user_id, ids)):
                unseen[article] = unseen.get(article, 1.0) * (1.0 - p)
        return {article: 1.0 - q for article, q in unseen.items()}

    def expected(self, exposures: pd.DataFrame) -> pd.Series:
        """Expected views per user (index user_id) of `exposures` (user_id, article_ids: list per answer)."""
        out = {}
        for user, group in exposures.groupby("user_id", sort=False):
            out[user] = sum(self._user_chances(user, list(group["article_ids"])).values())
        return pd.Series(out, name="expected_views", dtype=np.float64)

    def simulate(self, exposures: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
        """Views (user_id, article_id, viewed_at) the users make after `exposures` (user_id, served_at
        timestamp, article_ids: list per answer, best first); `seed` draws the outcomes."""
        rng = np.random.default_rng(seed)
        users, articles, times = [], [], []
        exposures = exposures.sort_values("served_at", kind="stable")
        for user, group in exposures.groupby("user_id", sort=True):
            lists = list(group["article_ids"])
            chances = self._user_chances(user, lists)
            first_shown: dict[str, pd.Timestamp] = {}
            for ids, served_at in zip(lists, group["served_at"]):
                for article in ids:
                    first_shown.setdefault(article, served_at)
            names = list(chances)
            opened = rng.random(len(names)) < np.fromiter(chances.values(), np.float64, len(names))
            delays = rng.uniform(0, self.config.view_delay_s, len(names))
            for article, hit, delay in zip(names, opened, delays):
                if hit:
                    users.append(user)
                    articles.append(article)
                    times.append(first_shown[article] + pd.Timedelta(seconds=float(delay)))
        return pd.DataFrame(
            {
                "user_id": users,
                "article_id": articles,
                "viewed_at": pd.to_datetime(pd.Series(times, dtype=object), utc=True),
            }
        )


def read_exposure_lists(directory: str | os.PathLike) -> pd.DataFrame:
    """user_id, served_at, article_ids (best first) of the exposure files in `directory` (exposures-*.parquet,
    serving/experiments/exposures.py), answers chosen with `?arm=` left out."""
    import pyarrow.parquet as pq

    paths = sorted(Path(directory).glob("exposures-*.parquet"))
    if not paths:
        raise FileNotFoundError(f"no exposures-*.parquet files in {directory}")
    frames = [pq.read_table(p, columns=["user_id", "served_at", "overridden", "candidates"]).to_pandas() for p in paths]
    frame = pd.concat(frames, ignore_index=True)
    frame = frame[~frame["overridden"]]
    return pd.DataFrame(
        {
            "user_id": frame["user_id"].to_numpy(),
            "served_at": pd.to_datetime(frame["served_at"], utc=True).to_numpy(),
            "article_ids": [[c["article_id"] for c in items] for items in frame["candidates"]],
        }
    )
