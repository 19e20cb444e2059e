"""Integrity of a model version: every file checked against a recorded sha256 before it is served.

Three records cover a version (docs/serving.md, "Faults and integrity"):

  * `manifest.json` (the trainer): `files`, every file of the model with `bytes` and `sha256`;
  * `index/index_manifest.json` (build-index): `index_sha256` and `index_bytes` of the index file;
  * `publish.json` (the publish step, published versions only): `files`, every other file of the
    version (both manifests, the index, `user_histories.parquet`, `evaluation.*` ...) with `bytes`
    and `sha256`, and `record_sha256`, the hash of the record itself, so not even a byte of the
    record can change unnoticed.

`verify_version` hashes each file once (in 1 MiB blocks; hashlib releases the GIL, so serving
threads keep running) and raises `IntegrityError` naming the first file whose size or hash differs
from any record that lists it. A version the publish log records as published must carry its
`publish.json`; a bare model directory (or a version copied in by hand) is checked against the two
manifests, and whatever no record lists is named in the report (and logged) as unverified.

Standard library only (imported by components/publish/publish.py and serving/versions/pair.py).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from homefeed.layout import index_dir as index_layout
from homefeed.layout import publish_root as publish_layout
from homefeed.layout.json_files import read_json_object
from homefeed.layout.model_dir import MANIFEST_FILE, sha256_file

LOG = logging.getLogger(__name__)

RECORD_FILE = publish_layout.RECORD_FILE  # the publish step's record in each published version
RECORD_FILES_KEY = "files"
RECORD_HASH_KEY = "record_sha256"
INDEX_HASH_KEY = index_layout.INDEX_HASH_KEY
INDEX_BYTES_KEY = index_layout.INDEX_BYTES_KEY
VERSIONS_DIR = publish_layout.VERSIONS_DIR
PUBLISH_LOG_FILE = publish_layout.PUBLISH_LOG_FILE


class IntegrityError(ValueError):
    """A file of a version differs from what its records say; the version must not be served."""


@dataclass
class VerificationReport:
    """What `verify_version` checked: files and bytes hashed, the time it took, what no record lists."""

    files: int = 0
    bytes: int = 0
    seconds: float = 0.0
    unverified: list[str] = field(default_factory=list)
    hashes: dict[str, tuple[int, str]] = field(default_factory=dict)  # relative path -> (bytes, sha256)

    def describe(self) -> str:
        text = f"{self.files} files, {self.bytes / 2**20:.1f} MiB verified in {self.seconds:.2f}s"
        return text + (f"; not covered by any record: {', '.join(self.unverified)}" if self.unverified else "")


def record_digest(record: dict[str, Any]) -> str:
    """sha256 of a record's canonical JSON, its own `record_sha256` left out."""
    body = {k: v for k, v in record.items() if k != RECORD_HASH_KEY}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def seal_record(record: dict[str, Any]) -> dict[str, Any]:
    """`record` with its `record_sha256` set."""
    return {**record, RECORD_HASH_KEY: record_digest(record)}


def file_table(root: Path, exclude: set[str], known: dict[str, tuple[int, str]] | None = None) -> dict[str, dict]:
    """`{relative path: {"bytes", "sha256"}}` of every file under `root` but `exclude`.

    `known` hashes (from a verification just done) are reused instead of reading a file twice.
    """
    known = known or {}
    table: dict[str, dict] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        name = path.relative_to(root).as_posix()
        if name in exclude:
            continue
        size = path.stat().st_size
        if name in known and known[name][0] == size:
            digest = known[name][1]
        else:
            digest = sha256_file(path)
        table[name] = {"bytes": size, "sha256": digest}
    return table


def is_published_version(model_dir: Path) -> bool:
    """True when the publish root's log says the publish step put `model_dir` there: it must carry its record.

    (A version copied into `versions/` by hand has no record; it is checked against its manifests.)
    """
    if model_dir.parent.name != VERSIONS_DIR:
        return False
    log = model_dir.parent.parent / PUBLISH_LOG_FILE
    try:
        lines = log.read_text().splitlines()
    except OSError:
        return False
    for line in lines:
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict) and entry.get("published") is True and entry.get("version") == model_dir.name:
            return True
    return False


def _expected(model_dir: Path, manifest: dict[str, Any], index_dir: Path, index_manifest: dict[str, Any]):
    """`{relative path: [(bytes, sha256, which record)]}` from the manifests."""
    expected: dict[str, list[tuple[Any, Any, str]]] = {}
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise IntegrityError(f"{model_dir.name}/{MANIFEST_FILE} has no 'files' table to verify the model against")
    for name, entry in files.items():
        entry = entry if isinstance(entry, dict) else {}
        expected.setdefault(name, []).append((entry.get("bytes"), entry.get("sha256"), MANIFEST_FILE))
    index_file = index_dir / str(index_manifest.get("index_file", "articles.faiss"))
    recorded = index_manifest.get(INDEX_HASH_KEY)
    if not isinstance(recorded, str) or len(recorded) != 64:
        raise IntegrityError(
            f"{index_dir.name}/index_manifest.json records no {INDEX_HASH_KEY}: the index cannot be verified; "
            f"rebuild it with `candidates build-index --model {model_dir.name}`"
        )
    relative = index_file.relative_to(model_dir).as_posix()
    expected.setdefault(relative, []).append((index_manifest.get(INDEX_BYTES_KEY), recorded, "index_manifest.json"))
    return expected


