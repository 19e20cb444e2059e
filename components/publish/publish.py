"""Gated publishing: a new model + index goes live only if its offline recall earns it.

Layout of a publish root (see docs/architecture.md):

    PUBLISH_ROOT/
      versions/<model_version>/   a complete model directory: saved_model/, article vectors, index/,
                                  evaluation.json, user_histories.parquet (the embedded store), ...
      LATEST                      one line: the version the service should load
      publish_log.jsonl           one JSON line per decision, published or not (an audit trail)

Why it is safe for a service that polls LATEST, and after a crash or power loss:
  * a version is copied under a hidden staging name inside `versions/` (the name says which process
    owns it; a later publish removes those whose owner is gone), every file fsynced, then every
    directory; the copy is verified against the manifests and sealed with `publish.json` (the
    sha256 of every file, serving/versions/integrity.py), and only then renamed into place and `versions/`
    fsynced, so `versions/<v>/` is never half-written;
  * LATEST is written to a temporary file next to it, fsynced, then swapped in with `os.replace`,
    which is atomic on POSIX file systems, and the root directory fsynced: a reader sees the old
    version or the new, never neither, and a crash before the swap leaves the old one served.

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

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from components.publish.gate import (
    FIGURES_KEY,
    GATE_METRIC,
    IncompleteModelError,
    PublishDecision,
    decide,
    figures_record,
    losses_to_trending,
    paired_figures,
    recall_at_200,
)
from homefeed import atomic, lifetime
from homefeed.config import PublishConfig
from homefeed.layout import index_dir as index_layout
from homefeed.layout import model_dir as model_layout
from homefeed.layout import publish_root as layout
from homefeed.layout.json_files import read_json_object
from serving.versions import integrity

__all__ = [
    "GATE_METRIC",
    "IncompleteModelError",
    "PublishDecision",
    "check_model_dir",
    "decide",
    "latest_model_dir",
    "publish_model",
    "published_recall_at_200",
    "read_latest",
    "recall_at_200",
]

LOG = logging.getLogger(__name__)

VERSIONS_DIR = layout.VERSIONS_DIR
LATEST_FILE = layout.LATEST_FILE
PUBLISH_LOG_FILE = layout.PUBLISH_LOG_FILE
PUBLISH_RECORD_FILE = layout.RECORD_FILE
STAGING_PREFIX = layout.STAGING_PREFIX
EVALUATION_FILE = model_layout.EVALUATION_FILE
USER_HISTORIES_FILE = "user_histories.parquet"
read_latest = layout.read_latest
_check_local = layout.local_root


# ---------------------------------------------------------------------------------------------
# Reading model directories and the publish root.
# ---------------------------------------------------------------------------------------------
def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        return read_json_object(path, IncompleteModelError, f"{what}:")
    except FileNotFoundError:
        raise IncompleteModelError(f"{what}: {path} is missing") from None


def check_model_dir(model_dir: str | os.PathLike, staged_copy: bool = False) -> dict[str, Any]:
    """Checks that `model_dir` is a finished model + index + evaluation; returns its manifest.

    The model directory is checked by the rules the service applies (`homefeed.layout.model_dir.
    load_manifest`, every listed file's size and sha256), the index by `homefeed.layout.index_dir.
    check_index_dir` (this model's version and vectors, the file's recorded sha256): publish never
    accepts what the service would refuse.

    Raises:
      IncompleteModelError: naming the first thing that is missing or inconsistent.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise IncompleteModelError(f"model directory {model_dir} does not exist")
    try:
        manifest = model_layout.load_manifest(model_dir, verify_hashes=True, staged_copy=staged_copy)
        index_layout.check_index_dir(model_dir, manifest)
    except (model_layout.UnfinishedModelError, index_layout.IndexDirError) as error:
        raise IncompleteModelError(f"{error} (not published)") from None
    recall_at_200(_read_json(model_dir / EVALUATION_FILE, "evaluation"), model_dir / EVALUATION_FILE)
    return manifest


def latest_model_dir(publish_root: str | os.PathLike) -> Path | None:
    """The directory of the published version, or None when nothing has been published yet."""
    version = read_latest(publish_root)
    return None if version is None else _check_local(publish_root) / VERSIONS_DIR / version


def published_recall_at_200(publish_root: str | os.PathLike) -> tuple[str | None, float | None]:
    """(version, recall@200) of the currently published model; (None, None) when there is none.

    A published version whose evaluation cannot be read gives (version, None): the gate then
    applies only the absolute floor, and says so in its reason.
    """
    version, recall, _ = _published_evaluation(publish_root)
    return version, recall


def _published_evaluation(publish_root: str | os.PathLike) -> tuple[str | None, float | None, Any]:
    """(version, recall@200, evaluation protocol record) of the published model, its
    evaluation.json read once; the recall and protocol are None where unreadable or absent."""
    version_dir = latest_model_dir(publish_root)
    if version_dir is None:
        return None, None, None
    path = version_dir / EVALUATION_FILE
    try:
        evaluation = _read_json(path, "published evaluation")
        return version_dir.name, recall_at_200(evaluation, path), evaluation.get(model_layout.EVALUATION_PROTOCOL_KEY)
    except IncompleteModelError as error:
        LOG.warning("cannot read the published model's recall: %s", error)
        return version_dir.name, None, None


def _fit_of(model_dir: Path) -> Any:
    """A model directory's metrics.json `fit` (what it was trained on), None where unreadable."""
    try:
        return json.loads((model_dir / model_layout.METRICS_FILE).read_text()).get("fit")
    except (OSError, ValueError, AttributeError):
        return None


# ---------------------------------------------------------------------------------------------
# The gate and the atomic publish.
# ---------------------------------------------------------------------------------------------
def _append_log(publish_root: Path, decision: PublishDecision) -> None:
    record = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **decision.to_dict()}
    with open(publish_root / PUBLISH_LOG_FILE, "a") as handle:
        handle.write(json.dumps(record, sort_keys=True) + "\n")


def _copy_file(src: str | os.PathLike, dst: str | os.PathLike) -> Any:
    # One seam for every file copied into a version (a test makes it fail part-way).
    return shutil.copy2(src, dst)


def _stage_version(model_dir: Path, staging: Path, user_histories: Path | None, decision: PublishDecision) -> None:
    shutil.copytree(model_dir, staging, symlinks=False, copy_function=_copy_file, dirs_exist_ok=True)
    if user_histories is not None:
        source_hash = model_layout.sha256_file(user_histories)
        _copy_file(user_histories, staging / USER_HISTORIES_FILE)
        if model_layout.sha256_file(staging / USER_HISTORIES_FILE) != source_hash:
            raise IncompleteModelError(f"the copy of {user_histories} differs from the file: not published")
    # The copy must still be a finished model: catches a source that changed while being copied.
    manifest = check_model_dir(staging, staged_copy=True)
    index_dir = staging / index_layout.INDEX_DIR
    index_manifest = index_layout.read_index_manifest(index_dir)
    report = integrity.verify_version(staging, manifest, index_dir, index_manifest, require_record=False)
    # The seal: every file's size and sha256, the service checks them all before serving.
    record = {
        **decision.to_dict(),
        integrity.RECORD_FILES_KEY: integrity.file_table(staging, {PUBLISH_RECORD_FILE}, report.hashes),
    }
    atomic.write_json(staging / PUBLISH_RECORD_FILE, integrity.seal_record(record), sort_keys=False)


def _before_rename(staging: Path, target: Path) -> None:
    """Seam: a crash test stops the process here (copy done, version not yet in place)."""


def _before_latest(root: Path, version: str) -> None:
    """Seam: a crash test stops the process here (version in place, LATEST not yet moved)."""


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
    evaluation = _read_json(model_dir / EVALUATION_FILE, "evaluation")
    candidate = recall_at_200(evaluation, model_dir / EVALUATION_FILE)
    histories = None
    if user_histories is not None:
        histories = Path(user_histories)
        if not histories.is_file():
            raise FileNotFoundError(f"user histories {histories} not found (the extract's {USER_HISTORIES_FILE})")

    (root / VERSIONS_DIR).mkdir(parents=True, exist_ok=True)
    previous_version, previous_recall, previous_protocol = _published_evaluation(root)
    protocols = (evaluation.get(model_layout.EVALUATION_PROTOCOL_KEY), previous_protocol)
    previous_dir = latest_model_dir(root)
    paired = paired_figures(evaluation, previous_version, None if previous_dir is None else _fit_of(previous_dir))
    lost = losses_to_trending(evaluation)
    ok, reason = decide(version, candidate, previous_version, previous_recall, config, protocols, paired, lost)
    figures = evaluation.get(FIGURES_KEY) or figures_record(version, _fit_of(model_dir), evaluation)
    if figures is not None:
        reason += f" ({figures['note']})"
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
        gated_figures_of=None if figures is None else figures["model_version"],
        trained_on_test_views=figures is not None and figures["published_model_version"] == version,
        **(
            dict(
                paired_ratio=paired.ratio,
                paired_interval=list(paired.interval),
                best_baseline=paired.best_baseline,
                best_baseline_recall_at_200=paired.best_baseline_recall,
            )
            if paired is not None
            else {}
        ),
    )
    if not ok:
        decision = PublishDecision(published=False, reason=reason, **decision_args)
        _append_log(root, decision)
        LOG.info("%s", reason)
        return decision

    lifetime.remove_stale_dirs(root / VERSIONS_DIR, STAGING_PREFIX)  # left by publishes that were killed
    decision = PublishDecision(published=True, reason=reason, version_dir=str(target), **decision_args)
    LOG.info("copying %s into %s", model_dir, target)
    # Staged in versions/, every file and directory fsynced, renamed into place (never over a version).
    with atomic.staged_dir(
        target, prefix=f"{STAGING_PREFIX}{version}-", before_rename=lambda s, t: _before_rename(s, t)
    ) as staging:
        _stage_version(model_dir, staging, histories, decision)
    # Only now, with the version complete and durable on disk, does the pointer move.
    _before_latest(root, version)
    atomic.write_text(root / LATEST_FILE, version + "\n")
    _append_log(root, decision)
    LOG.info("%s; LATEST -> %s", reason, version)
    return decision
