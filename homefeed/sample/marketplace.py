"""Simulated second-hand marketplace feed: the `events` and `articles` input tables.

The simulated world, kept small enough for a demo yet shaped like a real feed:

* 12 categories (furniture, bikes, ...) and 8 regions. Each article is a listing with a category,
  a region, a title ("Vintage oak desk"), a `created_at` spread over the window (a share listed
  before it) and a status: about 15% end up `sold` and a few `deleted`; a listing gets no views
  after it was sold or deleted.
* Each user has a latent taste (a Dirichlet draw over categories, so most users care about two or
  three) and a home region whose listings they mostly browse.
* Users browse in sessions (a few views, about a minute apart, mostly in the evening). A session
  keeps to one region and tends to stay in one category, so the next view is predictable from the
  last few: the short-term structure a sequence model can learn.
* Which listing is opened depends on its quality (Zipf-like: a few listings are very popular) and
  its age (listings are viewed mostly in the days after they are listed).
* Optionally (`type_taste` > 0; on in the `--churn` preset) users also care about the kind of item
  within a category, the title's noun: one wants a cargo bike or a kids bike, not any bike; another
  opens espresso machines and knife sets, never toasters. Each user has a preference over each
  category's product types (a Dirichlet draw, `type_concentration`), and a view within a category
  favours listings of the types they prefer. This is the signal a title can carry beyond category
  and region: without it (`type_taste` 0, the default) a title is a random adjective and a noun
  drawn uniformly within its category, and no model can place a new listing better from its title
  than from its category and region.
* A view is the first time a user opens a listing: each (user, article) pair occurs at most once,
  so the quality protocol's "exclude already-viewed articles" never hides a target. In a world
  this small, active users open most of what their region offers in a category; they then look
  further afield, then at other categories they like (so loyalty to region and category is strong
  but not absolute: on the defaults the median user's top region has ~60% of their views, and
  consecutive views share a category about twice as often as their taste alone explains).

Everything is drawn from one `numpy.random.Generator` seeded by `SampleDataConfig.seed`, and the
time window ends at a fixed instant (`SampleDataConfig.end`), never the wall clock, so a seed
always gives the very same tables.

Output schema (Parquet, see `write_input_tables`):
  events.parquet:   user_id string, article_id string, viewed_at timestamp[us, tz=UTC]
  articles.parquet: article_id, title, category, region string, created_at timestamp[us, tz=UTC],
                    status string (active / sold / deleted), removed_at timestamp[us, tz=UTC]
                    (when it was sold or deleted; null while up)
  searches.parquet: user_id, query string, searched_at timestamp[us, tz=UTC]
                    (homefeed/sample/searches.py: queries for what the user is about to view)
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from homefeed import features
from homefeed.sample import searches as sample_searches
from homefeed.sample.world import (
    ADJECTIVES,
    CATEGORIES,
    CATEGORY_NOUNS,
    REGIONS,
    TYPE_OFFSETS,
    TYPES,
)

LOG = logging.getLogger(__name__)

EVENTS_FILE = "events.parquet"
ARTICLES_FILE = "articles.parquet"
DATASET_FILE = "dataset.json"  # what was written and how: counts, time span, source, config

_TYPE_STREAM = 104_729  # mixed into the seed: the type taste's own generator

# Relative share of sessions starting in each hour of the day (UTC): quiet nights, a lunch bump,
# a busy evening.
HOUR_WEIGHTS = np.array([2, 1, 1, 1, 1, 2, 3, 5, 6, 6, 6, 7, 9, 8, 6, 6, 7, 8, 10, 12, 13, 12, 8, 4], dtype=np.float64)

SECONDS_PER_DAY = 86_400
# Article sampling weights are precomputed per time bucket; the buckets grow when the
# (buckets x articles) table would exceed this many cells, which bounds memory for huge worlds.
_MAX_WEIGHT_CELLS = 20_000_000
# Draws for a view, re-drawn while it repeats a (user, article) pair: first within the session's
# category, then in other categories of the user's taste, then anywhere.
_REDRAWS_IN_CATEGORY = 6
_REDRAWS_IN_TASTE = 6
_REDRAWS_ANYWHERE = 2


@dataclass
class SampleDataConfig:
    """Size and shape of the simulated marketplace. Defaults: a demo that runs end to end in minutes."""

    users: int = 1000
    articles: int = 2000
    days: int = 30
    seed: int = 42
    # The window is the `days` days ending here (exclusive). Fixed, so output never depends on today.
    end: str = "2026-06-01T00:00:00Z"
    # Mean views per user before de-duplication (heavy-tailed: log-normal above the minimum).
    views_per_user: float = 50.0
    min_views_per_user: int = 3
    views_per_user_sigma: float = 1.0
    # Sessions: mean length in views, mean gap between views, chance the next view keeps the category.
    session_length: float = 6.0
    view_gap_seconds: float = 45.0
    category_stickiness: float = 0.85
    # Dirichlet concentration of user tastes over categories: smaller means narrower tastes.
    taste_concentration: float = 0.3
    # Share of sessions in the user's home region (the rest go to another region); within a session
    # a listing from another region is `other_region_weight` times as likely as a local one.
    home_region_share: float = 0.8
    other_region_weight: float = 0.01
    # Listing quality ~ rank ** -popularity_exponent over a random ranking (Zipf-like).
    popularity_exponent: float = 1.0
    # Attention decays as exp(-age / recency_days), plus a small floor for old listings.
    recency_days: float = 4.0
    stale_weight: float = 0.02
    # Share of listings created before the window (spread over `days` days before it).
    prelisted_share: float = 0.2
    sold_share: float = 0.15
    deleted_share: float = 0.02
    # Time resolution of the article choice; a listing becomes viewable from the next bucket on.
    bucket_hours: int = 6
    # Churn: when > 0, every listing (but the three anchors) is taken down after a lifetime drawn
    # from an exponential distribution with this mean, in days (status `sold`, or `deleted` for a
    # `deleted_share` of them; still `active` if that is after the window). 0: listings stay until
    # sold or deleted as above. See `churn_config` for the fresh-content preset (`--churn`).
    listing_lifetime_days: float = 0.0
    # Product-type taste (see the module docstring): this share of the views within a category
    # look for one type (its title noun), drawn from the user's preference over the category's
    # types, and open a listing of that type (any region, local ones first as always; the
    # category's listings when none of the type is up). 0: no taste, titles carry no signal beyond
    # category and region, and the output is exactly that of a generator without the setting.
    type_taste: float = 0.0
    # Dirichlet concentration of each user's preference over a category's types: smaller, narrower.
    type_concentration: float = 0.3

    def validate(self) -> None:
        """Raise ValueError naming the first setting that cannot work."""

        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ValueError(f"SampleDataConfig: {message}")

        need(self.users >= 1, f"users must be >= 1, got {self.users}")
        need(self.articles >= 50, f"articles must be >= 50 (a smaller world is not a feed), got {self.articles}")
        need(self.days >= 1, f"days must be >= 1, got {self.days}")
        need(self.min_views_per_user >= 1, f"min_views_per_user must be >= 1, got {self.min_views_per_user}")
        need(
            self.views_per_user > self.min_views_per_user,
            f"views_per_user ({self.views_per_user}) must exceed min_views_per_user ({self.min_views_per_user})",
        )
        need(self.session_length >= 1, f"session_length must be >= 1, got {self.session_length}")
        need(self.view_gap_seconds > 0, f"view_gap_seconds must be > 0, got {self.view_gap_seconds}")
        for name in (
            "category_stickiness",
            "home_region_share",
            "other_region_weight",
            "prelisted_share",
            "sold_share",
            "deleted_share",
            "type_taste",
        ):
            value = getattr(self, name)
            need(0.0 <= value <= 1.0, f"{name} must be in [0, 1], got {value}")
        need(self.sold_share + self.deleted_share <= 0.9, "sold_share + deleted_share must be <= 0.9")
        need(self.taste_concentration > 0, f"taste_concentration must be > 0, got {self.taste_concentration}")
        need(self.type_concentration > 0, f"type_concentration must be > 0, got {self.type_concentration}")
        need(self.recency_days > 0, f"recency_days must be > 0, got {self.recency_days}")
        need(self.stale_weight >= 0, f"stale_weight must be >= 0, got {self.stale_weight}")
        need(self.popularity_exponent >= 0, f"popularity_exponent must be >= 0, got {self.popularity_exponent}")
        need(
            self.listing_lifetime_days >= 0,
            f"listing_lifetime_days must be >= 0 (0: no churn), got {self.listing_lifetime_days}",
        )
        need(
            1 <= self.bucket_hours <= 24 * self.days,
            f"bucket_hours must be in [1, 24*days], got {self.bucket_hours}",
        )
        _parse_end(self.end)


def _parse_end(end: str) -> pd.Timestamp:
    try:
        stamp = pd.Timestamp(end)
    except ValueError as error:
        raise ValueError(f"SampleDataConfig: end {end!r} is not a timestamp: {error}") from None
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _ids(prefix: str, count: int) -> np.ndarray:
    """`count` ids like u000001, zero-padded to a fixed width so text order = numeric order."""
    width = max(6, len(str(count)))
    return np.array([f"{prefix}{i:0{width}d}" for i in range(1, count + 1)], dtype=object)


def _timestamps(start: pd.Timestamp, seconds: np.ndarray) -> pd.Series:
    """Seconds after `start` as a `datetime64[us, UTC]` series."""
    micros = start.value // 1000 + np.round(seconds * 1e6).astype(np.int64)
    return pd.Series(micros.astype("datetime64[us]")).dt.tz_localize("UTC")


# ---------------------------------------------------------------------------------------------
# Articles
# ---------------------------------------------------------------------------------------------
@dataclass
class _Articles:
    """The article side of the world, as arrays of length n (times in seconds from window start)."""

    category: np.ndarray  # int, index into CATEGORIES
    region: np.ndarray  # int, index into REGIONS
    created: np.ndarray  # float seconds; negative = listed before the window
    removed: np.ndarray  # float seconds when sold/deleted; +inf while active
    status: np.ndarray  # int, index into features.ARTICLE_STATUSES
    quality: np.ndarray  # float > 0, heavy-tailed
    title: np.ndarray  # object (str)
    kind: np.ndarray  # int, the title noun's index in TYPES (the product type)
    anchors: np.ndarray  # a few always-available listings: the last-resort fallback


def _simulate_articles(config: SampleDataConfig, rng: np.random.Generator) -> _Articles:
    n = config.articles
    window = config.days * SECONDS_PER_DAY
    category_share = rng.dirichlet(np.full(len(CATEGORIES), 5.0))  # some categories are busier
    region_share = 1.0 / np.sqrt(np.arange(1, len(REGIONS) + 1))  # big cities and small towns
    region_share /= region_share.sum()
    category = rng.choice(len(CATEGORIES), size=n, p=category_share)
    region = rng.choice(len(REGIONS), size=n, p=region_share)

    n_pre = min(n, max(3, round(config.prelisted_share * n)))
    prelisted = np.zeros(n, dtype=bool)
    prelisted[rng.choice(n, size=n_pre, replace=False)] = True
    created = np.where(prelisted, -rng.random(n) * window, rng.random(n) * window)

    ranks = rng.permutation(n) + 1
    quality = ranks.astype(np.float64) ** -config.popularity_exponent

    draw = rng.random(n)
    status = np.zeros(n, dtype=np.int64)  # active
    status[draw < config.sold_share] = 1  # sold
    status[(draw >= config.sold_share) & (draw < config.sold_share + config.deleted_share)] = 2  # deleted
    anchors = np.flatnonzero(prelisted)[:3]  # always active, so every moment has listings to open
    status[anchors] = 0
    listed_from = np.maximum(created, 0.0)
    removed = np.where(status > 0, listed_from + rng.random(n) * (window - listed_from), np.inf)
    if config.listing_lifetime_days > 0:  # churn: every listing goes after about its lifetime
        taken_down = listed_from + rng.exponential(config.listing_lifetime_days * SECONDS_PER_DAY, size=n)
        gone = taken_down < window
        deleted = draw < config.deleted_share
        status = np.where(gone, np.where(deleted, 2, 1), 0)
        removed = np.where(gone, taken_down, np.inf)
        status[anchors], removed[anchors] = 0, np.inf

    adjective = rng.integers(len(ADJECTIVES), size=n)
    noun_draw = rng.random(n)
    sizes = np.array([len(CATEGORY_NOUNS[c]) for c in CATEGORIES])
    kind = TYPE_OFFSETS[category] + (noun_draw * sizes[category]).astype(np.int64)
    title = np.array([f"{ADJECTIVES[a]} {TYPES[t]}" for a, t in zip(adjective, kind)], dtype=object)
    return _Articles(category, region, created, removed, status, quality, title, kind, anchors)


# ---------------------------------------------------------------------------------------------
# Choosing an article for each view
# ---------------------------------------------------------------------------------------------
class _ArticleSampler:
    """Draws articles for views, weighted by quality x recency x availability x region match.

    For a pool of n articles and the R distinct time buckets among the views being drawn, the
    normalised cumulative weights of each bucket are shifted by the bucket's row number and laid
    end to end, so one `searchsorted` on the flat `[R * n]` array draws an article for every view.
    """

    def __init__(self, config: SampleDataConfig, articles: _Articles) -> None:
        window = config.days * SECONDS_PER_DAY
        bucket = config.bucket_hours * 3600
        # Grow buckets for huge worlds so a pool's table stays within _MAX_WEIGHT_CELLS.
        min_bucket = math.ceil(window * config.articles / _MAX_WEIGHT_CELLS / 3600) * 3600
        self.bucket_seconds = max(bucket, min_bucket)
        self.n_buckets = math.ceil(window / self.bucket_seconds)
        self.articles = articles
        self.recency_seconds = config.recency_days * SECONDS_PER_DAY
        self.stale_weight = config.stale_weight
        self.other_region_weight = config.other_region_weight
        self.by_category = [np.flatnonzero(articles.category == c) for c in range(len(CATEGORIES))]
        self.by_type = [np.flatnonzero(articles.kind == t) for t in range(len(TYPES))]
        self.everything = np.arange(len(articles.category))

    def bucket_of(self, seconds: np.ndarray) -> np.ndarray:
        return np.minimum((seconds // self.bucket_seconds).astype(np.int64), self.n_buckets - 1)

    def _weights(self, pool: np.ndarray, buckets: np.ndarray, region: int) -> np.ndarray:
        """`[len(buckets), len(pool)]` weights; zero where a listing is not yet listed or already gone."""
        a = self.articles
        starts = buckets.astype(np.float64)[:, None] * self.bucket_seconds
        created = a.created[pool][None, :]
        age = starts + self.bucket_seconds / 2 - created
        recency = np.exp(-age / self.recency_seconds) + self.stale_weight
        available = (created <= starts) & (a.removed[pool][None, :] >= starts + self.bucket_seconds)
        local = np.where(a.region[pool] == region, 1.0, self.other_region_weight)[None, :]
        return np.where(available, a.quality[pool][None, :] * local * recency, 0.0)

    def draw(self, pool: np.ndarray, region: int, buckets: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Article index for each view (bucket, uniform u in [0, 1)); -1 where nothing is available."""
        rows, row = np.unique(buckets, return_inverse=True)
        weights = self._weights(pool, rows, region)
        total = weights.sum(axis=1)
        nonempty = total > 0
        cumulative = np.cumsum(weights, axis=1) / np.where(nonempty, total, 1.0)[:, None]
        flat = (cumulative + np.arange(len(rows), dtype=np.float64)[:, None]).ravel()
        n = len(pool)
        position = np.searchsorted(flat, row + u, side="right") - row * n
        # Rounding can leave a row's last cumulative value a hair under 1: never step past the
        # row's last listing with a positive weight.
        last_positive = n - 1 - np.argmax(weights[:, ::-1] > 0, axis=1)
        position = np.clip(np.minimum(position, last_positive[row]), 0, n - 1)
        return np.where(nonempty[row], pool[position], -1)

    def draw_views(
        self,
        category: np.ndarray | None,
        region: np.ndarray,
        buckets: np.ndarray,
        rng: np.random.Generator,
        pools: list[np.ndarray] | None = None,
    ) -> np.ndarray:
        """One article per view, from the view's category (None: any category; with `pools`, the
        view's pool, e.g. `by_type`); -1 if none available."""
        result = np.full(len(region), -1, dtype=np.int64)
        u = rng.random(len(region))
        n_regions = len(REGIONS)
        key = region if category is None else category * n_regions + region
        order = np.argsort(key, kind="stable")
        bounds = np.flatnonzero(np.diff(key[order])) + 1
        for views in np.split(order, bounds):
            if len(views) == 0:
                continue
            k = int(key[views[0]])
            pool = self.everything if category is None else (pools or self.by_category)[k // n_regions]
            if len(pool):
                result[views] = self.draw(pool, k % n_regions, buckets[views], u[views])
        return result


# ---------------------------------------------------------------------------------------------
# Users and their views
# ---------------------------------------------------------------------------------------------
def _simulate_views(
    config: SampleDataConfig, articles: _Articles, rng: np.random.Generator, latent: dict[str, Any] | None = None
):
    """Return (user, seconds, article) arrays, sorted by user then time, one row per view.

    `latent`: when given, receives the users' drawn preferences (`taste`, `home`,
    `type_preference`; homefeed/sample/oracle.py); the draws are the same either way."""
    window = config.days * SECONDS_PER_DAY
    n_users, n_categories, n_regions = config.users, len(CATEGORIES), len(REGIONS)

    # Tastes lean towards the categories with more listings; home regions follow where listings are.
    category_share = np.bincount(articles.category, minlength=n_categories) / len(articles.category)
    region_share = np.bincount(articles.region, minlength=n_regions) / len(articles.region)
    taste = rng.dirichlet(config.taste_concentration * n_categories * (category_share + 1e-3), size=n_users)
    home = rng.choice(n_regions, size=n_users, p=region_share)
    if latent is not None:
        latent.update(taste=taste, home=home)

    extra_mean = config.views_per_user - config.min_views_per_user
    mu = math.log(extra_mean) - config.views_per_user_sigma**2 / 2
    extra = np.floor(rng.lognormal(mu, config.views_per_user_sigma, size=n_users))
    counts = config.min_views_per_user + np.minimum(extra, 20 * config.views_per_user).astype(np.int64)
    user = np.repeat(np.arange(n_users), counts)
    total = len(user)
    first_of_user = np.zeros(total, dtype=bool)
    first_of_user[np.cumsum(counts)[:-1]] = True
    first_of_user[0] = True

    # Sessions: a geometric number of views each; every session has a start time and one region.
    new_session = first_of_user | (rng.random(total) < 1.0 / config.session_length)
    session = np.cumsum(new_session) - 1
    n_sessions = session[-1] + 1
    session_user = user[new_session]
    day = rng.integers(config.days, size=n_sessions)
    hour = rng.choice(24, size=n_sessions, p=HOUR_WEIGHTS / HOUR_WEIGHTS.sum())
    session_start = day * SECONDS_PER_DAY + hour * 3600 + rng.random(n_sessions) * 3600
    away = rng.random(n_sessions) >= config.home_region_share
    other = (home[session_user] + rng.integers(1, n_regions, size=n_sessions)) % n_regions
    session_region = np.where(away, other, home[session_user])

    # Times inside a session: exponential gaps; a session running past the window end is moved back.
    gaps = 1.0 + rng.exponential(config.view_gap_seconds, size=total)
    gaps[new_session] = 0.0
    elapsed = np.cumsum(gaps)
    elapsed -= np.repeat(elapsed[new_session], np.bincount(session))
    seconds = session_start[session] + elapsed
    session_last = np.maximum.reduceat(seconds, np.flatnonzero(new_session))
    overrun = np.maximum(session_last - (window - 1.0), 0.0)
    seconds = np.maximum(seconds - overrun[session], 0.0)

    # Categories: a session starts in a category drawn from the user's taste and at each view keeps
    # it with probability `category_stickiness`, else re-draws from the taste (carried forward).
    cumulative_taste = np.cumsum(taste, axis=1)
    fresh = _draw_categories(cumulative_taste, user, rng)
    switch = new_session | (rng.random(total) >= config.category_stickiness)
    last_switch = np.maximum.accumulate(np.where(switch, np.arange(total), 0))
    category = fresh[last_switch]
    region = session_region[session]

    # A view is a first view: each (user, article) pair occurs once. Repeats are re-drawn from the
    # same distribution (rejection sampling = drawing among the listings the user has not opened
    # yet). A user who has opened most of what a category offers moves on to another category of
    # their taste, and after that to anything; what still repeats is dropped.
    sampler = _ArticleSampler(config, articles)
    buckets = sampler.bucket_of(seconds)
    order = np.lexsort((seconds, user))
    user, seconds, category = user[order], seconds[order], category[order]
    region, buckets = region[order], buckets[order]
    article = np.full(total, -1, dtype=np.int64)
    n_articles = len(articles.category)
    sought, type_rng = _sought_types(config, user, category, rng_seed=config.seed, latent=latent)
    for attempt in range(_REDRAWS_IN_CATEGORY + _REDRAWS_IN_TASTE + _REDRAWS_ANYWHERE):
        in_category = attempt < _REDRAWS_IN_CATEGORY
        index = np.flatnonzero((article < 0) | _repeated(user, article, n_articles))
        if len(index) == 0:
            break
        LOG.debug("article draw %d: %d views", attempt, len(index))
        if attempt < _REDRAWS_IN_CATEGORY + _REDRAWS_IN_TASTE:
            if attempt >= _REDRAWS_IN_CATEGORY:
                category[index] = _draw_categories(cumulative_taste, user[index], rng)
            article[index] = sampler.draw_views(category[index], region[index], buckets[index], rng)
            if in_category and sought is not None and type_rng is not None:  # both or neither
                typed = index[sought[index] >= 0]
                found = sampler.draw_views(sought[typed], region[typed], buckets[typed], type_rng, sampler.by_type)
                article[typed] = np.where(found >= 0, found, article[typed])
            index = index[article[index] < 0]  # nothing of the category available then
        if len(index):
            article[index] = sampler.draw_views(None, region[index], buckets[index], rng)
    keep = (article >= 0) & ~_repeated(user, article, n_articles)
    LOG.debug("dropped %d views that found no unopened listing", int((~keep).sum()))
    user, seconds, article = user[keep], seconds[keep], article[keep]

    return _top_up(config, user, seconds, article, articles, n_users)


def _sought_types(
    config: SampleDataConfig,
    user: np.ndarray,
    category: np.ndarray,
    rng_seed: int,
    latent: dict[str, Any] | None = None,
) -> tuple[np.ndarray | None, np.random.Generator | None]:
    """Per view, the product type (index into TYPES) it looks for, -1 for none, drawn from each
    user's preference over the view's category's types; and the taste's own generator (so the
    other draws stay as they are). `(None, None)` without taste (`type_taste` 0). `latent` receives
    the preferences as `type_preference` `[n_users, len(TYPES)]` (each category's part sums to 1)."""
    if config.type_taste <= 0:
        return None, None
    rng = np.random.default_rng([rng_seed, _TYPE_STREAM])
    n_users = int(user.max()) + 1 if len(user) else 0
    sought = np.full(len(user), -1, dtype=np.int64)
    wants = rng.random(len(user)) < config.type_taste
    u = rng.random(len(user))
    if latent is not None:
        latent["type_preference"] = np.zeros((config.users, len(TYPES)))
    for c, nouns in enumerate(CATEGORY_NOUNS.values()):
        preference = rng.dirichlet(np.full(len(nouns), config.type_concentration), size=n_users)
        if latent is not None:
            latent["type_preference"][:n_users, TYPE_OFFSETS[c] : TYPE_OFFSETS[c] + len(nouns)] = preference
        views = np.flatnonzero(wants & (category == c))
        drawn = (np.cumsum(preference, axis=1)[user[views]] < u[views, None]).sum(axis=1)
        sought[views] = TYPE_OFFSETS[c] + np.minimum(drawn, len(nouns) - 1)
    return sought, rng


def _draw_categories(cumulative_taste: np.ndarray, user: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A category per entry of `user`, drawn from that user's taste (`[n_users, n_categories]` cumsum)."""
    drawn = (cumulative_taste[user] < rng.random(len(user))[:, None]).sum(axis=1)
    return np.minimum(drawn, cumulative_taste.shape[1] - 1)


def _repeated(user: np.ndarray, article: np.ndarray, n_articles: int) -> np.ndarray:
    """True for every view whose (user, article) pair already occurred earlier in array order."""
    pair = user.astype(np.int64) * (n_articles + 1) + article
    order = np.argsort(pair, kind="stable")
    later = np.zeros(len(pair), dtype=bool)
    later[order[1:]] = pair[order[1:]] == pair[order[:-1]]
    return later


def _top_up(config, user, seconds, article, articles: _Articles, n_users: int):
    """Give every user at least `min_views_per_user` views (tiny worlds only; keeps the guarantee).

    Only reachable when re-drawing ran out of unopened listings for a user. The missing views go
    to the best listings the user has not opened, a minute apart after their last view (or when
    the listing appears, if later), never after it is gone or the window ends.
    """
    counts = np.bincount(user, minlength=n_users)
    short = np.flatnonzero(counts < config.min_views_per_user)
    if len(short) == 0:
        return user, seconds, article
    LOG.debug("topping up %d users below %d views", len(short), config.min_views_per_user)
    window_end = config.days * SECONDS_PER_DAY - 1.0
    by_quality = np.argsort(-articles.quality, kind="stable")
    extra_user, extra_seconds, extra_article = [], [], []
    for u in short:
        mine = user == u
        seen = set(article[mine].tolist())
        at = float(seconds[mine].max()) if mine.any() else 0.0
        need = config.min_views_per_user - int(counts[u])
        for a in by_quality:
            if need == 0:
                break
            when = max(at + 60.0, float(articles.created[a]) + 1.0)
            if a in seen or when >= min(float(articles.removed[a]), window_end):
                continue
            extra_user.append(u)
            extra_seconds.append(when)
            extra_article.append(a)
            need -= 1
    user = np.concatenate([user, np.array(extra_user, dtype=user.dtype)])
    seconds = np.concatenate([seconds, np.array(extra_seconds, dtype=np.float64)])
    article = np.concatenate([article, np.array(extra_article, dtype=article.dtype)])
    order = np.lexsort((seconds, user))
    return user[order], seconds[order], article[order]


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------
# The fresh-content preset (`candidates sample-data --churn`): listings live about a day and most
# views go to listings from the last hours, as in a feed of classifieds or news. The window is
# shorter and the stream of new listings denser, so a day still holds a few hundred of them.
CHURN_SETTINGS: dict[str, Any] = {
    "days": 14,
    "articles": 8000,
    "listing_lifetime_days": 1.0,
    "recency_days": 0.5,
    "stale_weight": 0.01,
    "prelisted_share": 0.0,
    "bucket_hours": 2,
    # People look for kinds of things within a category (a cargo bike, not any bike): the signal a
    # title carries beyond category and region (see the module docstring and type_taste).
    "type_taste": 0.8,
}


def churn_config(**overrides: Any) -> SampleDataConfig:
    """`SampleDataConfig` with `CHURN_SETTINGS`, then `overrides` (e.g. users, seed) on top."""
    return SampleDataConfig(**{**CHURN_SETTINGS, **overrides})


def generate(
    config: SampleDataConfig | None = None, latent: dict[str, Any] | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Simulate the marketplace and return `(events, articles)`.

    `latent`: when given, receives what the generator knows and the tables do not hold (the users'
    preferences, each listing's quality and type, the window's start): homefeed/sample/oracle.py.

    Returns:
      events: `[n_views, 3]` user_id, article_id (str), viewed_at (datetime64[us, UTC]), sorted by
        viewed_at then user_id; every user has at least `min_views_per_user` views, each
        (user_id, article_id) pair occurs once, and viewed_at is after the article's created_at.
      articles: `[config.articles, 7]` article_id, title, category, region, status (str), created_at,
        removed_at (datetime64[us, UTC]; removed_at NaT while the listing is up), sorted by article_id.

    Raises:
      ValueError: a config setting is out of range (see `SampleDataConfig.validate`).
    """
    config = config or SampleDataConfig()
    config.validate()
    started = time.perf_counter()
    rng = np.random.default_rng(config.seed)
    end = _parse_end(config.end)
    start = end - pd.Timedelta(days=config.days)

    world = _simulate_articles(config, rng)
    user, seconds, article = _simulate_views(config, world, rng, latent)
    user_ids = _ids("u", config.users)
    article_ids = _ids("a", config.articles)
    if latent is not None:
        latent.update(world=world, start=start, user_ids=user_ids, article_ids=article_ids)
    events = pd.DataFrame(
        {
            "user_id": pd.array(user_ids[user], dtype="str"),
            "article_id": pd.array(article_ids[article], dtype="str"),
            "viewed_at": _timestamps(start, seconds),
        }
    )
    events = events.sort_values(["viewed_at", "user_id"], kind="stable", ignore_index=True)
    articles = pd.DataFrame(
        {
            "article_id": pd.array(article_ids, dtype="str"),
            "title": pd.array(world.title, dtype="str"),
            "category": pd.array(np.array(CATEGORIES, dtype=object)[world.category], dtype="str"),
            "region": pd.array(np.array(REGIONS, dtype=object)[world.region], dtype="str"),
            "created_at": _timestamps(start, world.created),
            "status": pd.array(np.array(features.ARTICLE_STATUSES, dtype=object)[world.status], dtype="str"),
            # The true moment each listing was sold or deleted (NaT while it is up).
            "removed_at": _timestamps(start, np.where(np.isfinite(world.removed), world.removed, 0.0)).where(
                np.isfinite(world.removed)
            ),
        }
    )
    LOG.info(
        "simulated %d views by %d users of %d articles over %d days in %.2fs",
        len(events),
        config.users,
        config.articles,
        config.days,
        time.perf_counter() - started,
    )
    return events, articles


# Arrow types of the input tables as written to Parquet (what the extract stage loads).
_ARROW_TYPES = {
    "user_id": "string",
    "article_id": "string",
    "viewed_at": "timestamp",
    "title": "string",
    "category": "string",
    "region": "string",
    "created_at": "timestamp",
    "status": "string",
    "removed_at": "timestamp",
}


def _arrow_table(frame: pd.DataFrame, name: str):
    import pyarrow as pa

    arrays, fields = [], []
    for column in frame.columns:
        kind = _ARROW_TYPES.get(column)
        if kind is None:
            raise ValueError(f"{name}: no Parquet type known for column {column!r}")
        arrow_type = pa.timestamp("us", tz="UTC") if kind == "timestamp" else pa.string()
        values = frame[column]
        if kind == "timestamp":
            values = values.astype("datetime64[us, UTC]")
        else:
            values = values.astype(object).where(values.notna(), None)
        arrays.append(pa.array(values, type=arrow_type, from_pandas=True))
        fields.append(pa.field(column, arrow_type))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def write_input_tables(
    events: pd.DataFrame,
    articles: pd.DataFrame,
    out_dir: str | os.PathLike,
    source: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write `events.parquet`, `articles.parquet` and `dataset.json` under `out_dir`; return the summary.

    Both Parquet files are written under temporary names and renamed into place, so a crash never
    leaves a half-written table under the real name. Strings are Arrow `string`, times
    `timestamp[us, tz=UTC]`. `source` (e.g. the generator config) is recorded in `dataset.json`.
    """
    import pyarrow.parquet as pq

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tables = {EVENTS_FILE: _arrow_table(events, "events"), ARTICLES_FILE: _arrow_table(articles, "articles")}
    for file_name, table in tables.items():
        pq.write_table(table, out / f".{file_name}.tmp")
    for file_name in tables:
        os.replace(out / f".{file_name}.tmp", out / file_name)

    summary = summarise(events, articles)
    summary.update(
        {
            "events_path": str(out / EVENTS_FILE),
            "articles_path": str(out / ARTICLES_FILE),
            "source": source or {},
        }
    )
    (out / DATASET_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    LOG.info("wrote %d events and %d articles to %s", summary["events"], summary["articles"], out)
    return summary


def summarise(events: pd.DataFrame, articles: pd.DataFrame) -> dict[str, Any]:
    """Counts and time span of an (events, articles) pair, JSON-friendly."""
    viewed = events["viewed_at"]
    statuses = articles["status"].value_counts() if "status" in articles else pd.Series(dtype=int)
    return {
        "events": int(len(events)),
        "users": int(events["user_id"].nunique()),
        "articles": int(len(articles)),
        "articles_viewed": int(events["article_id"].nunique()),
        "articles_by_status": {str(k): int(v) for k, v in statuses.sort_index().items()},
        "first_viewed_at": viewed.min().isoformat() if len(events) else None,
        "last_viewed_at": viewed.max().isoformat() if len(events) else None,
    }


def write_sample_data(out_dir: str | os.PathLike, config: SampleDataConfig | None = None) -> dict[str, Any]:
    """Generate the sample world for `config` and write it under `out_dir` (see `write_input_tables`).

    Returns the summary: counts (events, users, articles, articles_by_status), first/last viewed_at,
    the paths written, and the config under `source`.
    """
    from homefeed.sample import oracle

    config = config or SampleDataConfig()
    latent: dict[str, Any] = {}
    events, articles = generate(config, latent)
    source = {
        "generator": "homefeed.sample.marketplace",
        "config": dataclasses.asdict(config),
        # A marketplace is evaluated as the live service would have run: a global time cut
        # (homefeed.config.ExtractConfig.split), read by the extract from this file.
        "split": "time",
    }
    summary = write_input_tables(events, articles, out_dir, source=source)
    # What the generator knows: each user's true preference over listings (the benchmarks' oracle).
    summary["oracle_path"] = oracle.write_oracle(out_dir, config, latent)
    # Searches come from a generator of their own: the events and articles above do not change.
    searches = sample_searches.simulate_searches(events, articles, config.seed)
    summary["searches"] = int(len(searches))
    summary["searches_path"] = sample_searches.write_searches(searches, out_dir)
    (Path(out_dir) / DATASET_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    return summary
