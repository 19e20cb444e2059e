"""The label article's content columns of a raw record batch: `label_title` and `label_age_days`.

Both are optional (extracts from before they existed, files written by other tools): a missing
or null title is no title, a missing, null or non-finite age is `features.UNKNOWN_AGE`; neither
is ever a reason to dead-letter a row. Titles are `homefeed.tokens.normalise`d here (NFKC, lower
case), the text every article-vector caller sends too (trainer/towers/article_inputs.py). Both reach
TFT as lists: the title as `[title]` (`[]` when blank), the age as `[age]`.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from homefeed import features, tokens

COLUMNS: tuple[str, ...] = features.LABEL_CONTENT_COLUMNS
ARROW_FIELDS = (
    pa.field(features.LABEL_TITLE, pa.list_(pa.string())),
    pa.field(features.LABEL_AGE, pa.list_(pa.float32())),
)


def normalise_strings(values: pa.Array, blank_as_null: bool = False) -> pa.Array:
    """`tokens.normalise` of each string of `values` (nulls stay null), computed once per distinct
    value rather than once per row; with `blank_as_null`, values that are only whitespace
    (`str.strip`) become null too."""
    if not len(values):
        return pa.array([], pa.string())
    encoded = pc.dictionary_encode(values)
    normalised = [
        None if blank_as_null and not text.strip() else tokens.normalise(text)
        for text in encoded.dictionary.to_pylist()
    ]
    return pa.array(normalised, pa.string()).take(encoded.indices)


def _titles(batch: pa.RecordBatch) -> pa.Array:
    n = batch.num_rows
    if features.LABEL_TITLE not in batch.schema.names:
        return pa.array([[]] * n, pa.list_(pa.string()))
    column = batch.column(features.LABEL_TITLE).cast(pa.string())
    titles = normalise_strings(column, blank_as_null=True)  # [title], or [] when null or blank
    lengths = np.asarray(titles.is_valid().to_numpy(zero_copy_only=False), dtype=np.int32)
    offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))
    return pa.ListArray.from_arrays(offsets, titles.drop_null())


def _ages(batch: pa.RecordBatch) -> pa.Array:
    n = batch.num_rows
    if features.LABEL_AGE not in batch.schema.names:
        values = np.full(n, features.UNKNOWN_AGE, np.float32)
    else:
        column = batch.column(features.LABEL_AGE)
        numeric = pa.types.is_floating(column.type) or pa.types.is_integer(column.type)
        values = (
            np.asarray(
                pc.fill_null(column.cast(pa.float64()), features.UNKNOWN_AGE).to_numpy(zero_copy_only=False), np.float64
            )
            if numeric
            else np.full(n, features.UNKNOWN_AGE)
        )
        values = np.where(np.isfinite(values), values, features.UNKNOWN_AGE).astype(np.float32)
    offsets = pa.array(np.arange(n + 1, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(values, pa.float32()))


def columns(batch: pa.RecordBatch) -> dict[str, pa.Array]:
    """`{label_title: list<string>, label_age_days: list<float32>}` for every row of `batch`."""
    return {features.LABEL_TITLE: _titles(batch), features.LABEL_AGE: _ages(batch)}
