"""MODEL_DIR/index/ (docs/architecture.md): the FAISS index and its manifest, and the one check
that an index belongs to a model.

Written by `candidates build-index` (components/build_index/build.py); checked by the publish step and by
the service before either trusts it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from homefeed.layout import model_dir as model_layout
from homefeed.layout.json_files import read_json_object

INDEX_DIR = "index"
INDEX_FILE = "articles.faiss"
INDEX_MANIFEST_FILE = "index_manifest.json"
VECTORS_HASH_KEY = "article_vectors_sha256"  # recorded by the trainer and by build-index
INDEX_HASH_KEY = "index_sha256"
INDEX_BYTES_KEY = "index_bytes"


class IndexDirError(ValueError):
    """The index directory is missing, unreadable or incomplete; the message says what."""


class IndexMismatchError(IndexDirError):
    """The index was not built from this model's article vectors; serving it would be wrong."""


def read_index_manifest(index_dir: str | os.PathLike) -> dict[str, Any]:
    """`index_manifest.json` of an index directory, a JSON object.

    Raises:
      IndexDirError: missing (no index was built, or the build did not finish) or unreadable.
    """
    path = Path(index_dir) / INDEX_MANIFEST_FILE
    if not path.exists():
        raise IndexDirError(
            f"no index at {Path(index_dir)} ({INDEX_MANIFEST_FILE} missing): run `candidates build-index --model MODEL_DIR`"
        )
    return read_json_object(path, IndexDirError, "index manifest")


def index_file(model_dir: str | os.PathLike, index_manifest: dict[str, Any]) -> Path:
    """The index file the manifest names (default `articles.faiss`), inside `index/`."""
    name = str(index_manifest.get("index_file", INDEX_FILE))
    if "/" in name or name.startswith("."):
        raise IndexDirError(
            f"{Path(model_dir) / INDEX_DIR / INDEX_MANIFEST_FILE}: index_file {name!r} is not a file name"
        )
    return Path(model_dir) / INDEX_DIR / name


def check_index_matches(model_dir: str | os.PathLike, manifest: dict[str, Any], index_manifest: dict[str, Any]) -> None:
    """Raises IndexMismatchError unless the index records this model's version and article vectors."""
    model_dir = Path(model_dir)
    version = manifest["model_version"]
    if index_manifest.get("model_version") != version:
        raise IndexMismatchError(
            f"{model_dir / INDEX_DIR} was built for model {index_manifest.get('model_version')!r}, "
            f"not {version!r}: rebuild it with `candidates build-index --model {model_dir}`"
        )
    recorded = manifest.get(VECTORS_HASH_KEY)
    expected = (
        recorded
        if isinstance(recorded, str) and recorded
        else model_layout.sha256_file(model_dir / model_layout.ARTICLE_VECTORS_FILE)
    )
    if index_manifest.get(VECTORS_HASH_KEY) != expected:
        raise IndexMismatchError(
            f"{model_dir / INDEX_DIR} was built from article vectors {str(index_manifest.get(VECTORS_HASH_KEY))[:12]}..., "
            f"but model {version} has {expected[:12]}...: rebuild it with `candidates build-index --model {model_dir}`"
        )


def check_index_dir(model_dir: str | os.PathLike, manifest: dict[str, Any], verify_hash: bool = True) -> dict[str, Any]:
    """Checks `model_dir/index/` belongs to the model whose manifest is given; returns its manifest.

    Checks: the index manifest is a JSON object naming this model's version and article vectors;
    the index file exists, is not empty, and its manifest records its sha256 (and, with
    `verify_hash`, the file matches it).

    Raises:
      IndexDirError (IndexMismatchError for an index of another model): the index must not serve.
    """
    index_manifest = read_index_manifest(Path(model_dir) / INDEX_DIR)
    check_index_matches(model_dir, manifest, index_manifest)
    path = index_file(model_dir, index_manifest)
    if not path.is_file() or path.stat().st_size == 0:
        raise IndexDirError(f"{path} is missing or empty although {INDEX_MANIFEST_FILE} exists")
    recorded = index_manifest.get(INDEX_HASH_KEY)
    if not recorded:
        raise IndexDirError(
            f"{Path(model_dir) / INDEX_DIR}: {INDEX_MANIFEST_FILE} records no {INDEX_HASH_KEY}, so the service "
            f"could not verify the index; rebuild it with `candidates build-index --model {model_dir}`"
        )
    if verify_hash and model_layout.sha256_file(path) != recorded:
        raise IndexDirError(f"{path} does not match its sha256 in {INDEX_MANIFEST_FILE} (corrupted)")
    return index_manifest
