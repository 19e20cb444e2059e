"""Sample searches: written beside the events, about what the user views next, events untouched."""

from __future__ import annotations

import pandas as pd

from homefeed import tokens
from homefeed.sample.marketplace import SampleDataConfig, generate, write_sample_data
from homefeed.sample.searches import simulate_searches

SMALL = SampleDataConfig(users=60, articles=200, days=10, seed=5)


def test_searches_carry_the_intent_of_the_next_view_and_leave_the_events_alone(tmp_path):
    summary = write_sample_data(tmp_path, SMALL)
    events, articles = generate(SMALL)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "events.parquet"), events, check_dtype=False)
    searches = pd.read_parquet(summary["searches_path"])
    assert list(searches.columns) == ["user_id", "query", "searched_at"] and len(searches) == summary["searches"] > 0
    assert (searches["query"].str.strip() != "").all()
    # The view right after a query: its title or category shares a word with the query, far more
    # often than chance (noise queries and typos make it less than always).
    words = {
        r.article_id: set(tokens.words(f"{r.title} {r.category.replace('-', ' ')} {r.region}"))
        for r in articles.itertuples()
    }
    views = events.sort_values("viewed_at")
    hits = total = 0
    for row in searches.itertuples():
        later = views[(views.user_id == row.user_id) & (views.viewed_at > row.searched_at)]
        if later.empty:
            continue
        total += 1
        hits += bool(set(tokens.words(row.query)) & words[later.iloc[0].article_id])
    assert total > 50 and hits / total > 0.5, (hits, total)
    # Same seed, same searches.
    pd.testing.assert_frame_equal(simulate_searches(events, articles, SMALL.seed), searches, check_dtype=False)
