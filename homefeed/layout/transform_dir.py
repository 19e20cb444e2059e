"""TRANSFORM_DIR (docs/architecture.md): transformed examples per split, the TFT graph, the corpus.

Written by components/transform (local paths staged then renamed, `_SUCCESS` last), read by
trainer/training/data.py. `transform_fn/` and `transformed_metadata/` are TF Transform's own names.
"""

from __future__ import annotations

import os
from pathlib import Path

from homefeed import features
from homefeed.layout import extract_dir as extract_layout

SPLIT_DIRS: tuple[str, ...] = features.SPLITS  # one directory of transformed examples per split
TRAIN_DIR = features.TRAIN_SPLIT
CORPUS_DIR = "corpus"
CORPUS_FILE = f"{CORPUS_DIR}/{extract_layout.CORPUS_FILE}"  # a copy of the extract's corpus
DEAD_LETTER_DIR = "dead_letter"
SUMMARY_FILE = "transform_summary.json"
SUCCESS_MARKER = extract_layout.SUCCESS_MARKER
EXAMPLES_PREFIX = "part"
EXAMPLES_SUFFIX = ".tfrecord.gz"
EXAMPLES_PATTERN = f"{EXAMPLES_PREFIX}-*{EXAMPLES_SUFFIX}"
DEAD_LETTER_SUFFIX = ".jsonl"
VOCABULARIES: tuple[str, ...] = (
    features.ARTICLE_VOCAB,
    *(features.vocabulary_name(a) for a in features.ARTICLE_ATTRIBUTES),
    features.SEARCH_TOKEN_VOCAB,
)


def check_transform_dir(path: str | os.PathLike) -> dict[str, list[str]]:
    """Checks `path` is a finished transform output; returns split -> its TFRecord files (sorted).

    Raises:
      FileNotFoundError: no such directory, no `_SUCCESS`, no train records, no corpus.
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"transform output {path} does not exist")
    if not (path / SUCCESS_MARKER).exists():
        raise FileNotFoundError(f"{path} has no {SUCCESS_MARKER}: not a finished `candidates transform` output")
    files = {split: sorted(str(p) for p in (path / split).glob(EXAMPLES_PATTERN)) for split in SPLIT_DIRS}
    if not files[TRAIN_DIR]:
        raise FileNotFoundError(f"{path / TRAIN_DIR} holds no {EXAMPLES_PATTERN} files")
    if not (path / CORPUS_FILE).exists():
        raise FileNotFoundError(f"{path / CORPUS_FILE} is missing: the transform copies the corpus there")
    return files
