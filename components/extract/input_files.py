"""Loading the local input tables (Parquet or CSV files) into the warehouse (BigQuery or the emulator).

read_input_file(path, table)       a file -> the contract's columns, typed for loading
load_table(client, table, data)    a Parquet load job through the official BigQuery client
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from components.extract import schema
from homefeed import features

if TYPE_CHECKING:
    import pyarrow as pa
    from google.cloud import bigquery

LOG = logging.getLogger(__name__)

CONTRACTS: dict[str, dict[str, str]] = {
    "events": dict(features.EVENTS_REQUIRED_COLUMNS),
    "articles": {**features.ARTICLES_REQUIRED_COLUMNS, **features.ARTICLES_OPTIONAL_COLUMNS},
    "searches": dict(features.SEARCHES_REQUIRED_COLUMNS),
}
_REQUIRED = {
    "events": features.EVENTS_REQUIRED_COLUMNS,
    "articles": features.ARTICLES_REQUIRED_COLUMNS,
    "searches": features.SEARCHES_REQUIRED_COLUMNS,
}


def read_input_file(path: str | Path, table: str) -> pa.Table:
    """Read the `events`, `articles` or `searches` table from a Parquet file (or directory) or a CSV file.

    Keeps only the contract's columns (extra ones are ignored), renamed to their contract spelling,
    and returns them typed for loading: strings stay strings (CSV ids are never turned into
    numbers, so `0042` stays `0042`), timestamps become `timestamp[us, UTC]` (values without a zone
    are taken as UTC). Raises FileNotFoundError for a missing file and ValueError naming the file
    and column for a missing required column, a wrong type or an unreadable timestamp.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{table} file not found: {path}")
    contract = CONTRACTS[table]
    label = f"{table} file {str(path)!r}"
    fmt = _file_format(path, label)
    if fmt == "csv":
        data = _read_csv(path, contract, label)
    else:
        try:
            data = pq.read_table(path)
        except (pa.ArrowInvalid, OSError) as error:
            raise ValueError(f"{label}: not a readable Parquet file ({error})") from None
    data = _decode_dictionaries(data)
    columns = {field.name: _bigquery_type(field.type) for field in data.schema}
    found = schema.check_columns(label, columns, _REQUIRED[table], contract)
    arrays, names = [], []
    for name, (actual_name, _kind) in found.items():
        column = data.column(actual_name)
        if pa.types.is_timestamp(column.type):
            if column.type.tz is None:
                column = column.cast(pa.timestamp(column.type.unit, tz="UTC"))
            column = column.cast(pa.timestamp("us", tz="UTC"), safe=False)  # BigQuery keeps microseconds
        elif pa.types.is_large_string(column.type):
            column = column.cast(pa.string())
        arrays.append(column)
        names.append(name)
    return pa.table(arrays, names=names)


def _file_format(path: Path, label: str) -> str:
    name = path.name.lower()
    if path.is_dir() or name.endswith((".parquet", ".pq", ".parq")):
        return "parquet"
    if name.endswith((".csv", ".csv.gz", ".csv.bz2")):
        return "csv"
    raise ValueError(f"{label}: unknown file type; expected .parquet (or a directory of them) or .csv")


def _read_csv(path: Path, contract: dict[str, str], label: str) -> pa.Table:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    try:
        with pacsv.open_csv(path) as reader:  # reads the header and one block, for the names
            names = reader.schema.names
    except (pa.ArrowInvalid, OSError) as error:
        raise ValueError(f"{label}: not a readable CSV file ({error})") from None
    wanted = {name.lower() for name in contract}
    as_text = {name: pa.string() for name in names if name.lower() in wanted}
    try:
        data = pacsv.read_csv(
            path,
            convert_options=pacsv.ConvertOptions(
                column_types=as_text, include_columns=list(as_text), strings_can_be_null=True
            ),
        )
    except (pa.ArrowInvalid, OSError) as error:
        raise ValueError(f"{label}: not a readable CSV file ({error})") from None
    for name in data.column_names:
        if contract.get(name.lower()) == "TIMESTAMP":
            index = data.column_names.index(name)
            data = data.set_column(index, name, _parse_timestamps(data.column(name), f"{label}: column '{name}'"))
    return data


def _parse_timestamps(column: pa.ChunkedArray, label: str) -> pa.Array:
    import pandas as pd
    import pyarrow as pa

    text = column.to_pandas()
    parsed = pd.to_datetime(text, utc=True, format="ISO8601", errors="coerce")
    bad = parsed.isna() & text.notna() & (text.str.strip() != "")
    if bad.any():
        row = int(bad.idxmax())
        raise ValueError(
            f"{label}: cannot read {text[row]!r} (data row {row + 1}) as a timestamp; expected ISO 8601 "
            "such as 2024-03-01T12:00:00Z or 2024-03-01"
        )
    return pa.array(parsed.dt.as_unit("us"), type=pa.timestamp("us", tz="UTC"))


def _decode_dictionaries(data: pa.Table) -> pa.Table:
    """pandas categoricals arrive as dictionary columns; BigQuery wants their values."""
    import pyarrow as pa

    for index, field in enumerate(data.schema):
        if pa.types.is_dictionary(field.type):
            data = data.set_column(index, field.name, data.column(index).cast(field.type.value_type))
    return data


def _bigquery_type(arrow_type: pa.DataType) -> str:
    import pyarrow as pa

    checks = (
        (pa.types.is_string, "STRING"),
        (pa.types.is_large_string, "STRING"),
        (pa.types.is_timestamp, "TIMESTAMP"),
        (pa.types.is_date, "DATE"),
        (pa.types.is_integer, "INT64"),
        (pa.types.is_floating, "FLOAT64"),
        (pa.types.is_boolean, "BOOL"),
        (pa.types.is_binary, "BYTES"),
        (pa.types.is_decimal, "NUMERIC"),
        (pa.types.is_null, "NULL (an all-empty column)"),
    )
    for check, name in checks:
        if check(arrow_type):
            return name
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
        return f"ARRAY<{_bigquery_type(arrow_type.value_type)}>"
    return str(arrow_type).upper()


def load_table(client: bigquery.Client, table: schema.TableRef, data: pa.Table) -> int:
    """Replace `table` with `data` (from `read_input_file`) through a Parquet load job; rows loaded.

    The dataset is created if missing. The job carries an explicit schema in the same column order
    as the file (bqemulator inserts Parquet columns by position).
    """
    import io

    import pyarrow.parquet as pq
    from google.cloud import bigquery

    fields = []
    for f in data.schema:
        kind = _bigquery_type(f.type)
        if kind not in ("STRING", "TIMESTAMP", "DATE", "INT64", "FLOAT64", "BOOL", "BYTES", "NUMERIC"):
            raise ValueError(f"cannot load column '{f.name}' of type {f.type} into {table}")
        fields.append(bigquery.SchemaField(f.name, kind))
    client.create_dataset(bigquery.Dataset(f"{table.project}.{table.dataset}"), exists_ok=True)
    client.delete_table(table.path, not_found_ok=True)  # a fresh schema, not the last run's
    buffer = io.BytesIO()
    pq.write_table(data, buffer)
    buffer.seek(0)
    job = client.load_table_from_file(
        buffer,
        table.path,
        job_config=bigquery.LoadJobConfig(
            source_format=bigquery.SourceFormat.PARQUET,
            schema=fields,
            write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE,
            create_disposition=bigquery.CreateDisposition.CREATE_IF_NEEDED,
        ),
    )
    job.result()
    LOG.info("loaded %d rows into %s", data.num_rows, table)
    return data.num_rows
