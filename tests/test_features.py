"""homefeed/features.py, the one owner of feature and column names: its invariants."""

from __future__ import annotations

import math

import pytest

from homefeed import features


def test_history_and_label_columns_are_parallel_to_the_attributes():
    attrs = features.ARTICLE_ATTRIBUTES
    assert (features.HISTORY, *(f"history_{a}" for a in attrs)) == features.HISTORY_COLUMNS
    assert (features.LABEL, *(f"label_{a}" for a in attrs)) == features.LABEL_COLUMNS
    assert len(features.HISTORY_COLUMNS) == len(features.LABEL_COLUMNS) == len(attrs) + 1
    assert len(set(features.HISTORY_COLUMNS + features.LABEL_COLUMNS)) == 2 * (len(attrs) + 1)


def test_every_column_of_a_stage_is_in_its_contract():
    example = features.EXAMPLE_COLUMNS
    for column in (*features.HISTORY_COLUMNS, features.RECENT_QUERIES):
        assert example[column] == "ARRAY<STRING>"
    for column in features.LABEL_COLUMNS:
        assert example[column] == "STRING"
    assert example[features.LABEL_TITLE] == "STRING" and example[features.LABEL_AGE] == "FLOAT64"
    assert set(features.SERVING_FEATURES) <= set(example)
    assert set(features.ARTICLE_FEATURES) <= set(example)
    assert set(features.SERVING_FEATURES).isdisjoint(features.ARTICLE_FEATURES)
    histories = features.USER_HISTORY_COLUMNS
    assert set(features.HISTORY_COLUMNS) <= set(histories) and histories[features.SEEN] == "ARRAY<STRING>"
    assert set(features.CORPUS_ARTICLE_COLUMNS) <= set(features.CORPUS_COLUMNS)
    assert set(features.ARTICLES_OPTIONAL_COLUMNS) <= set(features.CORPUS_COLUMNS) | {"status", "removed_at"}
    # The listings keep every lifetime column of the input, never its status.
    assert set(features.LISTINGS_COLUMNS) == {"article_id", *features.ARTICLES_OPTIONAL_COLUMNS} - {"status"}


def test_vocabulary_names_are_distinct_and_named_for_their_attribute():
    names = [
        features.ARTICLE_VOCAB,
        *(features.vocabulary_name(a) for a in features.ARTICLE_ATTRIBUTES),
        features.SEARCH_TOKEN_VOCAB,
    ]
    assert len(set(names)) == len(names)
    assert all(n.endswith("_vocab") for n in names)
    assert features.vocabulary_name("category") == "category_vocab"


def test_the_serving_signatures_take_the_spec_s_columns():
    from homefeed.layout import model_dir

    assert model_dir.HISTORY_INPUTS == features.HISTORY_COLUMNS
    assert model_dir.ARTICLE_INPUTS == features.ARTICLE_FEATURES
    assert (*features.HISTORY_COLUMNS, features.RECENT_QUERIES, features.EXAMPLE_AGE) == model_dir.USER_INPUTS


def test_transformed_names_do_not_collide():
    raw = {*features.EXAMPLE_COLUMNS, features.TITLE_TOKENS, features.AGE_BUCKET, features.SEARCH_TOKENS}
    assert all(features.transformed_name(c) not in raw for c in raw)


@pytest.mark.parametrize(
    ("days", "bucket"),
    [
        (-1.0, 0),
        (float("nan"), 0),
        (0.0, 1),
        (0.5 / 24, 1),
        (1 / 24, 2),
        (2.9 / 24, 2),
        (3 / 24, 3),
        (7 / 24, 4),
        (1.0, 5),
        (10.0, 8),
        (365.0, 14),
        (1e9, features.AGE_BUCKETS - 1),
    ],
)
def test_age_bucket_doubles_in_hours(days, bucket):
    assert features.age_bucket(days) == bucket
    if days >= 0:  # the independent form: 1 + floor(log2(1 + hours)), capped
        assert bucket == min(features.AGE_BUCKETS - 1, 1 + math.floor(math.log2(1 + days * 24)))


def test_age_days_is_never_negative_and_unknown_without_created_at():
    day = 86_400_000
    assert features.age_days(None, 5 * day) == features.UNKNOWN_AGE
    assert features.age_days(2 * day, 5 * day) == 3.0
    assert features.age_days(6 * day, 5 * day) == 0.0  # created "in the future": brand new
