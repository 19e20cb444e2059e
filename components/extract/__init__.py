"""The SQL stage: BigQuery (or a local BigQuery emulator) -> EXTRACT_DIR.

    extract.py    extract_bigquery / extract_local, check_extract_dir / read_extract
    warehouse.py  local_emulator() (bqemulator on loopback), emulator_client(), file loading
    schema.py     table-name validation and column checks against homefeed.features
    cli.py        `candidates extract`
    component.py  the Kubeflow component

The SQL itself lives in the top-level `sql` package.
"""

from components.extract.extract import (
    Extract,
    ExtractSummary,
    check_extract_dir,
    extract_bigquery,
    extract_local,
    read_extract,
)

__all__ = [
    "Extract",
    "ExtractSummary",
    "check_extract_dir",
    "extract_bigquery",
    "extract_local",
    "read_extract",
]
