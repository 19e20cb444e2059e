"""Local Parquet/CSV input: read, typed per the contract, loaded into the emulator, extracted."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from extract_testdata import ARTICLES, EVENTS, articles_table, events_table, ts

from components.extract import extract, input_files, output
from homefeed.config import ExtractConfig

EVENTS_CSV = """\
User_ID,article_id,viewed_at,device
0042,0007,2024-01-01T10:00:00Z,phone
0042,0010,2024-01-02 10:00:00+00:00,phone
0042,0007,2024-01-03T12:00:00+02:00,web
0043,0010,2024-01-02,web
0043,0007,2024-01-02T01:00:00,web
"""
ARTICLES_CSV = """\
article_id,title,category,created_at,status
0007,"Phone, used",phones,2023-12-31,active
0010,Lamp,,2023-11-30T00:00:00Z,
"""


def _csv(tmp_path, events=EVENTS_CSV, articles=ARTICLES_CSV):
    (tmp_path / "events.csv").write_text(events)
    (tmp_path / "articles.csv").write_text(articles)
    return tmp_path / "events.csv", tmp_path / "articles.csv"


def test_csv_ids_stay_strings_and_timestamps_are_utc(tmp_path):
    events_path, _ = _csv(tmp_path)
    events = input_files.read_input_file(events_path, "events")
    assert events.column_names == ["user_id", "article_id", "viewed_at"]  # renamed; extras ignored
    assert events.column("user_id").to_pylist()[0] == "0042"
    times = events.column("viewed_at").to_pylist()
    assert events.schema.field("viewed_at").type == pa.timestamp("us", tz="UTC")
    assert times[2] == ts("2024-01-03 10:00")  # +02:00 converted
    assert times[3] == ts("2024-01-02 00:00") and times[4] == ts("2024-01-02 01:00")  # no zone: UTC


def test_csv_extract_through_a_running_emulator(emulator, dataset, tmp_path):
    events_path, articles_path = _csv(tmp_path)
    # Three days of views: too few for the time split's day-long windows.
    config = ExtractConfig(project=emulator.project, dataset=dataset, history_length=5, split="per-user")
    summary = extract.extract_local(events_path, articles_path, tmp_path / "out", config, endpoint=emulator.endpoint)
    result = output.read_extract(tmp_path / "out")
    rows = {(r["user_id"], r["label"]): r for r in result.training_examples.to_pylist()}
    # 0043: 2024-01-02 00:00 0010, then 01:00 0007 -> one example; 0042: 0007, 0010, 0007.
    assert sorted(rows) == [("0042", "0007"), ("0042", "0010"), ("0043", "0007")]
    assert rows[("0042", "0007")]["history"] == ["0010", "0007"]
    assert rows[("0043", "0007")]["label_category"] == "phones"
    assert rows[("0043", "0007")]["history_category"] == ["__missing__"]
    corpus = {r["article_id"]: r for r in result.articles.to_pylist()}
    assert corpus["0007"]["title"] == "Phone, used" and corpus["0007"]["created_at"] == ts("2023-12-31 00:00")
    assert summary.source.startswith("emulator at http://127.0.0.1:")


def test_parquet_naive_timestamps_and_categoricals(emulator, dataset, tmp_path):
    frame = events_table(EVENTS).to_pandas()
    frame["viewed_at"] = frame["viewed_at"].dt.tz_localize(None).astype("datetime64[ns]")  # naive, ns
    frame["user_id"] = frame["user_id"].astype("category")
    frame.to_parquet(tmp_path / "events.parquet")
    pq.write_table(articles_table(ARTICLES), tmp_path / "articles.parquet")
    events = input_files.read_input_file(tmp_path / "events.parquet", "events")
    assert events.schema.field("user_id").type == pa.string()
    assert events.column("viewed_at").to_pylist()[0] == ts("2024-01-01 10:00")
    config = ExtractConfig(project=emulator.project, dataset=dataset, history_length=3)
    summary = extract.extract_local(
        tmp_path / "events.parquet", tmp_path / "articles.parquet", tmp_path / "out", config, endpoint=emulator.endpoint
    )
    assert summary.rows["training_examples"] == 6 and summary.as_of == "2024-01-05T10:00:00+00:00"


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="events file not found"):
        extract.extract_local(tmp_path / "nope.parquet", tmp_path / "a.parquet", tmp_path / "out")


def test_unknown_file_type(tmp_path):
    (tmp_path / "events.json").write_text("{}")
    with pytest.raises(ValueError, match="unknown file type"):
        input_files.read_input_file(tmp_path / "events.json", "events")


def test_unreadable_csv_timestamp_names_column_and_row(tmp_path):
    events_path, articles_path = _csv(tmp_path, events=EVENTS_CSV.replace("2024-01-02,web", "last tuesday,web"))
    with pytest.raises(ValueError, match=r"column 'viewed_at': cannot read 'last tuesday' \(data row 4\)"):
        extract.extract_local(events_path, articles_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_csv_missing_column(tmp_path):
    events_path, _ = _csv(tmp_path, events="user_id,article_id\nu1,a1\n")
    with pytest.raises(ValueError, match=r"events file .*events\.csv': missing required column 'viewed_at'"):
        input_files.read_input_file(events_path, "events")


def test_parquet_wrong_type(tmp_path):
    table = events_table(EVENTS).set_column(1, "article_id", pa.array(range(len(EVENTS)), pa.int32()))
    pq.write_table(table, tmp_path / "events.parquet")
    with pytest.raises(ValueError, match=r"column 'article_id' has type INT64, expected STRING \(ids must be strings"):
        input_files.read_input_file(tmp_path / "events.parquet", "events")


def test_date_created_at_is_read_as_utc_midnight(emulator, dataset, tmp_path):
    frame = articles_table(ARTICLES).to_pandas()
    frame["created_at"] = frame["created_at"].dt.date  # a DATE column
    frame.to_parquet(tmp_path / "articles.parquet")
    pq.write_table(events_table(EVENTS), tmp_path / "events.parquet")
    assert (
        input_files.read_input_file(tmp_path / "articles.parquet", "articles").schema.field("created_at").type
        == pa.date32()
    )
    config = ExtractConfig(project=emulator.project, dataset=dataset, max_article_age_days=30)
    extract.extract_local(
        tmp_path / "events.parquet", tmp_path / "articles.parquet", tmp_path / "out", config, endpoint=emulator.endpoint
    )
    corpus = {r["article_id"]: r["created_at"] for r in output.read_extract(tmp_path / "out").articles.to_pylist()}
    assert corpus == {"a2": ts("2024-01-01 00:00"), "a3": None}
