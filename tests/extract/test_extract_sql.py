"""sql/*.sql on the local BigQuery emulator, against answers worked out by hand.

The marketplace (extract_testdata.EVENTS / ARTICLES), H = 3. u1's views in order, ties at equal
viewed_at broken by article_id:

    position  1   2   3   4   5   6
    article   a1  a2  a3  a4  a5  a1      (a3 and a4 share 2024-01-03 10:00)

so u1's examples are a2<-[a1], a3<-[a2,a1], a4<-[a3,a2,a1], a5<-[a4,a3,a2], a1<-[a5,a4,a3] (eval);
u2 has a6<-[a2] (eval); u3 has one view and no example. as_of defaults to 2024-01-05 10:00.
"""

from __future__ import annotations

from datetime import datetime

import pyarrow as pa
import pytest
from extract_testdata import (
    ARTICLES,
    EVENTS,
    MISSING,
    articles_table,
    events_table,
    random_marketplace,
    reference_examples,
    rows_by_key,
    run_extract,
    ts,
)

from components.extract import extract, output
from homefeed import features
from homefeed.layout import extract_dir as extract_layout


@pytest.fixture(scope="module")
def default_run(bq_client, read_client, tmp_path_factory):
    out = tmp_path_factory.mktemp("extract") / "out"
    return run_extract(
        bq_client, "sql_default", events_table(EVENTS), articles_table(ARTICLES), out, read_client, history_length=3
    )


def test_histories_are_earlier_views_most_recent_first_at_most_h(default_run):
    _, result = default_run
    examples = rows_by_key(result.training_examples, "user_id", "label", "viewed_at")
    got = {(u, label, t.strftime("%m-%d")): row["history"] for (u, label, t), row in examples.items()}
    assert got == {
        ("u1", "a2", "01-02"): ["a1"],
        ("u1", "a3", "01-03"): ["a2", "a1"],
        ("u1", "a4", "01-03"): ["a3", "a2", "a1"],  # the tie: a3 counts as earlier than a4
        ("u1", "a5", "01-04"): ["a4", "a3", "a2"],  # H = 3: a1 dropped
        ("u1", "a1", "01-05"): ["a5", "a4", "a3"],
        ("u2", "a6", "01-02"): ["a2"],
    }


def test_no_label_or_later_view_leaks_into_the_history(default_run):
    # Every history is exactly the user's views strictly before the label in (viewed_at,
    # article_id) order, newest first: nothing at or after the label, nothing skipped.
    _, result = default_run
    for row in result.training_examples.to_pylist():
        views = sorted((ts(t), a) for u, a, t in EVENTS if u == row["user_id"])
        before = [a for t, a in views if (t, a) < (row["viewed_at"], row["label"])]
        assert row["history"] == before[::-1][:3], row


def test_attributes_are_parallel_and_missing_values_marked(default_run):
    _, result = default_run
    rows = rows_by_key(result.training_examples, "user_id", "label", "viewed_at")
    last = rows[("u1", "a1", ts("2024-01-05 10:00"))]
    # a5 sports/north, a4 furniture/south, a3 ''/south: the empty category is missing.
    assert last["history_category"] == ["sports", "furniture", MISSING]
    assert last["history_region"] == ["north", "south", "south"]
    assert (last["label_category"], last["label_region"]) == ("phones", "north")
    novel = rows[("u1", "a2", ts("2024-01-02 10:00"))]
    assert (novel["label_category"], novel["label_region"]) == ("books", MISSING)  # NULL region


def test_split_is_test_for_each_users_last_view_and_validation_for_the_one_before(default_run):
    summary, result = default_run
    splits = {(r["user_id"], r["label"], r["viewed_at"]): r["split"] for r in result.training_examples.to_pylist()}
    by_split = {s: [k[:2] for k, v in sorted(splits.items()) if v == s] for s in features.SPLITS}
    # u1: a2, a3, a4 (tie with a3 at 01-03 broken by id), a5, a1; u2 has two views: a test row only.
    assert by_split == {
        features.TRAIN_SPLIT: [("u1", "a2"), ("u1", "a3"), ("u1", "a4")],
        features.VALIDATION_SPLIT: [("u1", "a5")],
        features.TEST_SPLIT: [("u1", "a1"), ("u2", "a6")],
    }
    assert summary.rows == {
        "training_examples": 6,
        "train": 3,
        "validation": 1,
        "test": 2,
        "user_histories": 3,
        "articles": 4,
        "listings": 6,
    }


def test_as_of_defaults_to_the_latest_event_and_ages_are_days(default_run):
    summary, result = default_run
    assert summary.as_of == "2024-01-05T10:00:00+00:00"
    ages = {(r["user_id"], r["label"]): r["example_age_days"] for r in result.training_examples.to_pylist()}
    assert ages[("u1", "a1")] == 0.0
    assert ages[("u1", "a2")] == pytest.approx(3.0)
    assert ages[("u2", "a6")] == pytest.approx(2 + 22 / 24)  # 01-02 12:00 -> 01-05 10:00


