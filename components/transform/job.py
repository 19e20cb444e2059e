"""The transform job: EXTRACT_DIR -> TRANSFORM_DIR with TF Transform on Apache Beam.

`run_transform(examples_dir, output_dir, config)` is the one entry point (the CLI and the Kubeflow
component wrap it): it checks the input (inputs.py), stages the output (files.py), runs the Beam
pipeline (beam_job.py, writing with tfrecord_sink.py), then writes the summary and `_SUCCESS`.

All file access goes through Beam's `FileSystems` (or TensorFlow's gfile inside TFT), so
`gs://` works and Dataflow, Flink or Spark can run it from the pass-through `config.beam_args`.
Local outputs are staged in a hidden sibling directory and moved into place when complete
(homefeed.atomic); remote outputs are written in place with `_SUCCESS` last.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.runners.runner import PipelineState

from components.transform import beam_job, direct_runner, files, records
from components.transform.beam_job import pipeline_options
from components.transform.inputs import InputFile, find_input_files
from homefeed import config as config_lib
from homefeed.layout import extract_dir
from homefeed.layout import transform_dir as layout

__all__ = ["InputFile", "NoValidRecordsError", "find_input_files", "pipeline_options", "run_transform"]

LOG = logging.getLogger(__name__)

_TFT_TEMP_DIR = ".tft_tmp"


class NoValidRecordsError(ValueError):
    """The input had rows, but none (or no training row) passed validation."""


def _vocabulary_sizes(output_dir: str) -> dict[str, int]:
    import tensorflow_transform as tft

    transform_output = tft.TFTransformOutput(output_dir)
    return {name: int(transform_output.vocabulary_size_by_name(name)) for name in layout.VOCABULARIES}


def _summary_line(summary: dict[str, Any]) -> str:
    reasons = ", ".join(f"{r}: {n}" for r, n in summary["dead_lettered_by_reason"].items()) or "none"
    vocabs = ", ".join(f"{name}={size}" for name, size in summary["vocabulary_sizes"].items())
    return (
        f"transform {summary['status']}: {summary['records_in']} records in, "
        + " + ".join(f"{summary['records_out'][s]} {s}" for s in layout.SPLIT_DIRS)
        + " out, "
        f"{summary['dead_lettered']} dead-lettered ({reasons}); vocabularies {vocabs or 'not built'}; "
        f"{summary['seconds']['total']:.1f} s -> {summary['output_dir']}"
    )


def run_transform(
    examples_dir: str,
    output_dir: str,
    config: config_lib.TransformConfig | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Transforms an extract output into a TRANSFORM_DIR (docs/architecture.md) and returns its summary.

    Args:
      examples_dir: EXTRACT_DIR (local path or gs://...), with `_SUCCESS`.
      output_dir: TRANSFORM_DIR to write. Must not exist, be empty, or be a failed transform
        output; a finished one is replaced only with `overwrite`.
      config: transform settings (defaults if None).
      overwrite: replace a finished transform output at `output_dir`.

    Returns:
      the summary written to `transform_summary.json` (records in/out, dead letters by reason,
      vocabulary sizes, seconds).

    Raises:
      FileNotFoundError: the extract output is incomplete (see `find_input_files`).
      ValueError: bad input schema, no rows, an output directory that must not be replaced.
      NoValidRecordsError: every record (or every train record) was dead-lettered; the dead
        letters and a failed summary are left in `output_dir` (no `_SUCCESS`).
      RuntimeError: the Beam pipeline did not finish.
    """
    config = config or config_lib.TransformConfig()
    options = pipeline_options(config)  # bad Beam options fail here, before anything is read or written
    started = time.monotonic()
    inputs = find_input_files(examples_dir)
    files.prepare_output(output_dir, overwrite)
    total_rows = sum(f.num_rows for f in inputs)
    LOG.info(
        "transform: %d training examples in %d file(s) under %s -> %s",
        total_rows,
        len(inputs),
        examples_dir,
        output_dir,
    )
    # Read only the columns we need when every file has them (all do, after find_input_files).
    columns = list(records.REQUIRED_COLUMNS)
    if all(name in f.schema.names for f in inputs for name in records.QUERY_COLUMNS):
        columns += list(records.QUERY_COLUMNS)  # optional: older extracts lack it (empty queries)
    pattern = (
        inputs[0].path
        if len(inputs) == 1
        else files.join(files.join(examples_dir, extract_dir.TRAINING_EXAMPLES_FILE), "*.parquet")
    )

    local = files.is_local(output_dir)
    staging = files.staging_dir(output_dir)
    if not local and files.matching(files.join(output_dir, "**")):
        # A previous (failed, or finished with --overwrite) output: clear it before writing in
        # place, so no stale part files mix with the new ones.
        LOG.info("transform: removing the previous output at %s", output_dir)
        files.delete(output_dir)
    files.mkdirs(staging)
    temp_dir = files.join(staging, _TFT_TEMP_DIR)
    try:
        pipeline_started = time.monotonic()
        pipeline = beam.Pipeline(options=options)
        beam_job.build_pipeline(pipeline, pattern, columns, staging, temp_dir, config)
        LOG.info(
            "transform: running the Beam pipeline on %s (%s)",
            config.runner,
            f"{config.direct_num_workers} worker, {config.direct_running_mode}"
            if config.runner in ("DirectRunner", "direct")
            else "options passed through",
        )
        # DirectRunner's workers exchange data over gRPC; its time-based flushing drops records.
        flush = (
            direct_runner.size_based_data_flush()
            if direct_runner.uses_parallel_direct_runner(options)
            else contextlib.nullcontext()
        )
        with flush:
            result = pipeline.run()
            state = result.wait_until_finish()
        if state not in (None, PipelineState.DONE):
            raise RuntimeError(f"the Beam pipeline ended in state {state}")
        pipeline_seconds = time.monotonic() - pipeline_started
        LOG.info("transform: pipeline finished in %.1f s", pipeline_seconds)

        counts = json.loads(files.read_text(files.join(staging, beam_job.COUNTS_FILE)))
        FileSystems.delete([files.join(staging, beam_job.COUNTS_FILE)])
        try:
            files.delete(temp_dir)
        except Exception:  # scratch space only: a leftover is harmless, a failed job is not
            LOG.warning("transform: could not delete scratch directory %s", temp_dir, exc_info=True)
        dead_by_reason = dict(
            sorted(
                ((key[len(beam_job.DEAD) :], n) for key, n in counts.items() if key.startswith(beam_job.DEAD)),
                key=lambda item: (-item[1], item[0]),
            )
        )
        summary: dict[str, Any] = {
            "status": "ok",
            "examples_dir": examples_dir,
            "output_dir": output_dir,
            "input_files": [f.path for f in inputs],
            "records_in": int(counts.get(beam_job.RECORDS_IN, 0)),
            "valid": {s: int(counts.get(beam_job.VALID + s, 0)) for s in layout.SPLIT_DIRS},
            "records_out": {s: int(counts.get(beam_job.OUT + s, 0)) for s in layout.SPLIT_DIRS},
            "dead_lettered": int(sum(dead_by_reason.values())),
            "dead_lettered_by_reason": dead_by_reason,
            "vocabulary_sizes": {},
            "num_oov_buckets": config.num_oov_buckets,
            # Which splits the vocabularies and statistics were built from ("train" or "all").
            "analyzed_splits": config.analyze_splits,
            "seconds": {"pipeline": round(pipeline_seconds, 3)},
            "config": config_lib.to_dict(config),
        }
        if summary["valid"][layout.TRAIN_DIR] == 0:
            summary["status"] = "failed"
            summary["seconds"]["total"] = round(time.monotonic() - started, 3)
            files.write_text(files.join(staging, layout.SUMMARY_FILE), json.dumps(summary, indent=2) + "\n")
            # Leave the dead letters where the user looks, but never over a finished output.
            kept_at = output_dir
            if local:
                if FileSystems.exists(files.join(output_dir, layout.SUCCESS_MARKER)):
                    kept_at, staging = staging, ""
                else:
                    files.publish_local(staging, output_dir)
            what = (
                f"all {summary['records_in']} records were malformed"
                if summary["dead_lettered"] == summary["records_in"]
                else f"none of the {summary['records_in']} records is a valid train example"
            )
            reasons = "; ".join(f"{r}: {n}" for r, n in dead_by_reason.items()) or "no train split rows"
            raise NoValidRecordsError(
                f"{what} ({reasons}); see {files.join(kept_at, layout.DEAD_LETTER_DIR)}/ for the records and reasons"
            )
        for split in layout.SPLIT_DIRS[1:]:
            if summary["valid"][split] == 0:
                LOG.warning(
                    "transform: no valid %s examples: %s/ holds an empty file", split, files.join(output_dir, split)
                )
        if summary["valid"] != summary["records_out"]:
            raise RuntimeError(
                f"records lost in the transform: valid {summary['valid']} but wrote {summary['records_out']}"
            )

        summary["vocabulary_sizes"] = _vocabulary_sizes(staging)
        corpus_dir = files.join(staging, layout.CORPUS_DIR)
        files.mkdirs(corpus_dir)
        FileSystems.copy([files.join(examples_dir, extract_dir.CORPUS_FILE)], [files.join(staging, layout.CORPUS_FILE)])
        summary["seconds"]["total"] = round(time.monotonic() - started, 3)
        files.write_text(files.join(staging, layout.SUMMARY_FILE), json.dumps(summary, indent=2) + "\n")
        files.write_text(files.join(staging, layout.SUCCESS_MARKER), "")
        if local:
            files.publish_local(staging, output_dir)
    except BaseException:
        if local and staging and os.path.exists(staging):
            shutil.rmtree(staging, ignore_errors=True)
        raise
    LOG.info("%s", _summary_line(summary))
    return summary
