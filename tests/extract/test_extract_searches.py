"""The optional searches table through sql/*.sql on the local emulator, against a plain-Python
reference: each example's queries are the user's latest S strictly before its view."""

from __future__ import annotations

import random
from datetime import timedelta

import pyarrow as pa
import pytest
from extract_testdata import (
    TIMESTAMP,
    articles_table,
    events_table,
    load,
    random_marketplace,
    reference_examples,
    rows_by_key,
    ts,
)

from components.extract import extract, output
from homefeed import features, tokens
from homefeed.config import ExtractConfig


def searches_table(rows) -> pa.Table:
    users, queries, times = zip(*rows) if rows else ((), (), ())
    return pa.table(
        {
            "user_id": pa.array(users, pa.string()),
            "query": pa.array(queries, pa.string()),
            "searched_at": pa.array([ts(t) if isinstance(t, str) else t for t in times], TIMESTAMP),
        }
    )


def random_searches(seed: int, users: int = 25, count: int = 160):
    """Queries at times that tie with views (same hours), blanks, a long one, non-ASCII text."""
    rng = random.Random(seed)
    base = ts("2024-03-01 00:00")
    words = ["Stroller", "유모차", "café", "ＡＢＣ", "lamp  desk", "  ", "", "x" * 600]
    rows = [
        (
            f"u{rng.randrange(users + 3):02d}",
            rng.choice(words) + str(rng.randrange(3)),
            base + timedelta(hours=rng.randrange(-5, 40)),
        )
        for _ in range(count)
    ]
    rows += [
        ("u01", "   ", base),
        ("u02", None, base),
        (None, "orphan", base),
        ("u03", "late", base + timedelta(days=99)),
    ]
    rows += rows[:5]  # exact duplicates
    return rows


def reference_queries(search_rows, as_of, before, length):
    """The user's latest `length` usable queries strictly before `before`, most recent first."""
    usable = {
        (u, q.strip()[: features.QUERY_MAX_CHARS], t)
        for u, q, t in search_rows
        if u and t is not None and q is not None and q.strip() and t <= as_of
    }

    def queries(user, when):
        mine = sorted(((t, q) for u, q, t in usable if u == user and (when is None or t < when)), reverse=True)
        return [tokens.normalise(q) for _, q in mine[:length]]

    return queries


def run(bq_client, read_client, dataset, event_rows, article_rows, search_rows, out, **settings):
    load(bq_client, dataset, "events", events_table(event_rows))
    load(bq_client, dataset, "articles", articles_table(article_rows, columns=("article_id", "category", "region")))
    if search_rows is not None:
        load(bq_client, dataset, "searches", searches_table(search_rows))
        settings["searches_table"] = "searches"
    settings.setdefault("split", "per-user")  # the expectations use the leave-last-out rule (features.split_of)
    config = ExtractConfig(project=bq_client.project, dataset=dataset, **settings)
    summary = extract.extract_bigquery(bq_client, out, config, use_storage_api=False, read_client=read_client)
    return summary, output.read_extract(out)


@pytest.fixture(scope="module")
def random_run(bq_client, read_client, tmp_path_factory):
    event_rows, article_rows = random_marketplace(seed=11)
    search_rows = random_searches(seed=11)
    out = tmp_path_factory.mktemp("searches") / "out"
    summary, result = run(
        bq_client,
        read_client,
        "searches_random",
        event_rows,
        article_rows,
        search_rows,
        out,
        history_length=4,
        search_length=3,
    )
    return event_rows, article_rows, search_rows, summary, result


def test_examples_get_the_latest_queries_strictly_before_the_view(random_run):
    event_rows, article_rows, search_rows, summary, result = random_run
    views = sorted(set(event_rows), key=lambda e: (e[0], e[2], e[1]))
    as_of = max(e[2] for e in views)
    queries = reference_queries(search_rows, as_of, None, 3)
    expected = reference_examples(event_rows, article_rows, history_length=4)
    # First views become examples too when queries came before them.
    first = {}
    for user, article, when in views:
        first.setdefault(user, (article, when))
    n_views = {u: sum(1 for v in views if v[0] == u) for u in first}
    for user, (article, when) in first.items():
        if queries(user, when):
            expected[(user, when, article)] = {"history": [], "split": features.split_of(n_views[user] - 1)}
    got = rows_by_key(result.training_examples, "user_id", "viewed_at", "label")
    assert set(got) == set(expected)
    for (user, when, label), want in expected.items():
        row = got[(user, when, label)]
        assert row["recent_queries"] == queries(user, when), (user, when)
        assert row["history"] == want["history"] and row["split"] == want["split"]
    assert any(row["recent_queries"] for row in got.values())
    assert any(not row["history"] for row in got.values())


