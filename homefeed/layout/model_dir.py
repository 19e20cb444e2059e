"""MODEL_DIR (docs/architecture.md): its file names and the one check that a directory is a finished model.

Standard library and numpy only, so the service and the index builder can check a directory
without importing TensorFlow. A model directory is built under a hidden staging name next to its
final place, `manifest.json` is written last inside it, and only then is it renamed into place;
`load_manifest` additionally verifies that every file the manifest lists is present with the
recorded size (and, on request, hash), so a truncated copy is refused too.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

from homefeed import atomic, features
from homefeed.layout.json_files import read_json_object

LOG = logging.getLogger(__name__)

SAVED_MODEL_DIR = "saved_model"
ARTICLE_VECTORS_FILE = "article_vectors.npy"
ARTICLE_IDS_FILE = "article_ids.txt"
ARTICLES_FILE = "articles.parquet"
POPULAR_FILE = "popular_articles.json"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
MANIFEST_FILE = "manifest.json"
EVALUATION_FILE = "evaluation.json"
# evaluation.json's record of how recall was measured (written by trainer/evaluation/evaluate.py): the publish
# gate compares two versions' recall only when these agree (components/publish/gate.py).
EVALUATION_PROTOCOL_KEY = "protocol"
EVALUATION_PLOT_FILE = "evaluation.png"
PREDICTIONS_PAGE_FILE = "predictions.html"  # sample users' views and candidates (trainer/evaluation/predictions.py)
# The towers without TensorFlow (trainer/towers/numpy_towers.py), written by trainer/training/numpy_export.py only
# when proven equal to the SavedModel: `spec.json` (parts, sizes, constants, the proof), one `.npy`
# per weight array under `weights/` and the vocabularies under `vocab/`. Absent: the SavedModel serves.
NUMPY_TOWERS_DIR = "numpy_towers"
NUMPY_TOWERS_SPEC_FILE = "spec.json"
NUMPY_TOWERS_WEIGHTS_DIR = "weights"
NUMPY_TOWERS_VOCAB_DIR = "vocab"

# The exported SavedModel's interface, written by trainer/training/export.py and called by
# trainer/towers/serving_model.py: one definition so the two cannot drift apart.
SERVING_SIGNATURE = "serving_default"
ARTICLE_SIGNATURE = "article_vectors"
USER_OUTPUT = "user_vector"
ARTICLE_OUTPUT = "article_vector"
HISTORY_INPUTS: tuple[str, ...] = features.HISTORY_COLUMNS
# The user's recent queries, most recent first, padded with "" like the histories; each value
# normalised text (homefeed.tokens.normalise; trainer/towers/serving_model.py applies it).
QUERY_INPUTS: tuple[str, ...] = (features.RECENT_QUERIES,)
# Every input of the serving signature, in its order.
USER_INPUTS: tuple[str, ...] = (*HISTORY_INPUTS, *QUERY_INPUTS, features.EXAMPLE_AGE)
# The article tower's inputs: label id and attributes tf.string `[N]`, the normalised title
# tf.string `[N]` ("" for none) and the age now, float32 `[N]` days (trainer/towers/article_inputs.py).
# Models exported before the content inputs existed take only the first ones.
ARTICLE_INPUTS: tuple[str, ...] = features.ARTICLE_FEATURES

# Bumped when the layout changes incompatibly; readers refuse versions they do not know.
FORMAT_VERSION = 1
STAGING_PREFIX = "."  # staging directories are hidden: `.<version>.staging-<random>`


class UnfinishedModelError(ValueError):
    """The directory is not a finished model directory; the message says what is missing."""


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_manifest(
    model_dir: str | os.PathLike, verify_hashes: bool = False, staged_copy: bool = False
) -> dict[str, Any]:
    """The manifest of a finished model directory, after checking the directory against it.

    Checks: `manifest.json` exists and is a JSON object with a known `format_version` and a
    `model_version`; the directory is not a staging directory; every file in `manifest["files"]`
    exists with its recorded size (and sha256 when `verify_hashes`); `saved_model/saved_model.pb`
    exists. `staged_copy`: the directory is a copy being staged (by the publish step) under a
    hidden name, so the staging-name check is skipped.

    Raises:
      UnfinishedModelError: any check fails (the message names the file and what is wrong).
    """
    model_dir = Path(model_dir)
    if model_dir.name.startswith(STAGING_PREFIX) and not staged_copy:
        raise UnfinishedModelError(f"{model_dir} is a staging directory of an unfinished training run")
    path = model_dir / MANIFEST_FILE
    if not path.is_file():
        raise UnfinishedModelError(
            f"{model_dir} is not a finished model directory: {MANIFEST_FILE} is missing "
            "(the trainer writes it last, so training did not finish there)"
        )
    manifest = read_json_object(path, UnfinishedModelError)
    if manifest.get("format_version") != FORMAT_VERSION:
        raise UnfinishedModelError(
            f"{path}: format_version {manifest.get('format_version')!r} is not {FORMAT_VERSION} "
            "(written by another version of the trainer)"
        )
    version = manifest.get("model_version")
    if not isinstance(version, str) or not version or "/" in version:
        raise UnfinishedModelError(f"{path}: model_version is {version!r}, expected a non-empty name")
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise UnfinishedModelError(f"{path}: no 'files' table")
    for name, entry in files.items():
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("bytes"), int)
            or not isinstance(entry.get("sha256"), str)
        ):
            raise UnfinishedModelError(
                f"{path}: files[{name!r}] is {entry!r}, expected {{'bytes': int, 'sha256': str}}"
            )
        if name.startswith("/") or ".." in Path(name).parts:
            raise UnfinishedModelError(f"{path}: files lists {name!r}, which is outside the model directory")
        file_path = model_dir / name
        if not file_path.is_file():
            raise UnfinishedModelError(f"{model_dir}: {name} is listed in the manifest but missing")
        size = file_path.stat().st_size
        if size != entry.get("bytes"):
            raise UnfinishedModelError(
                f"{model_dir}: {name} has {size} bytes, the manifest says {entry.get('bytes')} (truncated copy?)"
            )
        if verify_hashes and sha256_file(file_path) != entry.get("sha256"):
            raise UnfinishedModelError(f"{model_dir}: {name} does not match its sha256 in the manifest")
    if not (model_dir / SAVED_MODEL_DIR / "saved_model.pb").is_file():
        raise UnfinishedModelError(f"{model_dir}: {SAVED_MODEL_DIR}/saved_model.pb is missing")
    return manifest


def is_finished_model_dir(path: str | os.PathLike, verify_hashes: bool = False) -> bool:
    """True when `path` is a complete model directory (see `load_manifest`); never raises for a bad dir."""
    try:
        load_manifest(path, verify_hashes=verify_hashes)
    except (UnfinishedModelError, OSError):
        return False
    return True


def finished_model_dirs(root: str | os.PathLike) -> list[Path]:
    """The finished model directories directly under `root` (a `candidates train --out`), oldest first.

    Staging and unfinished directories are skipped. Order: the manifest's `created_at`, then name.
    """
    root = Path(root)
    found = []
    for child in sorted(root.iterdir()) if root.is_dir() else []:
        if child.is_dir() and not child.name.startswith(STAGING_PREFIX) and is_finished_model_dir(child):
            found.append((load_manifest(child).get("created_at", ""), child.name, child))
    return [path for _, _, path in sorted(found)]


def resolve_model_dir(path: str | os.PathLike) -> Path:
    """`path` itself when it is a finished model directory, else the newest finished one under it.

    Raises:
      FileNotFoundError: `path` does not exist.
      UnfinishedModelError: neither `path` nor any directory under it is a finished model.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model directory {path} does not exist")
    if (path / MANIFEST_FILE).exists() or path.name.startswith(STAGING_PREFIX):
        load_manifest(path)  # raises with the precise reason
        return path
    candidates = finished_model_dirs(path)
    if not candidates:
        raise UnfinishedModelError(
            f"{path} is not a finished model directory and holds none (no {MANIFEST_FILE}; "
            "was `candidates train` interrupted?)"
        )
    LOG.info("%s holds %d model(s); using the newest, %s", path, len(candidates), candidates[-1].name)
    return candidates[-1]


# The trainer's names for the one atomic writer (homefeed/atomic.py).
write_json_atomic = atomic.write_json
write_text_atomic = atomic.write_text
