"""The transform job: EXTRACT_DIR -> TRANSFORM_DIR with TF Transform on Apache Beam.

`run_transform(examples_dir, output_dir, config)` is the one entry point (the CLI and the Kubeflow
component wrap it). The Beam pipeline it builds:

  training_examples.parquet --ReadAllFromParquetBatched--> Arrow tables
    --Validate (records.validate, vectorised)--> train / validation / test record batches, dead letters, counts
  train --AnalyzeAndTransformDataset--> transformed train + transform_fn --WriteTransformFn
  validation, test  --TransformDataset(transform_fn)--> transformed validation, test
  each split --encode per batch (tfx_bsl)--> tf.Examples --gzip TFRecord sink
  dead letters --WriteToText (JSON lines); counts --CombinePerKey--> one JSON file for the summary

All file access goes through Beam's `FileSystems` (or TensorFlow's gfile inside TFT), so
`gs://` works and Dataflow, Flink or Spark can run it from the pass-through `config.beam_args`.
Local outputs are staged in a hidden sibling directory and renamed into place when complete;
remote outputs are written in place with `_SUCCESS` last.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import shutil
import struct
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io import filebasedsink, tfrecordio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.runner import PipelineState

from components.transform import records
from homefeed import config as config_lib
from homefeed import features

LOG = logging.getLogger(__name__)

TRAIN_DIR = features.TRAIN_SPLIT
SPLIT_DIRS = features.SPLITS  # one directory of transformed examples per split, named as the split
CORPUS_DIR = "corpus"
DEAD_LETTER_DIR = "dead_letter"
SUMMARY_FILE = "transform_summary.json"
EXAMPLES_PREFIX = "part"
EXAMPLES_SUFFIX = ".tfrecord.gz"
DEAD_LETTER_SUFFIX = ".jsonl"
VOCABULARIES: tuple[str, ...] = (
    features.ARTICLE_VOCAB,
    *(features.vocabulary_name(a) for a in features.ARTICLE_ATTRIBUTES),
    features.SEARCH_TOKEN_VOCAB,
)
# Written by the pipeline, read back by the driver for the summary, then deleted.
_COUNTS_FILE = "_counts.json"
_TFT_TEMP_DIR = ".tft_tmp"
# Count keys.
_RECORDS_IN = "records_in"
_VALID = "valid/"
_OUT = "records_out/"
_DEAD = "dead_letter/"


class NoValidRecordsError(ValueError):
    """The input had rows, but none (or no training row) passed validation."""


@dataclass(frozen=True)
class InputFile:
    """One Parquet file of training examples, as found before the job runs."""

    path: str
    num_rows: int
    schema: pa.Schema


# ---------------------------------------------------------------------------------------------
# Paths and small file helpers (Beam FileSystems: local paths and gs:// alike).
# ---------------------------------------------------------------------------------------------
def _join(base: str, *parts: str) -> str:
    return FileSystems.join(base, *parts)


def _is_local(path: str) -> bool:
    return FileSystems.get_scheme(path) in (None, "file")


def _write_text(path: str, text: str) -> None:
    with FileSystems.create(path, mime_type="text/plain", compression_type=CompressionTypes.UNCOMPRESSED) as f:
        f.write(text.encode("utf-8"))


def _read_text(path: str) -> str:
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        return f.read().decode("utf-8")


def _matching(pattern: str) -> list[str]:
    try:
        result = FileSystems.match([pattern])[0]
    except Exception:  # Beam raises BeamIOError for "no match" on some filesystems
        return []
    return sorted(m.path for m in result.metadata_list)


def _mkdirs(path: str) -> None:
    if _is_local(path):
        os.makedirs(path, exist_ok=True)
    else:
        FileSystems.mkdirs(path)  # a no-op on object stores


# ---------------------------------------------------------------------------------------------
# Input discovery and checks (driver side, before any pipeline runs).
# ---------------------------------------------------------------------------------------------
def find_input_files(examples_dir: str) -> list[InputFile]:
    """The training-example Parquet file(s) of `examples_dir`, with row counts and schemas.

    Accepts `training_examples.parquet` as one file or as a directory of `*.parquet` parts.

    Raises:
      FileNotFoundError: no `_SUCCESS` marker, no examples file, or no corpus file.
      ValueError: a file lacks a required column or has one of the wrong type, or there are no rows.
    """
    if not FileSystems.exists(_join(examples_dir, features.SUCCESS_MARKER)):
        raise FileNotFoundError(
            f"{examples_dir} has no {features.SUCCESS_MARKER} marker: the extract did not finish, "
            "or this is not an extract output directory (run `candidates extract` first)"
        )
    base = _join(examples_dir, features.TRAINING_EXAMPLES_FILE)
    paths = [p for p in _matching(base) if not (_is_local(p) and os.path.isdir(p))]
    if not paths:
        paths = _matching(_join(base, "*.parquet"))
    if not paths:
        raise FileNotFoundError(f"no training examples at {base} (a Parquet file or a directory of *.parquet)")
    corpus = _join(examples_dir, features.CORPUS_FILE)
    if not FileSystems.exists(corpus):
        raise FileNotFoundError(f"no corpus file {corpus} in the extract output")

    found = []
    for path in paths:
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            try:
                parquet = pq.ParquetFile(f)
            except pa.ArrowInvalid as error:
                raise ValueError(f"{path} is not a readable Parquet file: {error}") from error
            found.append(InputFile(path, parquet.metadata.num_rows, parquet.schema_arrow))
        problems = records.schema_problems(found[-1].schema)
        if problems:
            raise ValueError(
                f"{path}: {'; '.join(problems)} (training examples need columns "
                f"{list(records.REQUIRED_COLUMNS)}; see docs/architecture.md, EXTRACT_DIR)"
            )
    total = sum(f.num_rows for f in found)
    if total == 0:
        raise ValueError(
            f"{base} holds no training examples (0 rows in {len(found)} file(s)): nothing to transform"
        )
    return found


# ---------------------------------------------------------------------------------------------
# The Beam pipeline.
# ---------------------------------------------------------------------------------------------
def pipeline_options(config: config_lib.TransformConfig) -> PipelineOptions:
    """Beam options: the runner, DirectRunner parallelism, then `config.beam_args` unchanged.

    The runner is always named (Beam >= 2.68's default runner may try to download Prism).
    `beam_args` come last, so an option given there wins over the typed fields.
    """
    args = [f"--runner={config.runner}"]
    if config.runner in ("DirectRunner", "direct"):
        args += [
            f"--direct_num_workers={config.direct_num_workers}",
            f"--direct_running_mode={config.direct_running_mode}",
        ]
    return PipelineOptions(args + list(config.beam_args))


class _ValidateFn(beam.DoFn):
    """(file name, Arrow table) -> raw record batches per split (tagged with the split's name),
    dead letters and counts."""

    DEAD_LETTER, COUNTS = "dead_letter", "counts"
    _LOG_EVERY_S = 15.0

    def __init__(self, batch_size: int):
        self._batch_size = batch_size
        self._records = beam.metrics.Metrics.counter("transform", "records_in")
        self._dead = beam.metrics.Metrics.counter("transform", "dead_lettered")

    def setup(self) -> None:
        self._seen = 0
        self._last_log = time.monotonic()

    def process(self, element: tuple[str, pa.Table]) -> Iterator[Any]:
        source, table = element
        for batch in records.split_batches(table, self._batch_size):
            checked = records.validate(batch, source=source)
            self._records.inc(checked.records_in)
            self._dead.inc(len(checked.dead_letters))
            yield beam.pvalue.TaggedOutput(self.COUNTS, (_RECORDS_IN, checked.records_in))
            for split, rows in checked.by_split.items():
                yield beam.pvalue.TaggedOutput(self.COUNTS, (_VALID + split, rows.num_rows))
                yield beam.pvalue.TaggedOutput(split, rows)
            for reason, count in checked.reason_counts.items():
                yield beam.pvalue.TaggedOutput(self.COUNTS, (_DEAD + reason, count))
            for letter in checked.dead_letters:
                yield beam.pvalue.TaggedOutput(self.DEAD_LETTER, records.dead_letter_line(letter))
            self._seen += checked.records_in
            if time.monotonic() - self._last_log > self._LOG_EVERY_S:
                self._last_log = time.monotonic()
                LOG.info("validated %d records so far (this worker)", self._seen)


class _EncodeExamplesFn(beam.DoFn):
    """(transformed record batch, passthrough) -> the batch's serialized tf.Examples, as one list.

    Keeping a whole batch per element (instead of one element per example) spares Beam's
    per-element overhead on the write path.
    """

    _LOG_EVERY_S = 15.0

    def __init__(self, split: str):
        self._split = split

    def setup(self) -> None:
        self._encoder = None
        self._done = 0
        self._last_log = time.monotonic()

    def process(self, element: tuple[pa.RecordBatch, Any], schema: Any) -> Iterator[list[bytes]]:
        if self._encoder is None:
            from tfx_bsl.coders import example_coder

            self._encoder = example_coder.RecordBatchToExamplesEncoder(schema)
        yield self._encoder.encode(element[0])
        self._done += element[0].num_rows
        if time.monotonic() - self._last_log > self._LOG_EVERY_S:
            self._last_log = time.monotonic()
            LOG.info("transformed %d %s examples so far (this worker)", self._done, self._split)


class _GzipFile:
    """A gzip stream over a Beam file handle; closing it closes both."""

    def __init__(self, raw: Any, level: int):
        self._raw = raw
        self._gzip = gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=level, mtime=0)

    def write(self, data: bytes) -> None:
        self._gzip.write(data)

    def close(self) -> None:
        self._gzip.close()
        self._raw.close()


class _TFRecordBatchSink(filebasedsink.FileBasedSink):
    """A gzip TFRecord sink whose elements are lists of serialized records (one list per batch).

    Same files as `WriteToTFRecord(compression_type=GZIP)`, but each batch is framed in one go and
    compressed at level 1 (Beam's is fixed at 6): on our examples level 6 took ~2.5x the time for
    files ~12% smaller.
    """

    GZIP_LEVEL = 1

    def __init__(self, file_path_prefix: str, file_name_suffix: str):
        super().__init__(
            file_path_prefix,
            coder=beam.coders.BytesCoder(),
            file_name_suffix=file_name_suffix,
            mime_type="application/octet-stream",
            compression_type=CompressionTypes.UNCOMPRESSED,  # compressed by open() below
        )

    def open(self, temp_path: str) -> _GzipFile:
        return _GzipFile(super().open(temp_path), self.GZIP_LEVEL)

    def write_record(self, file_handle: Any, value: list[bytes]) -> None:
        # TFRecord framing: length, masked CRC32C of the length, data, masked CRC32C of the data.
        masked_crc = tfrecordio._TFRecordUtil._masked_crc32c
        parts = []
        for record in value:
            length = struct.pack("<Q", len(record))
            parts += (length, struct.pack("<I", masked_crc(length)), record, struct.pack("<I", masked_crc(record)))
        file_handle.write(b"".join(parts))


def _counts_to_json(counts: Iterable[tuple[str, int]]) -> str:
    return json.dumps(dict(sorted(counts)), sort_keys=True)


def build_pipeline(
    pipeline: beam.Pipeline,
    input_pattern: str,
    columns: list[str] | None,
    output_dir: str,
    temp_dir: str,
    config: config_lib.TransformConfig,
) -> None:
    """Adds the transform job to `pipeline`; all outputs land under `output_dir`.

    Args:
      pipeline: a Beam pipeline (any runner).
      input_pattern: file pattern of the training-example Parquet file(s).
      columns: the columns to read (None: all).
      output_dir: where `transform_fn/`, `transformed_metadata/`, `train/`, `validation/`, `test/`,
        `dead_letter/` and the counts file are written.
      temp_dir: scratch space for TFT (must be reachable by workers: gs:// on Dataflow).
      config: the transform settings.
    """
    LOG.info("transform: building the pipeline and tracing preprocessing_fn (H=%d)", config.history_length)
    # Heavy imports stay inside: the module is imported by the CLI's --help path.
    import tensorflow_transform.beam as tft_beam
    from tensorflow_transform.tf_metadata import schema_utils
    from tfx_bsl.public import tfxio
    from tfx_bsl.tfxio import tensor_representation_util

    from trainer import preprocessing

    raw_schema = schema_utils.schema_from_feature_spec(preprocessing.raw_feature_spec())
    adapter_config = tfxio.TensorAdapterConfig(
        records.RAW_ARROW_SCHEMA,
        tensor_representation_util.InferTensorRepresentationsFromSchema(raw_schema),
    )

    validated = (
        pipeline
        | "InputPattern" >> beam.Create([input_pattern])
        | "ReadParquet" >> beam.io.ReadAllFromParquetBatched(columns=columns, with_filename=True)
        | "Validate"
        >> beam.ParDo(_ValidateFn(config.batch_size)).with_outputs(
            *SPLIT_DIRS, _ValidateFn.DEAD_LETTER, _ValidateFn.COUNTS
        )
    )
    counts = [validated[_ValidateFn.COUNTS]]

    with tft_beam.Context(temp_dir=temp_dir):
        (train_xf, transform_fn) = (
            validated[TRAIN_DIR],
            adapter_config,
        ) | "AnalyzeAndTransformTrain" >> tft_beam.AnalyzeAndTransformDataset(
            preprocessing.make_preprocessing_fn(config), output_record_batches=True
        )
        transformed_splits = {TRAIN_DIR: train_xf}
        for split in SPLIT_DIRS[1:]:  # validation and test: transformed with the train split's analysis
            transformed_splits[split] = (
                (validated[split], adapter_config),
                transform_fn,
            ) | f"Transform[{split}]" >> tft_beam.TransformDataset(output_record_batches=True)
        _ = transform_fn | "WriteTransformFn" >> tft_beam.WriteTransformFn(output_dir)

        for split, (transformed, metadata) in transformed_splits.items():
            schema = metadata.deferred_metadata | f"Schema[{split}]" >> beam.Map(lambda m: m.schema)
            examples = transformed | f"Encode[{split}]" >> beam.ParDo(
                _EncodeExamplesFn(split), schema=beam.pvalue.AsSingleton(schema)
            )
            _ = examples | f"Write[{split}]" >> beam.io.Write(
                _TFRecordBatchSink(_join(output_dir, split, EXAMPLES_PREFIX), EXAMPLES_SUFFIX)
            )
            counts.append(
                examples
                | f"Sizes[{split}]" >> beam.Map(len)
                | f"Count[{split}]" >> beam.CombineGlobally(sum)
                | f"CountKey[{split}]" >> beam.Map(lambda n, key=_OUT + split: (key, n))
            )

    _ = validated[_ValidateFn.DEAD_LETTER] | "WriteDeadLetters" >> beam.io.WriteToText(
        _join(output_dir, DEAD_LETTER_DIR, EXAMPLES_PREFIX), file_name_suffix=DEAD_LETTER_SUFFIX
    )
    _ = (
        counts
        | "FlattenCounts" >> beam.Flatten()
        | "SumCounts" >> beam.CombinePerKey(sum)
        | "GatherCounts" >> beam.combiners.ToList()
        | "CountsJson" >> beam.Map(_counts_to_json)
        | "WriteCounts"
        >> beam.io.WriteToText(_join(output_dir, _COUNTS_FILE), shard_name_template="", num_shards=1)
    )


# ---------------------------------------------------------------------------------------------
# The job: checks, staging, pipeline, summary, publish.
# ---------------------------------------------------------------------------------------------
def _looks_like_transform_output(path: str) -> bool:
    return FileSystems.exists(_join(path, features.SUCCESS_MARKER)) or FileSystems.exists(_join(path, SUMMARY_FILE))


def _prepare_output(output_dir: str, overwrite: bool) -> None:
    """Refuses to clobber a finished output (without `overwrite`) or a directory that is not ours."""
    if _is_local(output_dir):
        if not os.path.exists(output_dir):
            return
        if not os.path.isdir(output_dir):
            raise ValueError(f"--out {output_dir} exists and is not a directory")
        if not os.listdir(output_dir):
            return
    elif not _matching(_join(output_dir, "**")):
        return
    if not _looks_like_transform_output(output_dir):
        raise ValueError(
            f"--out {output_dir} is not empty and is not a transform output; choose another directory"
        )
    finished = FileSystems.exists(_join(output_dir, features.SUCCESS_MARKER))
    if finished and not overwrite:
        raise ValueError(
            f"--out {output_dir} already holds a finished transform output; pass --overwrite to replace it"
        )


def _staging_dir(output_dir: str) -> str:
    """Where this run writes: a hidden sibling for local paths (renamed at the end), else in place."""
    if not _is_local(output_dir):
        return output_dir
    absolute = os.path.abspath(output_dir)
    parent, name = os.path.split(absolute.rstrip(os.sep))
    os.makedirs(parent, exist_ok=True)
    return os.path.join(parent, f".{name}.staging-{uuid.uuid4().hex[:8]}")


def _publish_local(staging: str, output_dir: str) -> None:
    """Moves the finished `staging` directory to `output_dir`, replacing an old one if present."""
    target = os.path.abspath(output_dir)
    old = None
    if os.path.exists(target):
        old = f"{staging}.old"
        os.replace(target, old)
    os.replace(staging, target)
    if old:
        shutil.rmtree(old, ignore_errors=True)


def _delete(path: str) -> None:
    """Removes a directory tree (local) or every object under a prefix (object stores)."""
    if _is_local(path):
        shutil.rmtree(path, ignore_errors=True)
        return
    paths = _matching(_join(path, "**"))
    if paths:
        FileSystems.delete(paths)


def _vocabulary_sizes(output_dir: str) -> dict[str, int]:
    import tensorflow_transform as tft

    transform_output = tft.TFTransformOutput(output_dir)
    return {name: int(transform_output.vocabulary_size_by_name(name)) for name in VOCABULARIES}


def _summary_line(summary: dict[str, Any]) -> str:
    reasons = ", ".join(f"{r}: {n}" for r, n in summary["dead_lettered_by_reason"].items()) or "none"
    vocabs = ", ".join(f"{name}={size}" for name, size in summary["vocabulary_sizes"].items())
    return (
        f"transform {summary['status']}: {summary['records_in']} records in, "
        + " + ".join(f"{summary['records_out'][s]} {s}" for s in SPLIT_DIRS)
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
    started = time.monotonic()
    inputs = find_input_files(examples_dir)
    _prepare_output(output_dir, overwrite)
    total_rows = sum(f.num_rows for f in inputs)
    LOG.info(
        "transform: %d training examples in %d file(s) under %s -> %s",
        total_rows, len(inputs), examples_dir, output_dir,
    )
    # Read only the columns we need when every file has them (all do, after find_input_files).
    columns = list(records.REQUIRED_COLUMNS)
    if all(name in f.schema.names for f in inputs for name in records.QUERY_COLUMNS):
        columns += list(records.QUERY_COLUMNS)  # optional: older extracts lack it (empty queries)
    pattern = inputs[0].path if len(inputs) == 1 else _join(
        _join(examples_dir, features.TRAINING_EXAMPLES_FILE), "*.parquet"
    )

    local = _is_local(output_dir)
    staging = _staging_dir(output_dir)
    if not local and _matching(_join(output_dir, "**")):
        # A previous (failed, or finished with --overwrite) output: clear it before writing in
        # place, so no stale part files mix with the new ones.
        LOG.info("transform: removing the previous output at %s", output_dir)
        _delete(output_dir)
    _mkdirs(staging)
    temp_dir = _join(staging, _TFT_TEMP_DIR)
    options = pipeline_options(config)
    try:
        pipeline_started = time.monotonic()
        pipeline = beam.Pipeline(options=options)
        build_pipeline(pipeline, pattern, columns, staging, temp_dir, config)
        LOG.info(
            "transform: running the Beam pipeline on %s (%s)", config.runner,
            f"{config.direct_num_workers or 'all'} worker(s), {config.direct_running_mode}"
            if config.runner in ("DirectRunner", "direct") else "options passed through",
        )
        result = pipeline.run()
        state = result.wait_until_finish()
        if state not in (None, PipelineState.DONE):
            raise RuntimeError(f"the Beam pipeline ended in state {state}")
        pipeline_seconds = time.monotonic() - pipeline_started
        LOG.info("transform: pipeline finished in %.1f s", pipeline_seconds)

        counts = json.loads(_read_text(_join(staging, _COUNTS_FILE)))
        FileSystems.delete([_join(staging, _COUNTS_FILE)])
        try:
            _delete(temp_dir)
        except Exception:  # scratch space only: a leftover is harmless, a failed job is not
            LOG.warning("transform: could not delete scratch directory %s", temp_dir, exc_info=True)
        dead_by_reason = dict(
            sorted(
                ((key[len(_DEAD):], n) for key, n in counts.items() if key.startswith(_DEAD)),
                key=lambda item: (-item[1], item[0]),
            )
        )
        summary: dict[str, Any] = {
            "status": "ok",
            "examples_dir": examples_dir,
            "output_dir": output_dir,
            "input_files": [f.path for f in inputs],
            "records_in": int(counts.get(_RECORDS_IN, 0)),
            "valid": {s: int(counts.get(_VALID + s, 0)) for s in SPLIT_DIRS},
            "records_out": {s: int(counts.get(_OUT + s, 0)) for s in SPLIT_DIRS},
            "dead_lettered": int(sum(dead_by_reason.values())),
            "dead_lettered_by_reason": dead_by_reason,
            "vocabulary_sizes": {},
            "num_oov_buckets": config.num_oov_buckets,
            "seconds": {"pipeline": round(pipeline_seconds, 3)},
            "config": config_lib.to_dict(config),
        }
        if summary["valid"][TRAIN_DIR] == 0:
            summary["status"] = "failed"
            summary["seconds"]["total"] = round(time.monotonic() - started, 3)
            _write_text(_join(staging, SUMMARY_FILE), json.dumps(summary, indent=2) + "\n")
            # Leave the dead letters where the user looks, but never over a finished output.
            kept_at = output_dir
            if local:
                if FileSystems.exists(_join(output_dir, features.SUCCESS_MARKER)):
                    kept_at, staging = staging, ""
                else:
                    _publish_local(staging, output_dir)
            what = (
                f"all {summary['records_in']} records were malformed"
                if summary["dead_lettered"] == summary["records_in"]
                else f"none of the {summary['records_in']} records is a valid train example"
            )
            reasons = "; ".join(f"{r}: {n}" for r, n in dead_by_reason.items()) or "no train split rows"
            raise NoValidRecordsError(
                f"{what} ({reasons}); see {_join(kept_at, DEAD_LETTER_DIR)}/ for the records and reasons"
            )
        for split in SPLIT_DIRS[1:]:
            if summary["valid"][split] == 0:
                LOG.warning("transform: no valid %s examples: %s/ holds an empty file", split, _join(output_dir, split))
        if summary["valid"] != summary["records_out"]:
            raise RuntimeError(
                f"records lost in the transform: valid {summary['valid']} but wrote {summary['records_out']}"
            )

        summary["vocabulary_sizes"] = _vocabulary_sizes(staging)
        corpus_dir = _join(staging, CORPUS_DIR)
        _mkdirs(corpus_dir)
        FileSystems.copy([_join(examples_dir, features.CORPUS_FILE)], [_join(corpus_dir, features.CORPUS_FILE)])
        summary["seconds"]["total"] = round(time.monotonic() - started, 3)
        _write_text(_join(staging, SUMMARY_FILE), json.dumps(summary, indent=2) + "\n")
        _write_text(_join(staging, features.SUCCESS_MARKER), "")
        if local:
            _publish_local(staging, output_dir)
    except BaseException:
        if local and staging and os.path.exists(staging):
            shutil.rmtree(staging, ignore_errors=True)
        raise
    LOG.info("%s", _summary_line(summary))
    return summary
