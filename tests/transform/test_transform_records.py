"""components.transform.records: per-record validation, reasons, dead letters and the raw layout."""

from __future__ import annotations

import json
import math

import pyarrow as pa
import pytest
from transform_testdata import EXAMPLES_SCHEMA, bad_rows, example, good_rows

from components.transform import records
from homefeed import features


def _batch(rows, schema=EXAMPLES_SCHEMA) -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist(rows, schema=schema)


def test_good_rows_pass_and_are_split_in_the_raw_layout():
    rows = good_rows()
    checked = records.validate(_batch(rows), source="x.parquet")
    assert checked.records_in == len(rows) and checked.dead_letters == []
    assert sorted(checked.by_split) == sorted(features.SPLITS)
    for split, batch in checked.by_split.items():
        assert batch.schema == records.RAW_ARROW_SCHEMA
        assert batch.num_rows == sum(r[features.SPLIT] == split for r in rows), split
    train = checked.by_split[features.TRAIN_SPLIT]
    expected_train = [r for r in rows if r[features.SPLIT] == features.TRAIN_SPLIT]
    # order kept; scalars wrapped as one-element lists; histories unchanged (not truncated here)
    assert train.column(features.LABEL).to_pylist() == [[r[features.LABEL]] for r in expected_train]
    assert train.column(features.HISTORY).to_pylist() == [r[features.HISTORY] for r in expected_train]
    assert train.column(features.EXAMPLE_AGE).to_pylist() == [[r[features.EXAMPLE_AGE]] for r in expected_train]


@pytest.mark.parametrize("reason,row", bad_rows(), ids=[reason for reason, _ in bad_rows()])
def test_each_malformed_record_gets_its_reason(reason, row):
    good = example("ok", "a01", ["a02"], features.TRAIN_SPLIT, 1.0)
    checked = records.validate(_batch([good, row, good]), source="x.parquet")
    assert checked.reason_counts == {reason: 1}
    letter = checked.dead_letters[0]
    assert letter["reason"] == reason and letter["source"] == "x.parquet"
    assert letter["record"][features.USER_ID] == row[features.USER_ID]
    json.loads(records.dead_letter_line(letter))  # valid JSON (NaN, timestamps included)
    assert checked.by_split[features.TRAIN_SPLIT].num_rows == 2


def test_first_failing_check_is_the_one_reason_and_all_reasons_are_known():
    row = example("u", "a01", ["a02"], "test", math.inf)
    row[features.LABEL] = ""
    checked = records.validate(_batch([row]))
    assert [d["reason"] for d in checked.dead_letters] == ["label is empty"]
    assert len(set(records.REASONS)) == len(records.REASONS)


def test_more_problems_are_caught():
    cases = {
        "history and recent_queries are empty": {features.HISTORY: [], "history_category": [], "history_region": []},
        "history has a null value": {features.HISTORY: ["a01", None]},
        "history_region has an empty string": {"history_region": [""]},
        "user_id is null": {features.USER_ID: None},
        "split is null": {features.SPLIT: None},
        "example_age_days is null": {features.EXAMPLE_AGE: None},
        "example_age_days is not finite": {features.EXAMPLE_AGE: -math.inf},
        "history_category is null": {"history_category": None},
    }
    base = example("u", "a01", ["a02"], features.TEST_SPLIT, 1.0)
    rows = [{**base, **change} for change in cases.values()]
    checked = records.validate(_batch(rows))
    assert [d["reason"] for d in checked.dead_letters] == list(cases)
    assert checked.by_split == {}


def test_compatible_types_are_converted_and_wrong_types_flag_every_row():
    rows = good_rows()[:3]
    table = pa.Table.from_pylist(rows, schema=EXAMPLES_SCHEMA)
    converted = table.set_column(
        table.schema.get_field_index(features.EXAMPLE_AGE),
        pa.field(features.EXAMPLE_AGE, pa.int64()),
        pa.array([1, 2, 3], pa.int64()),
    ).set_column(
        table.schema.get_field_index(features.LABEL),
        pa.field(features.LABEL, pa.large_string()),
        table.column(features.LABEL).cast(pa.large_string()),
    )
    checked = records.validate(converted.combine_chunks().to_batches()[0])
    assert checked.dead_letters == []
    ages = [v for b in checked.by_split.values() for v in b.column(features.EXAMPLE_AGE).to_pylist()]
    assert sorted(ages) == [[1.0], [2.0], [3.0]]

    wrong = table.set_column(
        table.schema.get_field_index(features.HISTORY),
        features.HISTORY,
        pa.array(["a,b"] * 3),
    ).drop_columns([features.SPLIT])
    checked = records.validate(wrong.to_batches()[0])
    assert checked.reason_counts == {"history has the wrong type": 3}  # checked before split
    assert checked.by_split == {}
    assert records.schema_problems(wrong.schema) == [
        "column history has type string, expected list<string>",
        "missing column split",
    ]


def test_sliced_batches_validate_like_whole_ones():
    rows = good_rows()
    for _, row in bad_rows():
        rows.insert(5, row)
    whole = records.validate(_batch(rows))
    parts = [records.validate(b) for b in records.split_batches(_batch(rows), 7)]
    assert sum(p.records_in for p in parts) == len(rows)
    assert sum((p.reason_counts for p in parts), start=type(whole.reason_counts)()) == whole.reason_counts
    for split in features.SPLITS:
        joined = [r for p in parts if split in p.by_split for r in p.by_split[split].to_pylist()]
        assert joined == whole.by_split[split].to_pylist()


def test_queries_are_optional_normalised_and_allow_an_empty_history():
    first_view = {**example("u01", "a01", [], "train", 1.0), features.RECENT_QUERIES: ["ＡＢＣ Stroller"]}
    nothing = {**example("u02", "a01", [], "train", 1.0), features.RECENT_QUERIES: []}
    checked = records.validate(pa.RecordBatch.from_pylist([first_view, nothing], schema=EXAMPLES_SCHEMA))
    assert [d["reason"] for d in checked.dead_letters] == ["history and recent_queries are empty"]
    good = checked.by_split["train"].to_pylist()[0]
    assert good[features.RECENT_QUERIES] == ["abc stroller"] and good[features.HISTORY] == []
    # An extract from before searches existed: no column, every row has no queries.
    old = pa.RecordBatch.from_pylist([example("u03", "a01", ["a02"], "test", 1.0)], schema=EXAMPLES_SCHEMA)
    old = old.drop_columns([features.RECENT_QUERIES])
    assert records.validate(old).by_split["test"].to_pylist()[0][features.RECENT_QUERIES] == []
