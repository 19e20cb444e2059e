"""PUBLISH_ROOT (docs/architecture.md): `versions/<version>/`, the `LATEST` pointer, the log.

Written by components/publish/publish.py; the service follows LATEST (serving/versions/files.py). Each version is
a full MODEL_DIR (with `index/`, `evaluation.json`, `user_histories.parquet`) sealed by
`publish.json`.
"""

from __future__ import annotations

import os
from pathlib import Path

VERSIONS_DIR = "versions"
LATEST_FILE = "LATEST"
PUBLISH_LOG_FILE = "publish_log.jsonl"
RECORD_FILE = "publish.json"  # in each published version: the decision and every file's sha256
STAGING_PREFIX = ".staging-"  # versions/.staging-<version>-<owner>: a copy under way


class PublishRootError(ValueError):
    """The publish root cannot be followed; the message says what is wrong."""


def local_root(path: str | os.PathLike) -> Path:
    """`path` as a local Path; URLs are refused (`os.replace` is what makes the LATEST swap atomic)."""
    text = os.fspath(path)
    if "://" in text:
        raise ValueError(
            f"publish root {text!r} is a URL; publishing needs a local or mounted path (os.replace is "
            "what makes the LATEST swap atomic), e.g. a bucket mounted with gcsfuse at /gcs/<bucket>"
        )
    return Path(text)


def is_publish_root(path: str | os.PathLike, manifest_file: str = "manifest.json") -> bool:
    """A directory with LATEST, or with `versions/` and no model manifest of its own."""
    path = Path(path)
    return (path / LATEST_FILE).exists() or ((path / VERSIONS_DIR).is_dir() and not (path / manifest_file).exists())


def read_latest(publish_root: str | os.PathLike) -> str | None:
    """The version LATEST names, or None when nothing has been published yet."""
    try:
        text = (local_root(publish_root) / LATEST_FILE).read_text().strip()
    except FileNotFoundError:
        return None
    return text or None


def is_version_name(name: str) -> bool:
    return bool(name) and "/" not in name and not name.startswith(".")


def latest_version_dir(publish_root: str | os.PathLike) -> Path:
    """The directory of the version LATEST names (the check the service applies before loading).

    Raises:
      PublishRootError: nothing published yet, LATEST naming something that is not a version
        name, or a version directory that does not exist.
    """
    root = local_root(publish_root)
    latest = read_latest(root)
    if latest is None:
        raise PublishRootError(f"publish root {root} has no {LATEST_FILE}: nothing has been published yet")
    if not is_version_name(latest):
        raise PublishRootError(f"{root / LATEST_FILE} names {latest!r}, which is not a version name")
    version_dir = root / VERSIONS_DIR / latest
    if not version_dir.is_dir():
        raise PublishRootError(f"{root / LATEST_FILE} names version {latest!r} but {version_dir} does not exist")
    return version_dir
