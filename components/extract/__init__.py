"""The SQL stage: BigQuery (or a local BigQuery emulator) -> EXTRACT_DIR.

    extract.py      extract_bigquery / extract_local (the SQL, in order, and the summary)
    queries.py      table columns, QueryRunner (one sql/*.sql file through the client), history order check
    output.py       EXTRACT_DIR: output schemas, write_extract_dir (atomic), check_extract_dir / read_extract
    warehouse.py    local_emulator() (bqemulator on loopback), emulator_client()
    input_files.py  read_input_file (Parquet/CSV -> contract columns), load_table
    schema.py       table-name validation and column checks against homefeed.features
    cli.py          `candidates extract`
    component.py    the Kubeflow component

The SQL itself lives in the top-level `sql` package.
"""

from components.extract.extract import ExtractSummary, extract_bigquery, extract_local
from components.extract.output import Extract, check_extract_dir, read_extract

__all__ = [
    "Extract",
    "ExtractSummary",
    "check_extract_dir",
    "extract_bigquery",
    "extract_local",
    "read_extract",
]
