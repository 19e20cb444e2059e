"""One shared run of the transform job for the job, skew and OOV tests (see transform_testdata)."""

from __future__ import annotations

import contextlib
import io
import json

import pytest
from transform_testdata import H, TransformRun, bad_rows, good_rows, transform_parser, write_extract_dir

from homefeed.layout import extract_dir as extract_layout


@pytest.fixture(scope="session")
def transform_run(tmp_path_factory: pytest.TempPathFactory) -> TransformRun:
    """Runs the transform CLI handler once (DirectRunner) and returns what it wrote."""
    from components.transform import cli as transform_cli

    base = tmp_path_factory.mktemp("transform")
    good, bad = good_rows(), bad_rows()
    # Malformed rows interleaved with good ones, as they would be in a real file.
    rows = list(good)
    for i, (_, row) in enumerate(bad):
        rows.insert(3 * i + 1, row)
    examples_dir = write_extract_dir(base / "extract", rows)
    output_dir = base / "transform"
    args = transform_parser().parse_args(
        [
            "transform",
            "--examples",
            str(examples_dir),
            "--out",
            str(output_dir),
            "--history-length",
            str(H),
            "--batch-size",
            "16",
            "--job_name",
            "transform-test",  # a Beam option, passed through unchanged
        ]
    )
    assert args.beam_args == ["--job_name", "transform-test"]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert transform_cli.handle(args) == 0
    summary = json.loads((output_dir / "transform_summary.json").read_text())
    assert (output_dir / extract_layout.SUCCESS_MARKER).exists()
    return TransformRun(examples_dir, output_dir, good, bad, summary, printed.getvalue())
