"""Table-name validation, column checks and the SQL package helpers (no emulator needed)."""

from __future__ import annotations

import re

import pytest

import sql
from components.extract import schema


def test_table_ref_parses_and_quotes():
    assert schema.TableRef.parse("events", "my-project", "homefeed").sql == "`my-project.homefeed.events`"
    assert schema.TableRef.parse("raw.events", "my-project", "homefeed").path == "my-project.raw.events"
    assert schema.TableRef.parse("other-proj.raw.events_2024", "p", "d").project == "other-proj"
    assert schema.TableRef.parse("t", "example.com:my-project", "d").project == "example.com:my-project"


@pytest.mark.parametrize(
    "project, dataset, table",
    [
        ("p", "d", "t`; DROP TABLE x; --"),
        ("p", "d", "t t"),
        ("p", "d-1", "t"),  # datasets take no hyphens
        ("P", "d", "t"),  # projects are lower case
        ("p", "d", ""),
        ("p", "d", "t\n"),
    ],
)
def test_table_ref_rejects_anything_but_plain_names(project, dataset, table):
    with pytest.raises(ValueError, match="invalid BigQuery"):
        schema.TableRef(project, dataset, table)


def test_check_columns_is_case_insensitive_and_allows_date_for_timestamps():
    found = schema.check_events_columns(
        "events", {"User_ID": "STRING", "article_id": "STRING", "viewed_at": "DATE", "x": "JSON"}
    )
    assert found == {
        "user_id": ("User_ID", "STRING"),
        "article_id": ("article_id", "STRING"),
        "viewed_at": ("viewed_at", "DATE"),
    }
    relation = schema.events_relation(schema.TableRef("p", "d", "t"), found)
    assert (
        relation
        == "(SELECT `User_ID` AS user_id, `article_id` AS article_id, CAST(`viewed_at` AS TIMESTAMP) AS viewed_at FROM `p.d.t`)"
    )


def test_missing_optional_article_columns_become_typed_nulls():
    found = schema.check_articles_columns("articles", {"article_id": "STRING", "category": "STRING"})
    relation = schema.articles_relation(schema.TableRef("p", "d", "a"), found)
    assert "CAST(NULL AS STRING) AS title" in relation and "CAST(NULL AS TIMESTAMP) AS created_at" in relation
    assert "`category` AS category" in relation


def test_repeated_columns_are_wrong_types():
    assert schema.normalise_type("INTEGER") == "INT64"
    assert schema.normalise_type("STRING", "REPEATED") == "ARRAY<STRING>"
    with pytest.raises(ValueError, match="column 'article_id' has type ARRAY<STRING>, expected STRING"):
        schema.check_articles_columns("articles table", {"article_id": "ARRAY<STRING>"})


def test_every_query_renders_with_only_known_parameters():
    relations = {"events": "(SELECT 1)", "articles": "(SELECT 2)"}
    allowed = {
        "as_of",
        "history_length",
        "max_article_age_days",
        "lookback_days",
        "not_after",
        "include_first_views",
        "seen_length",
        "split",
        "validation_from",
        "test_from",
    }
    for name in sql.QUERIES:
        text = sql.render_query(name, relations)
        assert "{{" not in text and "--" not in text, name
        assert sql.query_parameters(text) <= allowed, name
        assert "as_of" in sql.query_parameters(text)
    with pytest.raises(ValueError, match="no relation for placeholder"):
        sql.render_query("articles", {"events": "(SELECT 1)"})


def test_every_query_starts_from_the_one_shared_cleaning_fragment():
    relations = {"events": "`p.d.events`", "articles": "`p.d.articles`"}
    for name in sql.QUERIES:
        assert sql.read_query(name).count("\n{{cleaned_inputs}},\n") == 1, name
        rendered = sql.render_query(name, relations)
        assert "{{" not in rendered, name
        for cte in ("articles AS (", "valid_events AS (", "cutoff AS (", "events AS ("):
            assert rendered.count(f"\n{cte}") == 1, (name, cte)
        assert rendered.startswith("WITH\narticles AS ("), name


def test_strip_comments_keeps_strings_and_identifiers():
    text = "SELECT '--not' AS a, \"#x\" AS b -- drop @as_of\nFROM `p.d-t` /* @x */ WHERE c = 'it''s'"
    stripped = sql.strip_comments(text)
    assert "@as_of" not in stripped and "@x" not in stripped
    assert re.sub(r"\s+", " ", stripped).strip() == "SELECT '--not' AS a, \"#x\" AS b FROM `p.d-t` WHERE c = 'it''s'"
