"""Reading the files of a model directory and following a publish root's LATEST pointer.

Layout (docs/architecture.md, MODEL_DIR and PUBLISH_ROOT): `manifest.json` is written last, so a
directory without one is not a model. The serving side reads only what it needs: the manifest,
`article_ids.txt`, `articles.parquet` (titles), `popular_articles.json` (the fallback) and
optionally `user_histories.parquet` (the embedded history store's snapshot, placed there by the
publish step or by hand). Ids and titles are held as flat arrays (serving/versions/article_table.py):
loaded before gunicorn forks its workers, their pages are shared by all of them.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Container, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from homefeed.layout import extract_dir as extract_layout
from homefeed.layout import index_dir as index_layout
from homefeed.layout import model_dir as layout  # MODEL_DIR's names and validator (stdlib only)
from homefeed.layout import publish_root as publish_layout
from homefeed.layout.json_files import read_json_object
from serving.versions.article_table import ArticleIds, StringColumn, as_article_ids, string_arrays

LOG = logging.getLogger(__name__)

# The names the serving side reads, from their owners (homefeed/layout/).
MANIFEST_FILE = layout.MANIFEST_FILE
ARTICLE_VECTORS_FILE = layout.ARTICLE_VECTORS_FILE
ARTICLE_IDS_FILE = layout.ARTICLE_IDS_FILE
ARTICLES_FILE = layout.ARTICLES_FILE
POPULAR_FILE = layout.POPULAR_FILE
HISTORIES_FILE = extract_layout.USER_HISTORIES_FILE  # optional copy of the extract's snapshot
INDEX_DIR = index_layout.INDEX_DIR
INDEX_FILE = index_layout.INDEX_FILE
INDEX_MANIFEST_FILE = index_layout.INDEX_MANIFEST_FILE
VECTORS_HASH_KEY = index_layout.VECTORS_HASH_KEY


class ModelDirError(ValueError):
    """A model directory (or publish root) cannot be served; the message says what is wrong."""


@dataclass(frozen=True)
class ResolvedModel:
    """Where a `--model` argument points.

    Attributes:
      model_dir: the model directory to load.
      publish_root: the publish root when `--model` was one (its LATEST names the version), else None.
      latest: the LATEST text that was followed (None for a plain model directory).
    """

    model_dir: Path
    publish_root: Path | None = None
    latest: str | None = None


def is_publish_root(path: str | os.PathLike) -> bool:
    return publish_layout.is_publish_root(path, MANIFEST_FILE)


def resolve_model_dir(path: str | os.PathLike) -> ResolvedModel:
    """A model directory as is, or the version a publish root's LATEST names.

    Raises:
      FileNotFoundError: `path` does not exist.
      ModelDirError: a publish root with nothing published yet, or LATEST naming a missing version.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model path {path} does not exist (a model directory or a publish root)")
    if not is_publish_root(path):
        return ResolvedModel(model_dir=path)
    try:
        model_dir = publish_layout.latest_version_dir(path)
    except publish_layout.PublishRootError as error:
        raise ModelDirError(str(error)) from None
    return ResolvedModel(model_dir=model_dir, publish_root=path, latest=model_dir.name)


def read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        return read_json_object(path, ModelDirError, what)
    except FileNotFoundError:
        raise ModelDirError(f"{what} {path} is missing") from None


def read_model_manifest(model_dir: str | os.PathLike) -> dict[str, Any]:
    """`manifest.json` of a finished model directory, checked by the trainer's own rules.

    `homefeed.layout.model_dir.load_manifest` (stdlib + numpy, no TensorFlow) verifies the format version,
    `model_version` and that every file the manifest lists is there with its recorded size, so a
    truncated copy is refused as well as an unfinished training run.

    Raises:
      ModelDirError: not a finished model directory (the message names what is missing).
    """
    try:
        return layout.load_manifest(model_dir)
    except layout.UnfinishedModelError as error:
        raise ModelDirError(str(error)) from None


sha256_file = layout.sha256_file  # hex sha256 of a file, read in blocks


def article_vectors_sha256(model_dir: Path, manifest: dict[str, Any]) -> str:
    """The article vectors' hash as the manifest records it, else computed from the file."""
    recorded = manifest.get(VECTORS_HASH_KEY)
    if isinstance(recorded, str) and recorded:
        return recorded
    return sha256_file(model_dir / ARTICLE_VECTORS_FILE)


