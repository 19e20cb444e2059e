"""Simulated search queries for the sample marketplace: `searches.parquet` beside the events.

Queries carry real intent, so the search signal is learnable and measurable:

* when a user starts looking for something new (a session's first view, more than `SESSION_GAP_S`
  after their previous one, or a view in another category than the previous one), they often
  search for what they are about to open first: the listing's noun ("oak desk"),
  its last word ("desk"), its category ("furniture"), adjective + noun ("vintage oak desk") or the
  noun and the region ("stroller southport"), seconds to minutes before the view. Sessions keep
  to one category, so the query also predicts the views after it;
* some of those queries have a typo (a dropped, doubled or swapped letter) or odd capitals;
* every user also makes noise queries: things from random categories at random times, unrelated
  to what they view next.

Drawn from its own generator (seeded from `SampleDataConfig.seed`), so adding searches never
changes the events or the articles: a run without `--searches` gives today's figures exactly.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from homefeed.sample.world import ADJECTIVES, CATEGORY_NOUNS

LOG = logging.getLogger(__name__)

SEARCHES_FILE = "searches.parquet"
SESSION_GAP_S = 1800
INTENT_SHARE = 0.8  # new interests (session starts, category switches) that begin with a search
TYPO_SHARE = 0.1
NOISE_PER_USER = 2.0  # mean unrelated queries per user
_STREAM = 7919  # mixed into the seed: a generator of its own


def _typo(word: str, rng: np.random.Generator) -> str:
    if len(word) < 4:
        return word
    i = int(rng.integers(1, len(word) - 1))
    kind = rng.integers(3)
    if kind == 0:
        return word[:i] + word[i + 1 :]  # dropped
    if kind == 1:
        return word[:i] + word[i] + word[i:]  # doubled
    return word[: i - 1] + word[i] + word[i - 1] + word[i + 1 :]  # swapped


def _intent_query(noun: str, category: str, region: str, rng: np.random.Generator) -> str:
    kind = rng.choice(5, p=[0.4, 0.15, 0.2, 0.15, 0.1])
    if kind == 0:
        text = noun
    elif kind == 1:
        text = noun.split()[-1]
    elif kind == 2:
        text = category.replace("-", " ")
    elif kind == 3:
        text = f"{ADJECTIVES[int(rng.integers(len(ADJECTIVES)))].lower()} {noun}"
    else:
        text = f"{noun} {region.lower()}"
    if rng.random() < TYPO_SHARE:
        words = text.split()
        j = int(rng.integers(len(words)))
        words[j] = _typo(words[j], rng)
        text = " ".join(words)
    style = rng.random()
    return text.title() if style < 0.15 else text.upper() if style < 0.2 else text


def simulate_searches(events: pd.DataFrame, articles: pd.DataFrame, seed: int) -> pd.DataFrame:
    """`searches` (user_id, query, searched_at) for the sample world `(events, articles)`."""
    rng = np.random.default_rng([seed, _STREAM])
    titles = articles.set_index("article_id")
    nouns = {}
    for article_id, title, category in zip(articles["article_id"], articles["title"], articles["category"]):
        lowered = str(title).lower()
        nouns[article_id] = next((n for n in CATEGORY_NOUNS[category] if lowered.endswith(n)), lowered)
    ordered = events.sort_values(["user_id", "viewed_at", "article_id"])
    users = ordered["user_id"].to_numpy()
    times = ordered["viewed_at"].to_numpy()
    ids = ordered["article_id"].to_numpy()
    category_of = dict(zip(articles["article_id"], articles["category"]))
    categories_viewed = np.array([category_of[a] for a in ids], dtype=object)
    start = np.ones(len(ordered), dtype=bool)
    start[1:] = (
        (users[1:] != users[:-1])
        | ((times[1:] - times[:-1]) > np.timedelta64(SESSION_GAP_S, "s"))
        | (categories_viewed[1:] != categories_viewed[:-1])
    )
    rows = []
    for i in np.flatnonzero(start):
        if rng.random() >= INTENT_SHARE:
            continue
        article = ids[i]
        category, region = titles.at[article, "category"], titles.at[article, "region"]
        for _ in range(1 + int(rng.random() < 0.3)):
            # Before the view, and after the previous one (a query never dates after what it led to).
            gap_s = (times[i] - times[i - 1]) / np.timedelta64(1, "s") if i and users[i - 1] == users[i] else 600
            before = np.timedelta64(int(rng.integers(1, max(2, min(600, int(gap_s))))), "s")
            rows.append((users[i], _intent_query(nouns[article], category, region, rng), times[i] - before))
    # Noise: unrelated queries at random times in the window.
    first, last = events["viewed_at"].min(), events["viewed_at"].max()
    span_s = max(1, int((last - first).total_seconds()))
    categories = list(CATEGORY_NOUNS)
    for user in np.unique(users):
        for _ in range(int(rng.poisson(NOISE_PER_USER))):
            category = categories[int(rng.integers(len(categories)))]
            noun = CATEGORY_NOUNS[category][int(rng.integers(len(CATEGORY_NOUNS[category])))]
            rows.append((user, noun, first + pd.Timedelta(seconds=int(rng.integers(span_s)))))
    searches = pd.DataFrame(rows, columns=["user_id", "query", "searched_at"])
    searches["searched_at"] = pd.to_datetime(searches["searched_at"], utc=True)
    searches = searches.sort_values(["user_id", "searched_at", "query"]).reset_index(drop=True)
    LOG.info("simulated %d searches for %d users", len(searches), searches["user_id"].nunique())
    return searches


def write_searches(searches: pd.DataFrame, out_dir) -> str:
    """`searches.parquet` under `out_dir` (temporary name, then renamed); returns its path."""
    import os
    from pathlib import Path

    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(out_dir)
    table = pa.table(
        {
            "user_id": pa.array(searches["user_id"].astype(str), pa.string()),
            "query": pa.array(searches["query"].astype(str), pa.string()),
            "searched_at": pa.array(searches["searched_at"], pa.timestamp("us", tz="UTC")),
        }
    )
    pq.write_table(table, out / f".{SEARCHES_FILE}.tmp")
    os.replace(out / f".{SEARCHES_FILE}.tmp", out / SEARCHES_FILE)
    return str(out / SEARCHES_FILE)
