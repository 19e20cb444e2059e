"""Gated publishing: a new model + index goes live only if its offline recall earns it.

Layout of a publish root (see docs/architecture.md):

    PUBLISH_ROOT/
      versions/<model_version>/   a complete model directory: saved_model/, article vectors, index/,
                                  evaluation.json, user_histories.parquet (the embedded store), ...
      LATEST                      one line: the version the service should load
      publish_log.jsonl           one JSON line per decision, published or not (an audit trail)

Why it is safe for a service that polls LATEST:
  * a version is copied under a hidden staging name inside `versions/` and renamed into place only
    when every file is there and its manifests check out, so `versions/<v>/` is never half-written;
  * LATEST is written to a temporary file next to it, fsynced, then swapped in with `os.replace`,
    which is atomic on POSIX file systems: a reader sees the old version or the new, never neither.

The gate: recall@200 of the new model (from its `evaluation.json`) must be at least
`PublishConfig.min_recall_at_200`, and at most `PublishConfig.max_regression` below the recall of
the currently published model. A model that fails the gate is not an error: `publish_model`
returns a `PublishDecision` with `published=False` and the reason. A model directory that is not
finished (no manifest, no index, no evaluation, an index built for another model) is an error: it
raises `IncompleteModelError` and nothing is copied.

Only local (or mounted, e.g. gcsfuse `/gcs/bucket/...`) paths are supported: `os.replace` is what
makes the pointer swap atomic.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from homefeed.config import PublishConfig
from trainer.model_dir import sha256_file

LOG = logging.getLogger(__name__)

VERSIONS_DIR = "versions"
LATEST_FILE = "LATEST"
PUBLISH_LOG_FILE = "publish_log.jsonl"
PUBLISH_RECORD_FILE = "publish.json"  # written into each published version: the decision

# Files a finished model directory must hold (docs/architecture.md, MODEL_DIR).
MANIFEST_FILE = "manifest.json"
EVALUATION_FILE = "evaluation.json"
INDEX_DIR = "index"
INDEX_MANIFEST_FILE = "index_manifest.json"
INDEX_FILE = "articles.faiss"
USER_HISTORIES_FILE = "user_histories.parquet"
VECTORS_HASH_KEY = "article_vectors_sha256"  # recorded by the trainer and by build-index
REQUIRED_MODEL_ENTRIES = ("saved_model", "article_vectors.npy", "article_ids.txt", MANIFEST_FILE)

# The metric the gate reads from evaluation.json.
GATE_METRIC = "recall@200"


class IncompleteModelError(ValueError):
    """The model directory is not a finished model + index; it must never go live."""


@dataclass(frozen=True)
class PublishDecision:
    """What `publish_model` decided and why.

    Attributes:
      published: True when LATEST now names `version`.
      version: the candidate model's version (its manifest's `model_version`).
      reason: one sentence a person can read in the KFP UI or a log.
      recall_at_200: the candidate's recall@200 on the eval split.
      min_recall_at_200: the absolute floor it was held to.
      previous_version: the version LATEST named before (None when nothing was published yet).
      previous_recall_at_200: that version's recall@200 (None when unknown).
      max_regression: the tolerance against the previous version.
      version_dir: where the version lives when published, else None.
    """

    published: bool
    version: str
    reason: str
    recall_at_200: float
    min_recall_at_200: float
    previous_version: str | None = None
    previous_recall_at_200: float | None = None
    max_regression: float = 0.0
    version_dir: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------------------------
# Reading model directories and the publish root.
# ---------------------------------------------------------------------------------------------
def _check_local(path: str | os.PathLike) -> Path:
    text = os.fspath(path)
    if "://" in text:
        raise ValueError(
            f"publish root {text!r} is a URL; publishing needs a local or mounted path (os.replace is "
            "what makes the LATEST swap atomic), e.g. a bucket mounted with gcsfuse at /gcs/<bucket>"
        )
    return Path(text)


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise IncompleteModelError(f"{what}: {path} is missing") from None
    except json.JSONDecodeError as error:
        raise IncompleteModelError(f"{what}: {path} is not valid JSON ({error})") from None


def recall_at_200(evaluation: dict[str, Any], source: str | os.PathLike = "evaluation.json") -> float:
    """The gate metric from a parsed `evaluation.json`.

    Accepts the metric at the top level or under `metrics` (`{"metrics": {"recall@200": ...}}`).

    Raises:
      IncompleteModelError: the metric is absent or not a number in [0, 1].
    """
    for holder in (evaluation, evaluation.get("metrics") or {}):
        if isinstance(holder, dict) and GATE_METRIC in holder:
            value = holder[GATE_METRIC]
            if isinstance(value, (int, float)) and 0.0 <= float(value) <= 1.0:
                return float(value)
            raise IncompleteModelError(f"{source}: {GATE_METRIC} is {value!r}, expected a number in [0, 1]")
    raise IncompleteModelError(f"{source} has no {GATE_METRIC!r} (keys: {sorted(evaluation)})")


def check_model_dir(model_dir: str | os.PathLike) -> dict[str, Any]:
    """Checks that `model_dir` is a finished model + index + evaluation; returns its manifest.

    Raises:
      IncompleteModelError: naming the first thing that is missing or inconsistent.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise IncompleteModelError(f"model directory {model_dir} does not exist")
    missing = [name for name in REQUIRED_MODEL_ENTRIES if not (model_dir / name).exists()]
    if missing:
        raise IncompleteModelError(
            f"{model_dir} is not a finished model: missing {', '.join(missing)} "
            f"(the trainer writes {MANIFEST_FILE} last; no manifest means training did not finish)"
        )
    manifest = _read_json(model_dir / MANIFEST_FILE, "model manifest")
    version = manifest.get("model_version")
    if not version or not isinstance(version, str) or "/" in version or version.startswith("."):
        raise IncompleteModelError(f"{model_dir / MANIFEST_FILE}: bad model_version {version!r}")
    _check_files_table(model_dir, manifest)
    index_manifest = _read_json(model_dir / INDEX_DIR / INDEX_MANIFEST_FILE, "index manifest")
    index_file = model_dir / INDEX_DIR / str(index_manifest.get("index_file", INDEX_FILE))
    if not index_file.is_file() or index_file.stat().st_size == 0:
        raise IncompleteModelError(f"{index_file} is missing or empty although {INDEX_MANIFEST_FILE} exists")
    # An index built for another model, or from other article vectors, would answer every query
    # with the wrong articles. The hash is computed from the file, so a truncated copy fails too.
    if index_manifest.get("model_version") != version:
        raise IncompleteModelError(
            f"{model_dir / INDEX_DIR}: index was built for model_version={index_manifest.get('model_version')!r}, "
            f"but the model is {version!r}; rebuild the index"
        )
    recorded = [h for h in (index_manifest.get(VECTORS_HASH_KEY), manifest.get(VECTORS_HASH_KEY)) if h]
    if recorded:
        actual = sha256_file(model_dir / "article_vectors.npy")
        if any(h != actual for h in recorded):
            raise IncompleteModelError(
                f"{model_dir}: article_vectors.npy has sha256 {actual[:12]}..., but the manifests record "
                f"{', '.join(h[:12] + '...' for h in recorded)}; the vectors or the index are not this model's"
            )
    recall_at_200(_read_json(model_dir / EVALUATION_FILE, "evaluation"), model_dir / EVALUATION_FILE)
    return manifest


