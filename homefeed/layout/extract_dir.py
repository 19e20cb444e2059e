"""EXTRACT_DIR (docs/architecture.md): the extract's three Parquet files, its summary, `_SUCCESS`.

The file names are the feature spec's (`homefeed.features`); this module groups them as the
directory's contract and holds the one check that a directory is a finished extract.
"""

from __future__ import annotations

import os
from pathlib import Path

from homefeed import features

TRAINING_EXAMPLES_FILE = features.TRAINING_EXAMPLES_FILE
USER_HISTORIES_FILE = features.USER_HISTORIES_FILE
CORPUS_FILE = features.CORPUS_FILE
SUMMARY_FILE = features.EXTRACT_SUMMARY_FILE
SUCCESS_MARKER = features.SUCCESS_MARKER

# Output name (as the SQL file and the Extract attribute) -> file name.
OUTPUT_FILES: dict[str, str] = {
    "training_examples": TRAINING_EXAMPLES_FILE,
    "user_histories": USER_HISTORIES_FILE,
    "articles": CORPUS_FILE,
}
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
            f"{path} is not a finished extract: {SUCCESS_MARKER} is missing "
            "(the extract failed or is still running)"
        )
    missing = [f for f in (*OUTPUT_FILES.values(), SUMMARY_FILE) if not (path / f).exists()]
    if missing:
        raise FileNotFoundError(f"extract directory {path} lacks {', '.join(missing)}")
    return path
