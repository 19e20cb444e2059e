"""Training-example records: validation and conversion to the transform's raw Arrow input.

Works on whole Arrow record batches with vectorised pyarrow/numpy checks (no per-row Python), so
validation costs little next to TensorFlow. Each bad row gets exactly one reason (the first check
it fails, in `REASONS` order) and is returned as a JSON-friendly dead letter; good rows are split by
`split` into train, validation and test batches in the layout TFT's tensor adapter reads:

  * `history`, `history_<attr>`: `list<string>` (VarLen: SparseTensor in the transform);
  * `label`, `label_<attr>`, `user_id`: `list<string>` with exactly one value per row;
  * `example_age_days`: `list<float32>` with exactly one value per row;
  * `recent_queries`: `list<string>` (VarLen), each query normalised (homefeed.tokens), optional: a file without it (an extract from before
    searches existed) reads as empty lists. A row needs a history or queries (a first view with
    earlier searches has no history).

Standard library + pyarrow + numpy only (no TensorFlow), so it is cheap to test and to import.
"""

from __future__ import annotations

import datetime
import json
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from components.transform import content
from homefeed import features

# Raw columns the transform reads, by kind. `viewed_at` is not needed: it only orders the SQL.
LIST_COLUMNS: tuple[str, ...] = features.HISTORY_COLUMNS
STRING_COLUMNS: tuple[str, ...] = (features.USER_ID, *features.LABEL_COLUMNS)
FLOAT_COLUMNS: tuple[str, ...] = (features.EXAMPLE_AGE,)
# Optional: absent means no queries for any row.
QUERY_COLUMNS: tuple[str, ...] = (features.RECENT_QUERIES,)
REQUIRED_COLUMNS: tuple[str, ...] = (*STRING_COLUMNS, *LIST_COLUMNS, *FLOAT_COLUMNS, features.SPLIT)
SPLITS: tuple[str, ...] = features.SPLITS

# The raw record batches fed to TFT (see module docstring); `split` is consumed here.
RAW_ARROW_SCHEMA = pa.schema(
    [
        *(pa.field(c, pa.list_(pa.string())) for c in LIST_COLUMNS),
        *(pa.field(c, pa.list_(pa.string())) for c in STRING_COLUMNS),
        *(pa.field(c, pa.list_(pa.float32())) for c in FLOAT_COLUMNS),
        *(pa.field(c, pa.list_(pa.string())) for c in QUERY_COLUMNS),
        *content.ARROW_FIELDS,
    ]
)


_BAD_SPLIT = f"{features.SPLIT} is not one of " + ", ".join(f"'{s}'" for s in features.SPLITS)


def _reasons() -> tuple[str, ...]:
    """Every reason a record can be dead-lettered for, in the order they are checked.

    Fixed strings (no per-row values) so dead letters can be counted by reason.
    """
    reasons: list[str] = []
    for column in REQUIRED_COLUMNS:
        reasons += [f"missing column {column}", f"{column} has the wrong type", f"{column} is null"]
        if column in STRING_COLUMNS:
            reasons.append(f"{column} is empty")
        elif column in LIST_COLUMNS:
            reasons += [f"{column} has a null value", f"{column} has an empty string"]
            if column == features.HISTORY:
                reasons.append(f"{column} and {features.RECENT_QUERIES} are empty")
            else:
                reasons.append(f"{column} length differs from history")
        elif column in FLOAT_COLUMNS:
            reasons.append(f"{column} is not finite")
    for column in QUERY_COLUMNS:
        reasons += [f"{column} has the wrong type", f"{column} has a null value"]
    reasons.append(_BAD_SPLIT)
    return tuple(reasons)


REASONS: tuple[str, ...] = _reasons()


@dataclass
class ValidatedBatch:
    """The outcome of `validate`: good rows by split (raw TFT layout) and dead letters."""

    records_in: int
    by_split: dict[str, pa.RecordBatch] = field(default_factory=dict)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)

    @property
    def reason_counts(self) -> Counter[str]:
        return Counter(letter["reason"] for letter in self.dead_letters)


class _Checker:
    """Assigns each row of one batch its first failing reason (`None` = good so far)."""

    def __init__(self, num_rows: int):
        self.num_rows = num_rows
        self.reason = np.full(num_rows, None, dtype=object)

    def flag(self, mask: np.ndarray | pa.Array | pa.ChunkedArray | bool, reason: str) -> None:
        """Gives `reason` to rows where `mask` is true and which have no reason yet."""
        assert reason in REASONS, reason
        if isinstance(mask, bool):
            mask = np.full(self.num_rows, mask)
        elif not isinstance(mask, np.ndarray):
            mask = np.asarray(pc.fill_null(mask, False).to_numpy(zero_copy_only=False), dtype=bool)
        self.reason[mask & (self.reason == None)] = reason  # noqa: E711 (elementwise on objects)

    def flag_rows(self, rows: np.ndarray, reason: str) -> None:
        mask = np.zeros(self.num_rows, dtype=bool)
        mask[rows] = True
        self.flag(mask, reason)


