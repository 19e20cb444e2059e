"""EXTRACT_DIR (docs/architecture.md): the extract's Parquet files, its summary, `_SUCCESS`.

This module owns the file names (every writer and reader imports them from here) and holds the
one check that a directory is a finished extract.
"""

from __future__ import annotations

import os
from pathlib import Path

TRAINING_EXAMPLES_FILE = "training_examples.parquet"
USER_HISTORIES_FILE = "user_histories.parquet"
CORPUS_FILE = "articles.parquet"
LISTINGS_FILE = "listings.parquet"
SUMMARY_FILE = "extract_summary.json"
SUCCESS_MARKER = "_SUCCESS"

# Output name (as the SQL file and the Extract attribute) -> file name.
OUTPUT_FILES: dict[str, str] = {
    "training_examples": TRAINING_EXAMPLES_FILE,
    "user_histories": USER_HISTORIES_FILE,
    "articles": CORPUS_FILE,
    "listings": LISTINGS_FILE,
}
# Every extract writes all of OUTPUT_FILES; one made before listings.parquet existed is still
# complete without it (the evaluation then knows no removal times and says so).
REQUIRED_FILES: tuple[str, ...] = (TRAINING_EXAMPLES_FILE, USER_HISTORIES_FILE, CORPUS_FILE)
KNOWN_FILES: frozenset[str] = frozenset({*OUTPUT_FILES.values(), SUMMARY_FILE, SUCCESS_MARKER})


def check_extract_dir(path: str | os.PathLike) -> Path:
    """`path` if it is a complete EXTRACT_DIR.

    Raises:
      FileNotFoundError: the directory, its `_SUCCESS` or one of its files is missing (named).
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"extract directory not found: {path} (run `candidates extract` first)")
    if not (path / SUCCESS_MARKER).is_file():
        raise FileNotFoundError(
            f"{path} is not a finished extract: {SUCCESS_MARKER} is missing (the extract failed or is still running)"
        )
    missing = [f for f in (*REQUIRED_FILES, SUMMARY_FILE) if not (path / f).exists()]
    if missing:
        raise FileNotFoundError(f"extract directory {path} lacks {', '.join(missing)}")
    return path
