"""Finding and checking the transform's input (driver side, before any pipeline runs)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from components.transform import files, records
from homefeed.layout import extract_dir


@dataclass(frozen=True)
class InputFile:
    """One Parquet file of training examples, as found before the job runs."""

    path: str
    num_rows: int
    schema: pa.Schema


def find_input_files(examples_dir: str) -> list[InputFile]:
    """The training-example Parquet file(s) of `examples_dir`, with row counts and schemas.

    Accepts `training_examples.parquet` as one file or as a directory of `*.parquet` parts.

    Raises:
      FileNotFoundError: no `_SUCCESS` marker, no examples file, or no corpus file.
      ValueError: a file lacks a required column or has one of the wrong type, or there are no rows.
    """
    if not FileSystems.exists(files.join(examples_dir, extract_dir.SUCCESS_MARKER)):
        raise FileNotFoundError(
            f"{examples_dir} has no {extract_dir.SUCCESS_MARKER} marker: the extract did not finish, "
            "or this is not an extract output directory (run `candidates extract` first)"
        )
    base = files.join(examples_dir, extract_dir.TRAINING_EXAMPLES_FILE)
    paths = [p for p in files.matching(base) if not (files.is_local(p) and os.path.isdir(p))]
    if not paths:
        paths = files.matching(files.join(base, "*.parquet"))
    if not paths:
        raise FileNotFoundError(f"no training examples at {base} (a Parquet file or a directory of *.parquet)")
    corpus = files.join(examples_dir, extract_dir.CORPUS_FILE)
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
        raise ValueError(f"{base} holds no training examples (0 rows in {len(found)} file(s)): nothing to transform")
    return found