def test_user_histories_are_the_latest_h_views(default_run):
    _, result = default_run
    histories = rows_by_key(result.user_histories, "user_id")
    assert {u: r["history"] for (u,), r in histories.items()} == {
        "u1": ["a1", "a5", "a4"],
        "u2": ["a6", "a2"],
        "u3": ["a1"],
    }
    assert histories[("u1",)]["history_category"] == ["phones", "sports", "furniture"]
    assert histories[("u2",)]["history_region"] == ["east", MISSING]
    assert histories[("u1",)]["last_viewed_at"] == ts("2024-01-05 10:00")


def test_corpus_is_active_articles_with_view_counts(default_run):
    summary, result = default_run
    corpus = rows_by_key(result.articles, "article_id")
    # a5 sold and a6 deleted are out; status NULL and ' ACTIVE ' count as active.
    assert {k[0]: r["view_count"] for k, r in corpus.items()} == {"a1": 3, "a2": 2, "a3": 1, "a4": 1}
    assert corpus[("a3",)]["category"] == MISSING and corpus[("a2",)]["region"] == MISSING
    assert corpus[("a1",)]["title"] == "Phone"
    assert summary.excluded["articles_inactive"] == 2


def test_listings_hold_every_listing_with_its_removal_time(default_run):
    _, result = default_run
    listings = rows_by_key(result.listings, "article_id")
    assert sorted(k[0] for k in listings) == ["a1", "a2", "a3", "a4", "a5", "a6"]
    # No removed_at column: a sold or deleted listing was gone by as_of at the latest.
    as_of = ts("2024-01-05 10:00")
    assert {k[0]: r["removed_at"] for k, r in listings.items()} == {
        "a1": None,
        "a2": None,
        "a3": None,
        "a4": None,
        "a5": as_of,
        "a6": as_of,
    }
    assert listings[("a5",)]["title"] == "Bike" and listings[("a5",)]["created_at"] == ts("2024-01-02 00:00")


@pytest.mark.parametrize(
    "as_of, corpus_ids",
    [
        # a4 is marked active but was removed on 01-03; a5 was sold on 01-04; a6 has no removed_at.
        (None, ["a1", "a2", "a3"]),
        # At 01-03 12:00 a5 was still up (sold later), a4 already gone; at 01-02 12:00 both were.
        ("2024-01-03T12:00:00Z", ["a1", "a2", "a3", "a5"]),
        ("2024-01-02T12:00:00Z", ["a1", "a2", "a3", "a4", "a5"]),
    ],
)
def test_removed_at_decides_what_is_live_at_as_of(bq_client, tmp_path, as_of, corpus_ids):
    removed = {"a4": "2024-01-03 00:00", "a5": "2024-01-04 00:00"}
    rows = [{**row, "removed_at": removed.get(row["article_id"])} for row in ARTICLES]
    columns = ("article_id", "title", "category", "region", "created_at", "status", "removed_at")
    summary, result = run_extract(
        bq_client,
        "sql_removed_at",
        events_table(EVENTS),
        articles_table(rows, columns=columns),
        tmp_path / "out",
        history_length=3,
        as_of=as_of,
    )
    assert sorted(result.articles.column("article_id").to_pylist()) == corpus_ids
    listings = {r["article_id"]: r["removed_at"] for r in result.listings.to_pylist()}
    assert listings["a4"] == ts("2024-01-03 00:00") and listings["a5"] == ts("2024-01-04 00:00")
    assert listings["a6"] == datetime.fromisoformat(summary.as_of)
    assert summary.inputs["articles_with_removed_at"] == 2
    assert summary.excluded["articles_inactive"] == len(ARTICLES) - len(corpus_ids)


def test_output_files_follow_the_contract(default_run):
    _, result = default_run
    for name, columns in output.OUTPUT_COLUMNS.items():
        table = getattr(result, name)
        assert table.schema.names == list(columns), name
        for field, want in zip(table.schema, output.output_schema(name)):
            if pa.types.is_list(want.type):  # Parquet names the list item "element"
                assert pa.types.is_list(field.type) and field.type.value_type == pa.string(), field
            else:
                assert field.type == want.type, field
    assert result.training_examples.schema.field("viewed_at").type == pa.timestamp("us", tz="UTC")
    assert sorted(p.name for p in result.path.iterdir()) == sorted(
        [*extract.OUTPUT_FILES.values(), extract_layout.SUMMARY_FILE, extract_layout.SUCCESS_MARKER]
    )
    assert result.summary["config"]["history_length"] == 3
    assert result.summary["rows"][features.TEST_SPLIT] == 2


