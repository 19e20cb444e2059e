"""`candidates build-index`: the FAISS index of a model directory, checked and written atomically.

Steps: read the finished model's manifest and article vectors (hash checked against the manifest)
-> choose the index type by corpus size -> build -> measure recall@k of the approximate index
against exact search on a sample of real user vectors (the model's `UserEncoder` over user
histories), raising efSearch/nprobe until the floor is met -> refuse below the floor -> write
`articles.faiss` + `index_manifest.json` into a hidden temporary directory next to the target and
rename it into place, so a half-written index never exists under the target name.

`index_manifest.json` records the model version, the article vectors' sha256 and the index file's
own `index_sha256` (checked before every load, serving/versions/integrity.py); the service
(`serving/versions/pair.py`) refuses an index whose record does not match the model it is paired with.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from homefeed import atomic, features
from homefeed import config as configs
from homefeed.config import IndexConfig
from homefeed.layout import extract_dir as extract_layout
from serving.index import faiss_index
from serving.store import read_histories
from serving.versions import files as model_files
from serving.versions import integrity

LOG = logging.getLogger(__name__)

ADD_CHUNK = 100_000  # vectors added per call, so long builds log progress


class RecallBelowFloorError(ValueError):
    """The approximate index misses too many exact neighbours; nothing was written."""


def recall_key(k: int) -> str:
    return f"recall@{k}"


def load_article_vectors(model_dir: Path, manifest: dict[str, Any]) -> tuple[np.ndarray, str]:
    """`(vectors float32 [n, d], sha256)`, checked against `article_ids.txt` and the manifest."""
    path = model_dir / model_files.ARTICLE_VECTORS_FILE
    if not path.exists():
        raise model_files.ModelDirError(f"{path} is missing: the model directory has no article vectors")
    digest = model_files.sha256_file(path)
    recorded = manifest.get(model_files.VECTORS_HASH_KEY)
    if recorded and recorded != digest:
        raise model_files.ModelDirError(
            f"{path} has sha256 {digest[:12]}..., but {model_files.MANIFEST_FILE} records {str(recorded)[:12]}...: "
            "the vectors were changed after training; re-export the model"
        )
    vectors = np.load(path, mmap_mode="r")
    if vectors.ndim != 2:
        raise model_files.ModelDirError(f"{path} must be a [n, d] array, got shape {vectors.shape}")
    n_ids = len(model_files.read_article_ids(model_dir))
    if n_ids != vectors.shape[0]:
        raise model_files.ModelDirError(
            f"{model_dir}: {vectors.shape[0]} article vectors but {n_ids} lines in {model_files.ARTICLE_IDS_FILE}"
        )
    return np.ascontiguousarray(vectors, dtype=np.float32), digest


def sample_user_vectors(model_dir: Path, histories: Path | None, sample_size: int, seed: int) -> np.ndarray | None:
    """User vectors of up to `sample_size` users with a history, `float32 [m, d]`; None if no histories.

    Histories come from `histories` when given, else from `MODEL_DIR/user_histories.parquet`.
    """
    path = histories if histories is not None else model_dir / model_files.HISTORIES_FILE
    if histories is None and not path.exists():
        return None
    # Reservoir sampling: one pass, memory bounded by sample_size however many users there are.
    rng = np.random.default_rng(seed)
    rows: list[dict[str, list[str]]] = []
    seen = 0
    for _, row in read_histories(path):
        if not row[features.HISTORY]:
            continue
        seen += 1
        if len(rows) < sample_size:
            rows.append(row)
        else:
            slot = int(rng.integers(0, seen))
            if slot < sample_size:
                rows[slot] = row
    if not rows:
        LOG.warning("%s has no user with a history", path)
        return None
    from trainer.towers.serving_model import UserEncoder

    LOG.info("encoding %d user histories from %s for the recall check", len(rows), path)
    vectors = UserEncoder(model_dir).encode_batched(rows)
    finite = np.isfinite(vectors).all(axis=1) & (np.abs(vectors).sum(axis=1) > 0)
    return vectors[finite]


def _add_with_progress(index, vectors: np.ndarray) -> None:
    """`add_with_ids` in chunks, logging progress (an HNSW build of 10^6 vectors takes minutes)."""
    n = vectors.shape[0]
    for start in range(0, n, ADD_CHUNK):
        stop = min(start + ADD_CHUNK, n)
        index.add_with_ids(vectors[start:stop], np.arange(start, stop, dtype=np.int64))
        if n > ADD_CHUNK:
            LOG.info("indexed %d/%d vectors", stop, n)


def build_index_for_vectors(vectors: np.ndarray, index_type: str, config: IndexConfig):
    """`serving.index.faiss_index.build_index`, adding in chunks with progress; returns the filled index."""
    index = faiss_index.empty_index(vectors, index_type, config, seed=config.seed)
    _add_with_progress(index, vectors)
    faiss_index.set_search_params(
        index, faiss_index.SearchParams(ef_search=config.hnsw_ef_search, nprobe=config.ivf_nprobe)
    )
    return index


def write_index_dir(index, manifest: dict[str, Any], output_dir: Path) -> None:
    """Writes `articles.faiss` then `index_manifest.json` to a staging sibling, then renames it (homefeed.atomic).

    An existing `output_dir` is moved aside and removed only after the new one is in place.
    """
    import faiss

    with atomic.staged_dir(output_dir, replace=True) as staging:
        index_path = staging / model_files.INDEX_FILE
        faiss.write_index(index, str(index_path))
        # The service verifies the index file against these before serving it (serving/versions/integrity.py).
        manifest = {
            **manifest,
            integrity.INDEX_BYTES_KEY: index_path.stat().st_size,
            integrity.INDEX_HASH_KEY: model_files.sha256_file(index_path),
        }
        (staging / model_files.INDEX_MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def build_model_index(
    model_dir: str | os.PathLike,
    config: IndexConfig | None = None,
    histories: str | os.PathLike | None = None,
    output_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Builds, checks and writes the index of a finished model directory; returns its manifest.

    Args:
      model_dir: a finished model directory (manifest.json, article_vectors.npy, article_ids.txt,
        saved_model/).
      config: index type, HNSW/IVF parameters, recall floor and sample size.
      histories: user histories for the recall queries (the extract's `user_histories.parquet`);
        default: `MODEL_DIR/user_histories.parquet` if present, else article vectors as queries
        (logged: that overstates recall, since every query is itself in the index).
      output_dir: where the index directory goes; default `MODEL_DIR/index`.

    Returns:
      The index manifest as written (`model_version`, `article_vectors_sha256`, `index_type`,
      `recall@<k>`, `search_params`, `build_seconds`, ...).

    Raises:
      ModelDirError: the model directory is unfinished or inconsistent.
      FileNotFoundError: `histories` was given but does not exist.
      RecallBelowFloorError: the approximate index stays under `config.recall_floor`.
    """
    import faiss

    config = config or IndexConfig()
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"model directory {model_dir} does not exist")
    if histories is not None and not Path(histories).is_file():
        raise FileNotFoundError(
            f"--histories {histories} not found (the extract's {extract_layout.USER_HISTORIES_FILE})"
        )
    if not 0.0 <= config.recall_floor <= 1.0:
        raise ValueError(f"recall floor must be in [0, 1], got {config.recall_floor}")
    output_dir = Path(output_dir) if output_dir is not None else model_dir / model_files.INDEX_DIR
    manifest = model_files.read_model_manifest(model_dir)
    vectors, digest = load_article_vectors(model_dir, manifest)
    n, d = vectors.shape
    index_type = faiss_index.choose_index_type(n, config)
    k = config.k

    LOG.info(
        "building the %s index over %d article vectors (d=%d) for model %s", index_type, n, d, manifest["model_version"]
    )
    started = time.perf_counter()
    index = build_index_for_vectors(vectors, index_type, config)
    build_seconds = time.perf_counter() - started
    LOG.info("built in %.1fs", build_seconds)

    started = time.perf_counter()
    queries = None
    if index_type == "flat":
        # Exact search is its own ground truth.
        recall, source, n_queries, trials = 1.0, "exact index", 0, []
        params = faiss_index.SearchParams()
    else:
        queries = sample_user_vectors(
            model_dir, Path(histories) if histories else None, config.recall_sample_size, config.seed
        )
        source = "user_histories"
        if queries is None or len(queries) == 0:
            LOG.warning(
                "no user histories in %s (pass --histories EXTRACT_DIR/user_histories.parquet): measuring "
                "recall with article vectors as queries, which overstates it",
                model_dir,
            )
            rng = np.random.default_rng(config.seed)
            queries = vectors[rng.choice(n, size=min(config.recall_sample_size, n), replace=False)]
            source = "article_vectors"
        LOG.info("exact top-%d for %d %s queries", k, len(queries), source)
        exact = faiss_index.exact_search(vectors, queries, k)
        tuned = faiss_index.tune_search(index, queries, exact, k, config.recall_floor, config)
        recall, n_queries, trials, params = tuned.recall, len(queries), tuned.trials, tuned.params
    recall_seconds = time.perf_counter() - started
    if queries is None:
        rng = np.random.default_rng(config.seed)
        queries = vectors[rng.choice(n, size=min(200, n), replace=False)]
    search_ms = faiss_index.single_query_ms(index, queries, k)
    if recall < config.recall_floor:
        raise RecallBelowFloorError(
            f"{index_type} index recall@{k} vs exact is {recall:.4f}, below the floor {config.recall_floor:.4f} "
            f"(tried {trials}); nothing was written. Raise --max-ef-search/--max-nprobe, build with more "
            "HNSW links (--hnsw-m) or IVF lists/probes, or use --index-type flat"
        )
    index_manifest = {
        "model_version": manifest["model_version"],
        model_files.VECTORS_HASH_KEY: digest,
        "index_type": index_type,
        "index_file": model_files.INDEX_FILE,
        "metric": "inner_product",
        "n_articles": n,
        "d": d,
        "k": k,
        recall_key(k): round(float(recall), 5),
        "recall_floor": config.recall_floor,
        "recall_queries": n_queries,
        "recall_query_source": source,
        "search_params": params.to_dict(),
        "search_ms_p50": round(search_ms, 4),  # one query, one thread, k results
        "tuning": trials,
        "build_seconds": round(build_seconds, 3),
        "recall_seconds": round(recall_seconds, 3),
        "faiss_version": faiss.__version__,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": configs.to_dict(config),
    }
    write_index_dir(index, index_manifest, output_dir)
    LOG.info(
        "wrote %s: %s, recall@%d %.4f (%s), search %s, %.2f ms per query",
        output_dir,
        index_type,
        k,
        recall,
        source,
        params.to_dict() or "exact",
        search_ms,
    )
    return index_manifest