def read_article_ids(model_dir: Path) -> list[str]:
    """`article_ids.txt`: one id per line, row i of the article vectors."""
    path = model_dir / ARTICLE_IDS_FILE
    try:
        ids = path.read_text().splitlines()
    except FileNotFoundError:
        raise ModelDirError(f"{path} is missing: the model directory has no article ids") from None
    if not ids or any(not a for a in ids):
        raise ModelDirError(f"{path} is empty or has blank lines")
    return ids


def load_article_ids(model_dir: Path) -> ArticleIds:
    """`article_ids.txt` as an `ArticleIds` column.

    Raises:
      ModelDirError: the file is missing, empty, has blank lines or lists an id twice.
    """

    def build() -> dict:
        ids = read_article_ids(model_dir)
        arrays = string_arrays(ids, keys=True)
        repeated = ArticleIds(arrays).duplicates()
        if repeated:
            listed = "; ".join(f"{a!r} on lines {', '.join(str(r + 1) for r in rows)}" for a, rows in repeated)
            raise ModelDirError(f"{model_dir / ARTICLE_IDS_FILE} lists an article id more than once: {listed}")
        return arrays

    return ArticleIds(build())


def read_titles(model_dir: Path, article_ids: Sequence[str]) -> StringColumn | None:
    """Titles in `article_ids` order from `articles.parquet`, or None when there are none."""
    article_ids = as_article_ids(article_ids)

    def build() -> dict:
        path = model_dir / ARTICLES_FILE
        if not path.exists():
            return {}
        import pyarrow.parquet as pq

        schema = pq.read_schema(path)
        if "title" not in schema.names or "article_id" not in schema.names:
            return {}
        table = pq.read_table(path, columns=["article_id", "title"])
        rows = article_ids.rows(table.column("article_id").to_pylist())
        titles: list[str | None] = [None] * len(article_ids)
        for row, title in zip(rows.tolist(), table.column("title").to_pylist()):
            if row >= 0:
                titles[row] = title  # an id listed twice: the last row wins
        return string_arrays(titles) if any(t is not None for t in titles) else {}

    arrays = build()
    return StringColumn(arrays) if arrays else None


def read_popular(model_dir: Path, corpus: Container[str]) -> list[tuple[str, float]]:
    """The fallback list from `popular_articles.json`: `(article_id, count)` most popular first.

    Accepts a list of entries or `{"articles": [...]}`; an entry is `{"article_id", "count"}` (also
    `views`/`view_count`), `[id, count]` or a bare id. Articles outside the served corpus (sold or
    deleted since training) are dropped: the fallback must only offer servable articles.
    """
    path = model_dir / POPULAR_FILE
    if not path.exists():
        LOG.warning("%s is missing: unknown users get an empty candidate list", path)
        return []
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ModelDirError(f"{path} is not valid JSON: {error}") from None
    entries = raw.get("articles", raw.get("popular", [])) if isinstance(raw, dict) else raw
    if not isinstance(entries, list):
        raise ModelDirError(f"{path}: expected a list of articles, got {type(entries).__name__}")
    popular: list[tuple[str, float]] = []
    for i, entry in enumerate(entries):
        if isinstance(entry, dict):
            article = entry.get("article_id")
            count = next((entry[key] for key in ("count", "views", "view_count", "score") if key in entry), 0)
        elif isinstance(entry, (list, tuple)) and len(entry) == 2:
            article, count = entry
        else:
            article, count = entry, 0
        if not isinstance(article, str) or not isinstance(count, (int, float)):
            raise ModelDirError(f"{path}: entry {i} ({entry!r}) is not an article id with a count")
        popular.append((article, float(count)))
    popular.sort(key=lambda item: -item[1])  # stable: keeps file order among equal counts
    kept = [(a, c) for a, c in popular if a in corpus]
    if len(kept) < len(popular):
        LOG.info(
            "fallback: %d of %d popular articles are not in the corpus and are skipped",
            len(popular) - len(kept),
            len(popular),
        )
    return kept


def read_index_manifest(index_dir: str | os.PathLike) -> dict[str, Any]:
    """`index_manifest.json` of an index directory (homefeed/layout/index_dir.py owns the format).

    Raises:
      ModelDirError: missing (no index was built, or the build did not finish) or unreadable.
    """
    try:
        return index_layout.read_index_manifest(index_dir)
    except index_layout.IndexDirError as e:
        raise ModelDirError(str(e)) from e