def _check_files_table(model_dir: Path, manifest: dict[str, Any]) -> None:
    """Every file the trainer listed in the manifest is there, whole (size and sha256)."""
    files = manifest.get("files")
    if not isinstance(files, dict):
        return  # an older manifest without a table: the other checks still apply
    for name, entry in files.items():
        path = model_dir / name
        if not path.is_file():
            raise IncompleteModelError(f"{model_dir}: {name} is listed in {MANIFEST_FILE} but missing")
        expected_size, expected_hash = (entry or {}).get("bytes"), (entry or {}).get("sha256")
        if expected_size is not None and path.stat().st_size != expected_size:
            raise IncompleteModelError(
                f"{model_dir}: {name} has {path.stat().st_size} bytes, {MANIFEST_FILE} says {expected_size} (truncated?)"
            )
        if expected_hash and sha256_file(path) != expected_hash:
            raise IncompleteModelError(f"{model_dir}: {name} does not match its sha256 in {MANIFEST_FILE}")


def read_latest(publish_root: str | os.PathLike) -> str | None:
    """The version LATEST names, or None when nothing has been published yet."""
    latest = _check_local(publish_root) / LATEST_FILE
    try:
        text = latest.read_text().strip()
    except FileNotFoundError:
        return None
    return text or None


def latest_model_dir(publish_root: str | os.PathLike) -> Path | None:
    """The directory of the published version, or None when nothing has been published yet."""
    version = read_latest(publish_root)
    return None if version is None else _check_local(publish_root) / VERSIONS_DIR / version


