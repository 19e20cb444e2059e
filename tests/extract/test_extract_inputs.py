"""Bad input for the SQL stage: clear errors naming table and column, or counted drops; and the
output directory is never left half-written."""

from __future__ import annotations

import pyarrow as pa
import pytest
from extract_testdata import ARTICLES, EVENTS, articles_table, events_table, load, run_extract

from components.extract import extract, output
from homefeed.config import ExtractConfig
from homefeed.layout import extract_dir as extract_layout


def _extract(client, dataset, out):
    return extract.extract_bigquery(
        client, out, ExtractConfig(project=client.project, dataset=dataset), use_storage_api=False
    )


def test_missing_required_column_names_table_and_column(bq_client, dataset, tmp_path):
    load(bq_client, dataset, "events", events_table(EVENTS).drop_columns(["viewed_at"]))
    load(bq_client, dataset, "articles", articles_table(ARTICLES))
    with pytest.raises(
        ValueError, match=rf"events table `local-project\.{dataset}\.events`: missing required column 'viewed_at'"
    ):
        _extract(bq_client, dataset, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_wrong_type_names_table_and_column(bq_client, dataset, tmp_path):
    events = events_table(EVENTS).set_column(0, "user_id", pa.array(range(len(EVENTS)), pa.int64()))
    load(bq_client, dataset, "events", events)
    load(bq_client, dataset, "articles", articles_table(ARTICLES))
    with pytest.raises(ValueError, match=r"events table .*: column 'user_id' has type INT64, expected STRING"):
        _extract(bq_client, dataset, tmp_path / "out")


def test_wrong_type_of_an_optional_article_column(bq_client, dataset, tmp_path):
    articles = articles_table(ARTICLES).set_column(5, "status", pa.array([1] * len(ARTICLES), pa.int64()))
    load(bq_client, dataset, "events", events_table(EVENTS))
    load(bq_client, dataset, "articles", articles)
    with pytest.raises(ValueError, match=r"articles table .*: column 'status' has type INT64, expected STRING"):
        _extract(bq_client, dataset, tmp_path / "out")


def test_missing_table(bq_client, dataset, tmp_path):
    load(bq_client, dataset, "articles", articles_table(ARTICLES))
    with pytest.raises(ValueError, match=rf"events table `local-project\.{dataset}\.events` not found"):
        _extract(bq_client, dataset, tmp_path / "out")


@pytest.mark.parametrize("which", ["events", "articles"])
def test_empty_table(bq_client, dataset, tmp_path, which):
    events = events_table(EVENTS)
    articles = articles_table(ARTICLES)
    load(bq_client, dataset, "events", events.slice(0, 0) if which == "events" else events)
    load(bq_client, dataset, "articles", articles.slice(0, 0) if which == "articles" else articles)
    with pytest.raises(ValueError, match=rf"{which} table `local-project\.{dataset}\.{which}` is empty"):
        _extract(bq_client, dataset, tmp_path / "out")


def test_null_ids_duplicates_and_unknown_articles_are_dropped_and_counted(bq_client, dataset, tmp_path):
    dirty = EVENTS + [
        (None, "a1", "2024-01-02 00:00"),  # missing user
        ("u9", None, "2024-01-02 00:00"),  # missing article
        ("u9", "a1", None),  # missing time
        ("", "a2", "2024-01-02 00:00"),  # empty id counts as missing
        ("u1", "a2", "2024-01-02 10:00"),  # duplicate of u1's second view
        ("u1", "a2", "2024-01-02 10:00"),  # and again
        ("u2", "zz", "2024-01-01 13:00"),  # unknown article
    ]
    articles = ARTICLES + [{"article_id": None, "title": "ghost"}, dict(ARTICLES[0], created_at="2023-01-01 00:00")]
    summary, result = run_extract(
        bq_client, dataset, events_table(dirty), articles_table(articles), tmp_path / "out", history_length=3
    )
    assert summary.dropped == {
        "events_missing_ids": 4,
        "events_duplicates": 2,
        "events_unknown_article": 1,
        "events_in_future": 0,
        "articles_missing_ids": 1,
        "articles_duplicate_ids": 1,
    }
    assert summary.inputs["events_rows"] == len(dirty) and summary.inputs["events_used"] == len(EVENTS)
    # The output is exactly the clean run's: u2's history holds no unknown 'zz', no doubled a2.
    histories = {r["user_id"]: r["history"] for r in result.user_histories.to_pylist()}
    assert histories == {"u1": ["a1", "a5", "a4"], "u2": ["a6", "a2"], "u3": ["a1"]}
    assert result.training_examples.num_rows == 6
    # The duplicated article keeps its most recently created row, once.
    corpus = [r for r in result.articles.to_pylist() if r["article_id"] == "a1"]
    assert len(corpus) == 1 and corpus[0]["created_at"].year == 2023 and corpus[0]["created_at"].month == 12
    saved = result.summary
    assert saved["dropped"]["events_duplicates"] == 2 and saved["as_of"] == "2024-01-05T10:00:00+00:00"


def test_events_from_the_future_are_counted_and_dropped(bq_client, dataset, tmp_path):
    future = [("u1", "a2", "2099-01-01 00:00"), ("u3", "a4", "2099-06-01 00:00"), ("u3", "a4", "2099-06-01 00:00")]
    summary, result = run_extract(
        bq_client, dataset, events_table(EVENTS + future), articles_table(ARTICLES), tmp_path / "out", history_length=3
    )
    # The duplicate is collapsed first, then the two distinct future events are counted.
    assert summary.dropped["events_in_future"] == 2 and summary.dropped["events_duplicates"] == 1
    assert summary.dropped["events_unknown_article"] == 0
    assert summary.as_of == "2024-01-05T10:00:00+00:00"  # the latest real event, not 2099
    assert summary.inputs["events_used"] == len(EVENTS)
    assert result.summary["not_after"] < "2099"
    # A clock that is itself in 2099 (or a generous skew) keeps them: the rule is relative to the run.
    late, _ = run_extract(
        bq_client,
        dataset,
        events_table(EVENTS + future),
        articles_table(ARTICLES),
        tmp_path / "out2",
        history_length=3,
        max_clock_skew_s=100 * 365 * 86400.0,
    )
    assert late.dropped["events_in_future"] == 0 and late.as_of.startswith("2099-06-01")


def test_an_as_of_in_the_future_is_refused(bq_client, dataset, tmp_path):
    load(bq_client, dataset, "events", events_table(EVENTS))
    load(bq_client, dataset, "articles", articles_table(ARTICLES))
    config = ExtractConfig(project=bq_client.project, dataset=dataset, as_of="2099-01-01")
    with pytest.raises(ValueError, match="as_of 2099-01-01 is in the future"):
        extract.extract_bigquery(bq_client, tmp_path / "out", config, use_storage_api=False)
    assert not (tmp_path / "out").exists()


def test_no_usable_events_explains_why(bq_client, dataset, tmp_path):
    load(
        bq_client, dataset, "events", events_table([("u1", "zz", "2024-01-01 00:00"), (None, "a1", "2024-01-01 00:00")])
    )
    load(bq_client, dataset, "articles", articles_table(ARTICLES))
    with pytest.raises(
        ValueError, match=r"no usable events among 2 rows .*1 with a missing .*1 with an article_id not in"
    ):
        _extract(bq_client, dataset, tmp_path / "out")


def test_no_training_examples_when_every_user_has_one_view(bq_client, dataset, tmp_path):
    load(
        bq_client, dataset, "events", events_table([("u1", "a1", "2024-01-01 00:00"), ("u2", "a2", "2024-01-01 00:00")])
    )
    load(bq_client, dataset, "articles", articles_table(ARTICLES))
    with pytest.raises(ValueError, match="no training examples"):
        _extract(bq_client, dataset, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_empty_corpus(bq_client, dataset, tmp_path):
    load(bq_client, dataset, "events", events_table(EVENTS))
    load(bq_client, dataset, "articles", articles_table([dict(a, status="sold") for a in ARTICLES]))
    with pytest.raises(ValueError, match="candidate corpus is empty: of 6 articles, 6 are not active"):
        _extract(bq_client, dataset, tmp_path / "out")


@pytest.mark.parametrize("name", ["events`; DROP TABLE x; --", "ev ents", "a.b.c.d", "p.d.t'"])
def test_table_names_cannot_inject_sql(bq_client, tmp_path, name):
    config = ExtractConfig(project=bq_client.project, dataset="whatever", events_table=name)
    with pytest.raises(ValueError, match="invalid BigQuery"):
        extract.extract_bigquery(bq_client, tmp_path / "out", config, use_storage_api=False)


def test_a_failed_run_keeps_the_previous_extract(bq_client, dataset, tmp_path):
    out = tmp_path / "out"
    run_extract(bq_client, dataset, events_table(EVENTS), articles_table(ARTICLES), out, history_length=3)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    load(bq_client, dataset, "articles", articles_table([dict(a, status="sold") for a in ARTICLES]))
    with pytest.raises(ValueError):
        _extract(bq_client, dataset, out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no staging directory left behind
    # A successful run replaces it.
    run_extract(bq_client, dataset, events_table(EVENTS), articles_table(ARTICLES), out, history_length=2)
    assert output.read_extract(out).summary["config"]["history_length"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_refuses_to_replace_a_directory_with_other_files(bq_client, dataset, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="refusing to replace"):
        run_extract(bq_client, dataset, events_table(EVENTS), articles_table(ARTICLES), out)
    assert (out / "notes.txt").read_text() == "keep me"


def test_check_extract_dir_requires_success_marker(bq_client, dataset, tmp_path):
    out = tmp_path / "out"
    run_extract(bq_client, dataset, events_table(EVENTS), articles_table(ARTICLES), out)
    assert output.check_extract_dir(out) == out
    (out / extract_layout.SUCCESS_MARKER).unlink()
    with pytest.raises(FileNotFoundError, match="_SUCCESS is missing"):
        output.read_extract(out)
    with pytest.raises(FileNotFoundError, match="not found"):
        output.check_extract_dir(tmp_path / "nowhere")


def test_config_is_validated():
    with pytest.raises(ValueError, match="history_length"):
        ExtractConfig(history_length=0)
    with pytest.raises(ValueError, match="max_article_age_days"):
        ExtractConfig(max_article_age_days=0)
    with pytest.raises(ValueError, match="as_of"):
        ExtractConfig(as_of="yesterday")
    assert ExtractConfig(as_of="2024-03-01").as_of_datetime().isoformat() == "2024-03-01T00:00:00+00:00"