def _is_string(type_: pa.DataType) -> bool:
    return pa.types.is_string(type_) or pa.types.is_large_string(type_)


def _as_strings(column: pa.Array) -> pa.Array | None:
    """`column` as `string`, or None if it is not text (dictionary-encoded text is decoded)."""
    if pa.types.is_dictionary(column.type) and _is_string(column.type.value_type):
        column = column.dictionary_decode()
    if pa.types.is_null(column.type):  # an all-null column: Parquet cannot tell its type
        return pa.nulls(len(column), pa.string())
    if not _is_string(column.type):
        return None
    return column.cast(pa.string()) if column.type != pa.string() else column


def _as_string_lists(column: pa.Array) -> pa.Array | None:
    """`column` as `list<string>`, or None if it is not a list of text."""
    if pa.types.is_null(column.type):
        return pa.nulls(len(column), pa.list_(pa.string()))
    if not (pa.types.is_list(column.type) or pa.types.is_large_list(column.type)):
        return None
    value_type = column.type.value_type
    if pa.types.is_dictionary(value_type) and _is_string(value_type.value_type):
        value_type = value_type.value_type
    if not (_is_string(value_type) or pa.types.is_null(value_type)):
        return None
    target = pa.list_(pa.string())
    return column.cast(target) if column.type != target else column


def _as_floats(column: pa.Array) -> pa.Array | None:
    """`column` as `float32`, or None if it is not numeric."""
    if pa.types.is_null(column.type):
        return pa.nulls(len(column), pa.float32())
    if not (pa.types.is_floating(column.type) or pa.types.is_integer(column.type) or pa.types.is_decimal(column.type)):
        return None
    return column.cast(pa.float32(), safe=False) if column.type != pa.float32() else column


_CONVERTERS = {
    **dict.fromkeys(STRING_COLUMNS, _as_strings),
    features.SPLIT: _as_strings,
    **dict.fromkeys(LIST_COLUMNS, _as_string_lists),
    **dict.fromkeys(FLOAT_COLUMNS, _as_floats),
}


def _normalised(column: pa.Array) -> pa.Array:
    """Each query `homefeed.tokens.normalise`d (NFKC, lower case): the text the serving encoder
    sends too, so files written by other tools than the extract cannot cause skew. Each distinct
    query is normalised once (`content.normalise_strings`); null lists stay null, null values null."""
    offsets = pc.subtract(column.offsets, column.offsets[0])  # a sliced column's start at 0
    values = content.normalise_strings(pc.list_flatten(column))
    mask = pc.is_null(column) if column.null_count else None
    return pa.ListArray.from_arrays(offsets, values, mask=mask)