def test_no_query_at_or_after_the_view_leaks(bq_client, read_client, tmp_path):
    events = [("u", "a00", "2024-01-01 10:00"), ("u", "a01", "2024-01-02 10:00"), ("u", "a02", "2024-01-03 10:00")]
    search_rows = [
        ("u", "before first", "2024-01-01 09:00"),
        ("u", "same time", "2024-01-02 10:00"),
        ("u", "between", "2024-01-02 11:00"),
        ("u", "after all", "2024-01-03 11:00"),
    ]
    articles = [{"article_id": f"a0{i}", "category": "c", "region": "r"} for i in range(3)]
    _, result = run(
        bq_client,
        read_client,
        "searches_leak",
        events,
        articles,
        search_rows,
        tmp_path / "out",
        search_length=5,
        as_of="2024-01-04",
    )
    got = {row["label"]: row["recent_queries"] for row in result.training_examples.to_pylist()}
    assert got == {"a00": ["before first"], "a01": ["before first"], "a02": ["between", "same time", "before first"]}
    snapshot = result.user_histories.to_pylist()[0]
    assert snapshot["recent_queries"] == ["after all", "between", "same time", "before first"]


def test_user_histories_carry_the_latest_queries_and_searchers_without_views(random_run):
    event_rows, _, search_rows, summary, result = random_run
    as_of = max(e[2] for e in event_rows)
    queries = reference_queries(search_rows, as_of, None, 3)
    rows = {row["user_id"]: row for row in result.user_histories.to_pylist()}
    viewers = {e[0] for e in event_rows}
    searchers = {u for u, q, t in search_rows if u and q and q.strip() and t is not None and t <= as_of}
    assert set(rows) == viewers | searchers
    for user, row in rows.items():
        assert row["recent_queries"] == queries(user, None), user
        if user not in viewers:
            assert row["history"] == [] and row["last_viewed_at"] is None


def test_summary_counts_blank_cut_and_late_queries(random_run):
    _, _, search_rows, summary, result = random_run
    assert summary.inputs["searches_rows"] == len(search_rows)
    blank = sum(1 for u, q, t in search_rows if u and t is not None and (q is None or not q.strip()))
    assert summary.dropped["searches_empty_query"] == blank
    assert summary.dropped["searches_missing_ids"] == 1
    assert summary.excluded["searches_after_as_of"] == 1
    long = sum(1 for u, q, t in search_rows if u and t is not None and q and len(q.strip()) > 512)
    assert summary.inputs["searches_truncated"] == long > 0
    assert all(len(q) <= 512 for row in result.user_histories.to_pylist() for q in row["recent_queries"])


def test_without_searches_the_outputs_are_unchanged(bq_client, read_client, tmp_path):
    event_rows, article_rows = random_marketplace(seed=11)
    _, result = run(
        bq_client, read_client, "searches_absent", event_rows, article_rows, None, tmp_path / "out", history_length=4
    )
    expected = reference_examples(event_rows, article_rows, history_length=4)
    got = rows_by_key(result.training_examples, "user_id", "viewed_at", "label")
    assert set(got) == set(expected)
    assert all(row["recent_queries"] == [] for row in got.values())
    assert "searches_rows" not in result.summary["inputs"]


@pytest.mark.parametrize(
    "table, message",
    [
        (
            pa.table({"user_id": ["u"], "searched_at": pa.array([ts("2024-01-01 00:00")], TIMESTAMP)}),
            "missing required column 'query'",
        ),
        (
            pa.table({"user_id": ["u"], "query": [3], "searched_at": pa.array([ts("2024-01-01 00:00")], TIMESTAMP)}),
            "column 'query' has type INT64",
        ),
    ],
)
def test_bad_searches_table_names_table_and_column(bq_client, tmp_path, dataset, table, message):
    event_rows, article_rows = random_marketplace(seed=3)
    load(bq_client, dataset, "events", events_table(event_rows))
    load(bq_client, dataset, "articles", articles_table(article_rows, columns=("article_id",)))
    load(bq_client, dataset, "searches", table)
    config = ExtractConfig(project=bq_client.project, dataset=dataset, searches_table="searches")
    with pytest.raises(ValueError, match=rf"searches table .*{dataset}.searches.*{message}"):
        extract.extract_bigquery(bq_client, tmp_path / "out", config, use_storage_api=False)
    assert not (tmp_path / "out").exists()