def read_record(model_dir: Path) -> dict[str, Any] | None:
    """The version's `publish.json`, its own hash checked; None when there is none."""
    path = model_dir / RECORD_FILE
    if not path.exists():
        return None
    record = read_json_object(path, IntegrityError, f"{model_dir.name}/{RECORD_FILE}")
    if RECORD_FILES_KEY not in record:
        return None  # written before records carried hashes: the manifests still apply
    if record.get(RECORD_HASH_KEY) != record_digest(record):
        raise IntegrityError(f"{model_dir.name}/{RECORD_FILE} does not match its own {RECORD_HASH_KEY} (corrupted)")
    if not isinstance(record[RECORD_FILES_KEY], dict):
        raise IntegrityError(f"{model_dir.name}/{RECORD_FILE}: '{RECORD_FILES_KEY}' is not a table")
    return record


def verify_records(model_dir: str | os.PathLike, names: tuple[str, ...]) -> None:
    """Checks the manifests themselves (`names`) against the version's publish.json, before they are read.

    So a corrupted manifest is reported as what it is, not as the odd file list it now describes.
    No-op without a record (a bare model directory).
    """
    model_dir = Path(model_dir)
    record = read_record(model_dir)
    if record is None:
        return
    for name in names:
        entry = record[RECORD_FILES_KEY].get(name)
        path = model_dir / name
        if not isinstance(entry, dict):
            continue
        if not path.is_file():
            raise IntegrityError(f"{model_dir.name}/{name} is listed in {RECORD_FILE} but missing")
        if path.stat().st_size != entry.get("bytes") or sha256_file(path) != entry.get("sha256"):
            raise IntegrityError(f"{model_dir.name}/{name} does not match its sha256 in {RECORD_FILE} (corrupted)")


def verify_version(
    model_dir: str | os.PathLike,
    manifest: dict[str, Any],
    index_dir: str | os.PathLike,
    index_manifest: dict[str, Any],
    *,
    require_record: bool | None = None,
) -> VerificationReport:
    """Hashes every file of `model_dir` that a record lists and compares size and sha256.

    Args:
      model_dir: the model directory (a published version or a bare model directory with index/).
      manifest, index_manifest: the two manifests as read.
      index_dir: where the index lives (normally `model_dir/index`).
      require_record: a `publish.json` with a file table must be there; None: when `model_dir` is
        a published version (see `is_published_version`).

    Raises:
      IntegrityError: a listed file is missing, has another size or another sha256, a record is
        corrupted, or a published version has no record.
    """
    started = time.perf_counter()
    model_dir, index_dir = Path(model_dir), Path(index_dir)
    expected = _expected(model_dir, manifest, index_dir, index_manifest)
    record = read_record(model_dir)
    if require_record is None:
        require_record = is_published_version(model_dir)
    if record is None and require_record:
        raise IntegrityError(
            f"published version {model_dir.name} has no {RECORD_FILE} with a file table: it cannot be verified"
        )
    if record is not None:
        for name, entry in record[RECORD_FILES_KEY].items():
            entry = entry if isinstance(entry, dict) else {}
            expected.setdefault(name, []).append((entry.get("bytes"), entry.get("sha256"), RECORD_FILE))
    report = VerificationReport()
    for name in sorted(expected):
        path = model_dir / name
        if ".." in Path(name).parts or not path.is_file():
            raise IntegrityError(f"{model_dir.name}/{name} is listed in {expected[name][0][2]} but missing")
        size = path.stat().st_size
        for recorded_size, _, which in expected[name]:
            if recorded_size is not None and size != recorded_size:
                raise IntegrityError(
                    f"{model_dir.name}/{name} has {size} bytes, {which} records {recorded_size} (truncated or replaced)"
                )
        digest = sha256_file(path)
        for _, recorded_hash, which in expected[name]:
            if digest != recorded_hash:
                raise IntegrityError(f"{model_dir.name}/{name} does not match its sha256 in {which} (corrupted)")
        report.files += 1
        report.bytes += size
        report.hashes[name] = (size, digest)
    covered = set(expected) | {MANIFEST_FILE, RECORD_FILE}
    report.unverified = sorted(
        p.relative_to(model_dir).as_posix()
        for p in model_dir.rglob("*")
        if p.is_file() and p.relative_to(model_dir).as_posix() not in covered
    )
    report.seconds = time.perf_counter() - started
    return report