def _scalar_as_list(column: pa.Array) -> pa.ListArray:
    """`[a, b, c]` -> `[[a], [b], [c]]` without copying the values (the adapter wants lists)."""
    offsets = pa.array(np.arange(len(column) + 1, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, column)


def validate(batch: pa.RecordBatch, source: str = "") -> ValidatedBatch:
    """Checks every row of `batch` against the training-example contract (docs/architecture.md).

    Args:
      batch: rows with (at least) `REQUIRED_COLUMNS`; extra columns are ignored, compatible types
        are converted (large/dictionary strings, integer or float64 ages).
      source: where the rows came from (a file name), recorded in the dead letters.

    Returns:
      a `ValidatedBatch`: `by_split[split]` holds the good rows of each split (only splits that
      have rows) as `RAW_ARROW_SCHEMA` record batches, in input order; `dead_letters` holds one
      `{"reason", "source", "record"}` dict per bad row, `record` being the row as JSON-friendly values.
    """
    n = batch.num_rows
    result = ValidatedBatch(records_in=n)
    if n == 0:
        return result
    check = _Checker(n)
    columns: dict[str, pa.Array] = {}
    names = set(batch.schema.names)
    for name in QUERY_COLUMNS:
        column = _as_string_lists(batch.column(name)) if name in names else pa.array([[]] * n, pa.list_(pa.string()))
        if column is None:
            check.flag(True, f"{name} has the wrong type")
            column = pa.array([[]] * n, pa.list_(pa.string()))
        column = pc.if_else(pc.is_null(column), pa.scalar([], pa.list_(pa.string())), column)
        values = pc.list_flatten(column)
        parents = pc.list_parent_indices(column).to_numpy()
        check.flag_rows(
            parents[np.asarray(pc.is_null(values).to_numpy(zero_copy_only=False), dtype=bool)],
            f"{name} has a null value",
        )
        columns[name] = _normalised(column)
    has_queries = pc.greater(pc.list_value_length(columns[features.RECENT_QUERIES]), 0)
    columns.update(content.columns(batch))  # optional label title and age, never a reason to drop

    for name in REQUIRED_COLUMNS:
        if name not in names:
            check.flag(True, f"missing column {name}")
            continue
        column = _CONVERTERS[name](batch.column(name))
        if column is None:
            check.flag(True, f"{name} has the wrong type")
            continue
        columns[name] = column
        check.flag(pc.is_null(column), f"{name} is null")
        if name in STRING_COLUMNS:
            check.flag(pc.equal(column, ""), f"{name} is empty")
        elif name in LIST_COLUMNS:
            # Serving turns padded dense histories into sparse ones by dropping "", so an empty
            # string in training data would be seen differently by the two paths: refuse it.
            values = pc.list_flatten(column)
            parents = pc.list_parent_indices(column).to_numpy()
            bad_values = np.asarray(pc.is_null(values).to_numpy(zero_copy_only=False), dtype=bool)
            check.flag_rows(parents[bad_values], f"{name} has a null value")
            empty_values = np.asarray(
                pc.fill_null(pc.equal(values, ""), False).to_numpy(zero_copy_only=False), dtype=bool
            )
            check.flag_rows(parents[empty_values], f"{name} has an empty string")
            lengths = pc.list_value_length(column)
            if name == features.HISTORY:
                check.flag(
                    pc.and_(pc.equal(lengths, 0), pc.invert(has_queries)),
                    f"{name} and {features.RECENT_QUERIES} are empty",
                )
            elif features.HISTORY in columns:
                history_lengths = pc.list_value_length(columns[features.HISTORY])
                check.flag(pc.not_equal(lengths, history_lengths), f"{name} length differs from history")
        elif name in FLOAT_COLUMNS:
            check.flag(pc.invert(pc.is_finite(column)), f"{name} is not finite")
    if features.SPLIT in columns:
        check.flag(pc.invert(pc.is_in(columns[features.SPLIT], pa.array(SPLITS))), _BAD_SPLIT)

    good = check.reason == None  # noqa: E711
    bad_rows = np.flatnonzero(~good)
    if len(bad_rows):
        result.dead_letters = _dead_letters(batch, bad_rows, check.reason, source)
    if not good.any():
        return result

    good_mask = pa.array(good)
    split = pc.filter(columns[features.SPLIT], good_mask)
    for split_name in SPLITS:
        in_split = pc.equal(split, split_name)
        if not pc.any(in_split).as_py():
            continue
        arrays = []
        for field_ in RAW_ARROW_SCHEMA:
            column = pc.filter(pc.filter(columns[field_.name], good_mask), in_split)
            listed = field_.name in LIST_COLUMNS or field_.name in QUERY_COLUMNS or field_.name in content.COLUMNS
            arrays.append(column if listed else _scalar_as_list(column))
        result.by_split[split_name] = pa.RecordBatch.from_arrays(arrays, schema=RAW_ARROW_SCHEMA)
    return result


def _json_value(value: Any) -> Any:
    """A value from `to_pylist()` in a form `json.dumps` accepts (and people can read)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, list):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {k: _json_value(v) for k, v in value.items()}
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _dead_letters(batch: pa.RecordBatch, rows: np.ndarray, reasons: np.ndarray, source: str) -> list[dict[str, Any]]:
    """The bad `rows` of `batch` as dead letters (only these rows are converted to Python)."""
    records = batch.take(pa.array(rows)).to_pylist()
    return [
        {"reason": str(reasons[row]), "source": source, "record": _json_value(record)}
        for row, record in zip(rows.tolist(), records)
    ]


def dead_letter_line(letter: dict[str, Any]) -> str:
    """One dead letter as a JSON line."""
    return json.dumps(letter, sort_keys=True, ensure_ascii=False)


def split_batches(batch: pa.RecordBatch | pa.Table, max_rows: int) -> Iterable[pa.RecordBatch]:
    """`batch` as record batches of at most `max_rows` rows (zero-copy slices)."""
    batches = batch.to_batches(max_chunksize=max_rows) if isinstance(batch, pa.Table) else [batch]
    for part in batches:
        for start in range(0, part.num_rows, max_rows):
            yield part.slice(start, max_rows)


def schema_problems(schema: pa.Schema) -> list[str]:
    """What is wrong with a file's Arrow `schema` for training examples (empty list: nothing).

    Checked once per file before the job runs: a missing or mistyped column is a whole-file
    problem, reported as one clear error rather than as one dead letter per row.
    """
    problems = []
    for name in REQUIRED_COLUMNS:
        if name not in schema.names:
            problems.append(f"missing column {name}")
            continue
        type_ = schema.field(name).type
        if _CONVERTERS[name](pa.array([], type_)) is None:
            problems.append(f"column {name} has type {type_}, expected {_EXPECTED_TYPES[name]}")
    return problems


_EXPECTED_TYPES = {
    **dict.fromkeys((*STRING_COLUMNS, features.SPLIT), "string"),
    **dict.fromkeys(LIST_COLUMNS, "list<string>"),
    **dict.fromkeys(FLOAT_COLUMNS, "a number (float64)"),
}
