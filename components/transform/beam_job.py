"""The transform's Beam pipeline: validate, analyze and transform with TF Transform, write.

training_examples.parquet --ReadAllFromParquetBatched--> Arrow tables
  --Validate (records.validate, vectorised)--> train / validation / test record batches (each
    re-gathered into full batches, batching.py), dead letters, counts
train --AnalyzeAndTransformDataset--> transformed train + transform_fn --WriteTransformFn
validation, test  --TransformDataset(transform_fn)--> transformed validation, test
  (analyze_splits "all": train + validation + test --AnalyzeDataset--> transform_fn, then every
  split --TransformDataset--> its transformed examples: the vocabularies hold every view's ids)
each split --encode per batch (tfx_bsl)--> tf.Examples --gzip TFRecord sink (tfrecord_sink.py)
dead letters --WriteToText (JSON lines); counts --CombinePerKey--> one JSON file for the summary
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
import pyarrow as pa
from apache_beam.options.pipeline_options import PipelineOptions

from components.transform import batching, files, records, tfrecord_sink
from homefeed import config as config_lib
from homefeed.layout import transform_dir as layout

LOG = logging.getLogger(__name__)

# Written by the pipeline, read back by the driver for the summary, then deleted.
COUNTS_FILE = "_counts.json"
# Count keys.
RECORDS_IN = "records_in"
VALID = "valid/"
OUT = "records_out/"
DEAD = "dead_letter/"


def pipeline_options(config: config_lib.TransformConfig) -> PipelineOptions:
    """Beam options: the runner, DirectRunner parallelism, then `config.beam_args` unchanged.

    The runner is always named (Beam >= 2.68's default runner may try to download Prism).
    `beam_args` come last, so an option given there wins over the typed fields. DirectRunner with
    several workers is run with `direct_runner.size_based_data_flush` (job.py): without it Beam's
    data plane drops records.
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
        # Each split's rows re-gathered into full batches (batching.py): fewer TensorFlow calls.
        batchers = {split: batching.SplitBatcher(self._batch_size) for split in layout.SPLIT_DIRS}
        for batch in records.split_batches(table, self._batch_size):
            checked = records.validate(batch, source=source)
            self._records.inc(checked.records_in)
            self._dead.inc(len(checked.dead_letters))
            yield beam.pvalue.TaggedOutput(self.COUNTS, (RECORDS_IN, checked.records_in))
            for split, rows in checked.by_split.items():
                yield beam.pvalue.TaggedOutput(self.COUNTS, (VALID + split, rows.num_rows))
                for full in batchers[split].add(rows):
                    yield beam.pvalue.TaggedOutput(split, full)
            for reason, count in checked.reason_counts.items():
                yield beam.pvalue.TaggedOutput(self.COUNTS, (DEAD + reason, count))
            for letter in checked.dead_letters:
                yield beam.pvalue.TaggedOutput(self.DEAD_LETTER, records.dead_letter_line(letter))
            self._seen += checked.records_in
            if time.monotonic() - self._last_log > self._LOG_EVERY_S:
                self._last_log = time.monotonic()
                LOG.info("validated %d records so far (this worker)", self._seen)
        for split, batcher in batchers.items():
            for rest in batcher.flush():
                yield beam.pvalue.TaggedOutput(split, rest)


class _EncodeExamplesFn(beam.DoFn):
    """(transformed record batch, passthrough) -> the batch's serialized tf.Examples, as one list.

    Keeping a whole batch per element (instead of one element per example) spares Beam's
    per-element overhead on the write path.
    """

    _LOG_EVERY_S = 15.0

    def __init__(self, split: str):
        self._split = split

    def setup(self) -> None:
        self._encoder: Any = None  # tfx_bsl's RecordBatchToExamplesEncoder, made on the first batch
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

    from trainer.model import preprocessing

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
            *layout.SPLIT_DIRS, _ValidateFn.DEAD_LETTER, _ValidateFn.COUNTS
        )
    )
    counts = [validated[_ValidateFn.COUNTS]]

    with tft_beam.Context(temp_dir=temp_dir):
        transformed_splits = {}
        if config.analyze_splits == "all":
            # The published model's vocabularies: every view up to as_of, each split then transformed with them.
            every_view = [validated[split] for split in layout.SPLIT_DIRS] | "AllSplits" >> beam.Flatten()
            transform_fn = (every_view, adapter_config) | "AnalyzeAllSplits" >> tft_beam.AnalyzeDataset(
                preprocessing.make_preprocessing_fn(config)
            )
            transformed_with_analysis = layout.SPLIT_DIRS
        else:
            (train_xf, transform_fn) = (
                validated[layout.TRAIN_DIR],
                adapter_config,
            ) | "AnalyzeAndTransformTrain" >> tft_beam.AnalyzeAndTransformDataset(
                preprocessing.make_preprocessing_fn(config), output_record_batches=True
            )
            transformed_splits[layout.TRAIN_DIR] = train_xf
            transformed_with_analysis = layout.SPLIT_DIRS[1:]  # validation and test, with the train split's analysis
        for split in transformed_with_analysis:
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
                tfrecord_sink.TFRecordBatchSink(
                    files.join(output_dir, split, layout.EXAMPLES_PREFIX), layout.EXAMPLES_SUFFIX
                )
            )
            counts.append(
                examples
                | f"Sizes[{split}]" >> beam.Map(len)
                | f"Count[{split}]" >> beam.CombineGlobally(sum)
                | f"CountKey[{split}]" >> beam.Map(lambda n, key=OUT + split: (key, n))
            )

    _ = validated[_ValidateFn.DEAD_LETTER] | "WriteDeadLetters" >> beam.io.WriteToText(
        files.join(output_dir, layout.DEAD_LETTER_DIR, layout.EXAMPLES_PREFIX),
        file_name_suffix=layout.DEAD_LETTER_SUFFIX,
    )
    _ = (
        counts
        | "FlattenCounts" >> beam.Flatten()
        | "SumCounts" >> beam.CombinePerKey(sum)
        | "GatherCounts" >> beam.combiners.ToList()
        | "CountsJson" >> beam.Map(_counts_to_json)
        | "WriteCounts"
        >> beam.io.WriteToText(files.join(output_dir, COUNTS_FILE), shard_name_template="", num_shards=1)
    )