def published_recall_at_200(publish_root: str | os.PathLike) -> tuple[str | None, float | None]:
    """(version, recall@200) of the currently published model; (None, None) when there is none.

    A published version whose evaluation cannot be read gives (version, None): the gate then
    applies only the absolute floor, and says so in its reason.
    """
    version_dir = latest_model_dir(publish_root)
    if version_dir is None:
        return None, None
    try:
        return version_dir.name, recall_at_200(
            _read_json(version_dir / EVALUATION_FILE, "published evaluation"), version_dir / EVALUATION_FILE
        )
    except IncompleteModelError as error:
        LOG.warning("cannot read the published model's recall: %s", error)
        return version_dir.name, None


# ---------------------------------------------------------------------------------------------
# The gate and the atomic publish.
# ---------------------------------------------------------------------------------------------
def decide(
    version: str,
    candidate_recall: float,
    previous_version: str | None,
    previous_recall: float | None,
    config: PublishConfig,
) -> tuple[bool, str]:
    """The gate as a pure function: (publish?, reason)."""
    floor = config.min_recall_at_200
    if candidate_recall < floor:
        return False, (
            f"not published: recall@200 {candidate_recall:.4f} is below the floor {floor:.4f}"
        )
    if previous_version == version:
        return False, f"not published: version {version} is already the published version"
    if previous_version is not None and previous_recall is not None:
        allowed = previous_recall - config.max_regression
        if candidate_recall < allowed:
            return False, (
                f"not published: recall@200 {candidate_recall:.4f} is worse than the published "
                f"{previous_version} ({previous_recall:.4f}) by {previous_recall - candidate_recall:.4f}, "
                f"more than the tolerated {config.max_regression:.4f}"
            )
        return True, (
            f"published: recall@200 {candidate_recall:.4f} clears the floor {floor:.4f} and is within "
            f"{config.max_regression:.4f} of the published {previous_version} ({previous_recall:.4f})"
        )
    if previous_version is not None:
        return True, (
            f"published: recall@200 {candidate_recall:.4f} clears the floor {floor:.4f} "
            f"(the published {previous_version} has no readable recall to compare with)"
        )
    return True, f"published: recall@200 {candidate_recall:.4f} clears the floor {floor:.4f} (first version)"


