"""`candidates extract`: argument handling, the local default (its own emulator), errors as one line."""

from __future__ import annotations

import argparse
import json
import re
import urllib.error
import urllib.request

import pyarrow.parquet as pq
import pytest
from extract_testdata import ARTICLES, EVENTS, articles_table, events_table

from components.extract import cli
from homefeed.errors import CommandError
from homefeed_cli import cli as homefeed_cli


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="candidates")
    cli.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["extract", *argv])


@pytest.fixture
def input_files(tmp_path):
    pq.write_table(events_table(EVENTS), tmp_path / "events.parquet")
    pq.write_table(articles_table(ARTICLES), tmp_path / "articles.parquet")
    return str(tmp_path / "events.parquet"), str(tmp_path / "articles.parquet")


def test_local_default_starts_and_stops_its_own_emulator(input_files, tmp_path, capsys, caplog):
    events, articles = input_files
    caplog.set_level("INFO", logger="components.extract")
    args = _args("--events", events, "--articles", articles, "--out", str(tmp_path / "out"), "--history-length", "3")
    assert args.handler(args) == 0
    printed = capsys.readouterr().out
    # No dataset.json beside the files: the time split, one day each before as_of.
    assert (
        "training_examples   6 (2 train, 2 validation, 2 test)" in printed
        and "as_of               2024-01-05T10:00:00+00:00" in printed
        and "split               time: train before 2024-01-03T10:00:00+00:00" in printed
    )
    assert (tmp_path / "out" / "_SUCCESS").is_file()
    endpoint = re.search(r"ready at (http://127\.0\.0\.1:\d+)", caplog.text).group(1)
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        urllib.request.urlopen(f"{endpoint}/healthz", timeout=2)  # the emulator is gone


def test_endpoint_with_tables_already_loaded(emulator, dataset, input_files, tmp_path, capsys):
    events, articles = input_files
    # First load through --endpoint with files, then extract again from the loaded tables only.
    common = ["--endpoint", emulator.endpoint, "--project", emulator.project, "--dataset", dataset]
    common += ["--split", "per-user"]  # two days of views before the earlier as_of: too few for day-long windows
    args = _args("--events", events, "--articles", articles, "--out", str(tmp_path / "one"), *common)
    assert args.handler(args) == 0
    args = _args("--out", str(tmp_path / "two"), "--as-of", "2024-01-03T12:00:00Z", "--json", *common)
    assert args.handler(args) == 0
    out = capsys.readouterr().out  # the text summary of the first run, then the JSON one
    summary = json.loads(out[out.index("{") :])
    assert summary["as_of"] == "2024-01-03T12:00:00+00:00"
    assert summary["rows"]["training_examples"] == 4
    assert summary["source"] == f"emulator at {emulator.endpoint}"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--events", "e.parquet"], "give both --events and --articles"),
        ([], "say where the tables are"),
        (["--project", "p"], "say where the tables are"),
    ],
)
def test_incomplete_arguments(argv, message, tmp_path):
    args = _args(*argv, "--out", str(tmp_path / "out"))
    with pytest.raises(CommandError, match=message):
        args.handler(args)


def test_bad_input_is_one_line_and_exit_status_2(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(homefeed_cli, "COMMAND_MODULES", ("components.extract.cli",))
    (tmp_path / "events.csv").write_text("user_id,article_id\nu1,a1\n")
    (tmp_path / "articles.csv").write_text("article_id\na1\n")
    status = homefeed_cli.main(
        [
            "extract",
            "--events",
            str(tmp_path / "events.csv"),
            "--articles",
            str(tmp_path / "articles.csv"),
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert status == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert error[-1].startswith("candidates extract: error: events file") and "'viewed_at'" in error[-1]
    assert not (tmp_path / "out").exists()


def test_help_explains_the_modes(capsys):
    with pytest.raises(SystemExit):
        _args("--help")
    text = capsys.readouterr().out
    for flag in (
        "--events",
        "--articles",
        "--endpoint",
        "--project",
        "--dataset",
        "--as-of",
        "--history-length",
        "--max-article-age-days",
    ):
        assert flag in text
    assert "bqemulator" in text and "_SUCCESS" in text
