"""`candidates pipeline run-local`: what is checked before any task starts, and how progress shows.

The full local run is tests/test_end_to_end.py (marked e2e).
"""

from __future__ import annotations

import io
import json
import re

import pytest

from homefeed_cli import cli
from pipeline.run_local import LocalRunResult, _ProgressStream, run_local, stage_seconds


@pytest.fixture
def inputs(tmp_path):
    events, articles = tmp_path / "events.parquet", tmp_path / "articles.parquet"
    events.write_bytes(b"not read before the checks")
    articles.write_bytes(b"not read before the checks")
    return events, articles


def test_missing_input_file_is_named(tmp_path, inputs):
    _, articles = inputs
    with pytest.raises(FileNotFoundError, match="--events .*nope.parquet"):
        run_local(tmp_path / "nope.parquet", articles, tmp_path / "work")
    assert not (tmp_path / "work" / "pipeline_runs").exists()


def test_unknown_parameter_is_refused_with_the_known_ones(tmp_path, inputs):
    with pytest.raises(ValueError, match=r"unknown pipeline parameter\(s\) \['epochz'\].*'epochs'"):
        run_local(*inputs, tmp_path / "work", {"epochz": 3})


def test_parameters_run_local_sets_itself_are_refused(tmp_path, inputs):
    with pytest.raises(ValueError, match="publish_root"):
        run_local(*inputs, tmp_path / "work", {"publish_root": "/elsewhere"})


def test_cli_reports_bad_input_in_one_line(tmp_path, inputs, capsys):
    _, articles = inputs
    status = cli.main(
        [
            "pipeline",
            "run-local",
            "--events",
            str(tmp_path / "missing.csv"),
            "--articles",
            str(articles),
            "--workdir",
            str(tmp_path / "w"),
        ]
    )
    err = capsys.readouterr().err
    assert status == 2 and "missing.csv" in err and "Traceback" not in err


def test_progress_stream_echoes_progress_and_logs_everything(tmp_path):
    console = io.StringIO()
    with open(tmp_path / "log", "w") as log:
        stream = _ProgressStream(log, console, echo_all=False)
        stream.write("12:00:00.000 - INFO - Executing task 'extract'\n    {\n      \"executor\": 1\n")
        stream.write(
            "    [homefeed] 12:00:01 extract INFO x: read 10 events\n    [homefeed] 12:00:02 root: Wrote executor output file to /x\n"
        )
        stream.write("partial line without newline")
        stream.flush()
    shown = console.getvalue().splitlines()
    assert shown == [
        "12:00:00.000 - INFO - Executing task 'extract'",
        "[homefeed] 12:00:01 extract INFO x: read 10 events",
    ]
    logged = (tmp_path / "log").read_text()
    assert '"executor": 1' in logged and "partial line without newline" in logged


def test_stage_seconds_come_from_each_components_metrics(tmp_path):
    for task, seconds in (("extract", 3.5), ("train", 12.0)):
        (tmp_path / task).mkdir()
        output = {"artifacts": {"m": {"artifacts": [{"metadata": {"seconds": seconds, "rows": 4}}]}}}
        (tmp_path / task / "executor_output.json").write_text(json.dumps(output))
    assert stage_seconds(tmp_path) == {"extract": 3.5, "train": 12.0}


def test_summary_says_where_things_are_and_how_to_serve(tmp_path):
    result = LocalRunResult(
        workdir=tmp_path,
        run_dir=tmp_path / "r",
        model_dir=tmp_path / "r/train/model",
        index_dir=tmp_path / "r/build-index/index",
        evaluation_dir=tmp_path / "r/evaluate/evaluation",
        published=True,
        version="20260101T000000Z",
        reason="published: fine",
        recall_at_200=0.5,
        metrics={"recall@200": 0.5, "popularity_recall@200": 0.3, "recall@10": 0.1},
        stage_seconds={"train": 2.0},
    )
    text = "\n".join(result.summary_lines())
    assert f"candidates serve --model {tmp_path}" in text
    assert "held out" not in text  # no held-out model named: nothing said about one
    held_out = LocalRunResult(**{**vars(result), "held_out_model_dir": tmp_path / "r/train/model"})
    assert "the figures below are its, on the test split" in "\n".join(held_out.summary_lines())
    assert re.search(r"recall@200 +0\.5000 \(popularity 0\.3000\)", text)
    assert str(tmp_path / "versions" / "20260101T000000Z") in text
    refused = LocalRunResult(**{**vars(result), "published": False, "reason": "not published: worse"})
    assert "published:   no - not published: worse" in "\n".join(refused.summary_lines())