def test_as_of_in_the_past_ignores_later_events(bq_client, tmp_path):
    summary, result = run_extract(
        bq_client,
        "sql_as_of",
        events_table(EVENTS),
        articles_table(ARTICLES),
        tmp_path / "out",
        history_length=3,
        as_of="2024-01-03T12:00:00Z",
    )
    rows = rows_by_key(result.training_examples, "user_id", "label")
    assert sorted(rows) == [("u1", "a2"), ("u1", "a3"), ("u1", "a4"), ("u2", "a6")]
    assert rows[("u1", "a4")]["split"] == features.TEST_SPLIT  # a5 and the second a1 come after as_of
    assert rows[("u1", "a3")]["split"] == features.VALIDATION_SPLIT
    assert rows[("u1", "a4")]["example_age_days"] == pytest.approx(2 / 24)
    assert summary.excluded["events_after_as_of"] == 2
    histories = rows_by_key(result.user_histories, "user_id")
    assert histories[("u1",)]["history"] == ["a4", "a3", "a2"]
    assert rows_by_key(result.articles, "article_id")[("a1",)]["view_count"] == 2


def test_max_article_age_and_lookback(bq_client, tmp_path):
    summary, result = run_extract(
        bq_client,
        "sql_age",
        events_table(EVENTS),
        articles_table(ARTICLES),
        tmp_path / "out",
        history_length=3,
        max_article_age_days=30,
        lookback_days=2,
    )
    # as_of 2024-01-05 10:00: created before 2023-12-06 10:00 is too old (a1, a4); a3 has no
    # created_at and stays.
    assert sorted(result.articles.column("article_id").to_pylist()) == ["a2", "a3"]
    assert summary.excluded["articles_too_old"] == 2
    # Lookback 2 days keeps views from 2024-01-03 10:00 on: u1's a3, a4, a5, a1 only.
    assert summary.inputs["events_used"] == 4
    assert summary.excluded["events_before_lookback"] == 5
    rows = rows_by_key(result.training_examples, "user_id", "label")
    assert rows[("u1", "a1")]["history"] == ["a5", "a4", "a3"]
    assert sorted(rows) == [("u1", "a1"), ("u1", "a4"), ("u1", "a5")]


def test_articles_without_optional_columns(bq_client, tmp_path):
    bare = articles_table(ARTICLES, columns=("article_id",))
    summary, result = run_extract(
        bq_client, "sql_bare", events_table(EVENTS), bare, tmp_path / "out", history_length=3, max_article_age_days=1
    )
    # No status column: everything is active; no created_at: the age limit keeps everything.
    assert result.articles.num_rows == 6
    assert set(result.articles.column("category").to_pylist()) == {MISSING}
    assert set(result.articles.column("title").to_pylist()) == {None}
    example = result.training_examples.to_pylist()[0]
    assert set(example["history_category"]) == {MISSING} and example["label_region"] == MISSING
    assert summary.rows["training_examples"] == 6


@pytest.mark.parametrize("results_via", ["storage read API", "REST"])
def test_matches_a_plain_python_reference_on_random_data(bq_client, read_client, tmp_path, results_via):
    event_rows, article_rows = random_marketplace(seed=7)
    summary, result = run_extract(
        bq_client,
        f"sql_random_{results_via[0]}",
        events_table(event_rows),
        articles_table(article_rows, columns=("article_id", "category", "region")),
        tmp_path / "out",
        read_client if results_via == "storage read API" else None,
        history_length=4,
    )
    expected = reference_examples(event_rows, article_rows, history_length=4)
    got = rows_by_key(result.training_examples, "user_id", "viewed_at", "label")
    assert set(got) == set(expected)
    for key, want in expected.items():
        row = got[key]
        assert {k: row[k] for k in want if k != "example_age_days"} == {
            k: v for k, v in want.items() if k != "example_age_days"
        }, key
        assert row["example_age_days"] == pytest.approx(want["example_age_days"])
    assert summary.dropped["events_duplicates"] == len(event_rows) - len(set(event_rows))
    # Scratch tables used for the Storage Read API are gone again.
    tables = [t.table_id for t in bq_client.list_tables(f"{bq_client.project}.sql_random_{results_via[0]}")]
    assert sorted(tables) == ["articles", "events"]


def test_one_created_at_for_every_listing_is_warned_about_and_the_age_left_out(bq_client, tmp_path):
    rows = [{**row, "created_at": "2023-01-01 00:00"} for row in ARTICLES]
    summary, result = run_extract(
        bq_client, "sql_one_created_at", events_table(EVENTS), articles_table(rows), tmp_path / "out", history_length=3
    )
    assert len(summary.warnings) == 1 and "same created_at" in summary.warnings[0]
    assert result.summary["warnings"] == summary.warnings
    assert set(result.training_examples.column(features.LABEL_AGE).to_pylist()) == {features.UNKNOWN_AGE}
    assert result.articles.column(features.CREATED_AT).null_count == result.articles.num_rows
    assert result.listings.column(features.CREATED_AT).null_count == result.listings.num_rows


def test_varied_created_at_is_kept(default_run):
    summary, result = default_run
    assert summary.warnings == []
    assert result.articles.column(features.CREATED_AT).null_count < result.articles.num_rows