def write_text_atomically(path: Path, text: str) -> None:
    """Writes `text` to `path` so readers see the old content or the new one, never a mix."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes it 0600; the service may run as another user (a mounted publish root).
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; not all file systems allow opening a directory.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _append_log(publish_root: Path, decision: PublishDecision) -> None:
    record = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **decision.to_dict()}
    with open(publish_root / PUBLISH_LOG_FILE, "a") as handle:
        handle.write(json.dumps(record, sort_keys=True) + "\n")


def _copy_file(src: str | os.PathLike, dst: str | os.PathLike) -> Any:
    # One seam for every file copied into a version (a test makes it fail part-way).
    return shutil.copy2(src, dst)


def _stage_version(
    model_dir: Path, staging: Path, user_histories: Path | None
) -> None:
    shutil.copytree(model_dir, staging, symlinks=False, copy_function=_copy_file)
    if user_histories is not None:
        _copy_file(user_histories, staging / USER_HISTORIES_FILE)
    # The copy must still be a finished model: catches a source that changed while being copied.
    check_model_dir(staging)


def publish_model(
    model_dir: str | os.PathLike,
    publish_root: str | os.PathLike,
    config: PublishConfig | None = None,
    user_histories: str | os.PathLike | None = None,
) -> PublishDecision:
    """Publishes `model_dir` under `publish_root` if it passes the gate.

    Args:
      model_dir: a finished model directory with `index/` and `evaluation.json`.
      publish_root: local or mounted directory; created if missing.
      config: the gate (floor and tolerated regression); defaults to `PublishConfig()`.
      user_histories: the extract's `user_histories.parquet`; copied into the version as
        `user_histories.parquet` so the service's embedded store has the histories the model was
        trained with. None: the model directory must already hold it (or the service uses Redis).

    Returns:
      The decision. When `published` is False nothing under `versions/` or LATEST changed.

    Raises:
      IncompleteModelError: `model_dir` is not finished (see `check_model_dir`).
      FileNotFoundError: `user_histories` does not exist.
      ValueError: `publish_root` is a URL rather than a path.
    """
    config = config or PublishConfig()
    model_dir = Path(model_dir)
    root = _check_local(publish_root)
    manifest = check_model_dir(model_dir)
    version = manifest["model_version"]
    candidate = recall_at_200(_read_json(model_dir / EVALUATION_FILE, "evaluation"), model_dir / EVALUATION_FILE)
    histories = None
    if user_histories is not None:
        histories = Path(user_histories)
        if not histories.is_file():
            raise FileNotFoundError(f"user histories {histories} not found (the extract's {USER_HISTORIES_FILE})")

    (root / VERSIONS_DIR).mkdir(parents=True, exist_ok=True)
    previous_version, previous_recall = published_recall_at_200(root)
    ok, reason = decide(version, candidate, previous_version, previous_recall, config)
    target = root / VERSIONS_DIR / version
    if ok and target.exists():
        ok, reason = False, f"not published: {target} already exists (a version is never overwritten)"

    decision_args = dict(
        version=version,
        recall_at_200=candidate,
        min_recall_at_200=config.min_recall_at_200,
        previous_version=previous_version,
        previous_recall_at_200=previous_recall,
        max_regression=config.max_regression,
    )
    if not ok:
        decision = PublishDecision(published=False, reason=reason, **decision_args)
        _append_log(root, decision)
        LOG.info("%s", reason)
        return decision

    staging = Path(tempfile.mkdtemp(prefix=f".staging-{version}-", dir=root / VERSIONS_DIR))
    staging.rmdir()  # copytree wants to create it
    decision = PublishDecision(published=True, reason=reason, version_dir=str(target), **decision_args)
    try:
        LOG.info("copying %s into %s", model_dir, target)
        _stage_version(model_dir, staging, histories)
        write_text_atomically(staging / PUBLISH_RECORD_FILE, json.dumps(decision.to_dict(), indent=2) + "\n")
        os.rename(staging, target)  # atomic within one directory; fails if target appeared meanwhile
        _fsync_dir(target.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    # Only now, with the version complete on disk, does the pointer move.
    write_text_atomically(root / LATEST_FILE, version + "\n")
    _append_log(root, decision)
    LOG.info("%s; LATEST -> %s", reason, version)
    return decision
