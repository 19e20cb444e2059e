"""FAISS inner-product indexes over article vectors: build, search, tune, measure recall.

Numpy in, numpy out; nothing here knows about model directories (see `components/build_index/build.py`).
Every index is an `IndexIDMap` around an exact (`IndexFlatIP`), HNSW (`IndexHNSWFlat`) or IVF
(`IndexIVFFlat`) index, with int64 ids = row numbers into `article_ids.txt`, so a search answers
row ids directly and the index could hold a subset of the rows. FAISS pads missing results
(fewer than k reachable vectors) with id -1: `search` callers must drop them (see `valid_hits`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from homefeed.config import IndexConfig

LOG = logging.getLogger(__name__)

INDEX_TYPES = ("flat", "hnsw", "ivf")
# FAISS gives an IVF quantizer a warning below this many training points per list.
MIN_POINTS_PER_LIST = 39
# k-means on more than this many points per list improves the lists little and costs minutes.
TRAIN_POINTS_PER_LIST = 64


@dataclass(frozen=True)
class SearchParams:
    """Search-time knobs of an approximate index (ignored by the exact one).

    HNSW uses `ef_search` (candidate list size; FAISS uses at least k); IVF uses `nprobe`.
    """

    ef_search: int | None = None
    nprobe: int | None = None

    def to_dict(self) -> dict[str, int]:
        return {k: v for k, v in (("ef_search", self.ef_search), ("nprobe", self.nprobe)) if v is not None}


@dataclass
class TuningResult:
    """How `tune_search` settled: the parameters, their recall, and every step it tried."""

    params: SearchParams
    recall: float
    trials: list[dict[str, Any]] = field(default_factory=list)


def choose_index_type(n: int, config: IndexConfig) -> str:
    """The index type for a corpus of `n` vectors: `config.index_type`, or by size when "auto"."""
    if config.index_type == "auto":
        return "flat" if n < config.exact_below else "ivf"
    if config.index_type not in INDEX_TYPES:
        raise ValueError(f"unknown index type {config.index_type!r}; choose auto, {', '.join(INDEX_TYPES)}")
    return config.index_type


def default_nlist(n: int) -> int:
    """About 4*sqrt(n) lists, but never so many that a list gets fewer than 39 training points."""
    return max(1, min(int(4 * math.sqrt(n)), n // MIN_POINTS_PER_LIST))


def _as_vectors(vectors: np.ndarray) -> np.ndarray:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] == 0 or vectors.shape[1] == 0:
        raise ValueError(f"article vectors must be a non-empty float32 [n, d] array, got shape {vectors.shape}")
    if not np.isfinite(vectors).all():
        bad = int((~np.isfinite(vectors)).any(axis=1).sum())
        raise ValueError(f"{bad} article vector(s) contain NaN or infinity; the model export is broken")
    return vectors


def empty_index(vectors: np.ndarray, index_type: str, config: IndexConfig, seed: int = 0):
    """An empty `IndexIDMap` of `index_type` for `vectors` (`float32 [n, d]`), trained if IVF.

    IVF trains its k-means quantizer on (a sample of at most 64 per list of) `vectors`, seeded
    by `seed` so a build is repeatable; flat and HNSW need no training.
    """
    import faiss

    vectors = _as_vectors(vectors)
    n, d = vectors.shape
    base: faiss.Index
    if index_type == "flat":
        base = faiss.IndexFlatIP(d)
    elif index_type == "hnsw":
        hnsw = faiss.IndexHNSWFlat(d, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = config.hnsw_ef_construction
        base = hnsw
    elif index_type == "ivf":
        nlist = config.ivf_nlist or default_nlist(n)
        if nlist > n:
            raise ValueError(f"ivf_nlist={nlist} is more than the {n} article vectors; use fewer lists or a flat index")
        ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        ivf.cp.seed = seed
        base = ivf
        sample = vectors
        if n > TRAIN_POINTS_PER_LIST * nlist:
            picked = np.random.default_rng(seed).choice(n, TRAIN_POINTS_PER_LIST * nlist, replace=False)
            sample = vectors[np.sort(picked)]
        base.train(sample)
    else:
        raise ValueError(f"unknown index type {index_type!r}; choose one of {', '.join(INDEX_TYPES)}")
    index = faiss.IndexIDMap(base)  # keeps a reference to `base` (faiss add_ref_in_constructor)
    return index


def build_index(vectors: np.ndarray, index_type: str, config: IndexConfig, seed: int = 0):
    """A FAISS inner-product index holding `vectors` (`float32 [n, d]`) under ids `0 .. n-1`.

    Args:
      vectors: the article vectors, row i = line i of `article_ids.txt`.
      index_type: "flat", "hnsw" or "ivf" (see `choose_index_type`).
      config: HNSW M / efConstruction / efSearch, IVF nlist / nprobe.
      seed: seeds the IVF k-means, so a build is repeatable.

    Returns:
      A `faiss.IndexIDMap`, search parameters set from `config`.
    """
    vectors = _as_vectors(vectors)
    index = empty_index(vectors, index_type, config, seed)
    index.add_with_ids(vectors, np.arange(vectors.shape[0], dtype=np.int64))
    set_search_params(index, SearchParams(ef_search=config.hnsw_ef_search, nprobe=config.ivf_nprobe))
    return index


def read_index(path, mmap: bool = True):
    """An index written by `write_index_dir`, its vectors memory-mapped from the file by default.

    With `mmap` the vectors (IVF lists, flat codes) and ids stay in the page cache, shared by every
    process that maps the same file (`candidates serve --workers N` holds one copy, not N), and
    loading costs no copy. The file must not be changed in place while mapped: index directories
    are only ever replaced by rename (`components/build_index/build.py`), which leaves a mapped file intact.
    An index type FAISS cannot map is read into memory instead.
    """
    import faiss

    if mmap:
        try:
            return faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY)
        except RuntimeError as error:  # pragma: no cover - depends on the index type and FAISS build
            LOG.info("cannot memory-map %s (%s); reading it into memory", path, error)
    return faiss.read_index(str(path))


def base_index(index):
    """The exact/HNSW/IVF index inside an `IndexIDMap` (or `index` itself)."""
    import faiss

    inner = getattr(index, "index", None)
    return faiss.downcast_index(inner) if inner is not None else faiss.downcast_index(index)


def index_type_of(index) -> str:
    """ "flat", "hnsw" or "ivf" for an index made by `build_index` (or read back from disk)."""
    import faiss

    base = base_index(index)
    if isinstance(base, faiss.IndexHNSW):
        return "hnsw"
    if isinstance(base, faiss.IndexIVF):
        return "ivf"
    if isinstance(base, faiss.IndexFlat):
        return "flat"
    raise ValueError(f"unsupported FAISS index {type(base).__name__}")


def set_search_params(index, params: SearchParams) -> None:
    """Applies `params` to the approximate index inside `index` (no-op for exact search)."""
    import faiss

    base = base_index(index)
    if isinstance(base, faiss.IndexHNSW) and params.ef_search is not None:
        base.hnsw.efSearch = int(params.ef_search)
    elif isinstance(base, faiss.IndexIVF) and params.nprobe is not None:
        base.nprobe = int(min(params.nprobe, base.nlist))


def search_params_of(index) -> SearchParams:
    import faiss

    base = base_index(index)
    if isinstance(base, faiss.IndexHNSW):
        return SearchParams(ef_search=int(base.hnsw.efSearch))
    if isinstance(base, faiss.IndexIVF):
        return SearchParams(nprobe=int(base.nprobe))
    return SearchParams()


def search(index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-`k` by inner product: `(scores float32 [nq, k], rows int64 [nq, k])`, best first.

    `k` is capped at the index size; rows of -1 (with score -inf or garbage) mark padding.
    """
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if queries.ndim != 2 or queries.shape[1] != index.d:
        raise ValueError(f"queries must be float32 [nq, {index.d}], got shape {queries.shape}")
    k = max(1, min(int(k), int(index.ntotal)))
    return index.search(queries, k)


def valid_hits(scores: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One query's results without FAISS's -1 padding: `(scores [m], rows [m])`, m <= k."""
    keep = rows >= 0
    return scores[keep], rows[keep]


def exact_search(vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Ground truth: brute-force inner-product top-`k` of `queries` over `vectors` (FAISS flat)."""
    import faiss

    vectors = _as_vectors(vectors)
    flat = faiss.IndexFlatIP(vectors.shape[1])
    flat.add(vectors)
    return flat.search(np.ascontiguousarray(queries, dtype=np.float32), max(1, min(k, vectors.shape[0])))


def recall_at_k(
    approx_rows: np.ndarray,
    exact_rows: np.ndarray,
    k: int,
    approx_scores: np.ndarray | None = None,
    exact_scores: np.ndarray | None = None,
    tie_tolerance: float = 1e-5,
) -> float:
    """Mean share of each query's exact top-`k` that the approximate search found.

    Args:
      approx_rows, exact_rows: `int64 [nq, >=k]` result rows, best first; -1 entries (FAISS padding)
        never count as hits.
      k: the cut-off; a query whose exact list is shorter (tiny corpus) is scored against its length.
      approx_scores, exact_scores: when both are given, an approximate hit outside the exact list
        whose true score ties the exact k-th score (within `tie_tolerance`) also counts: with
        duplicate vectors (e.g. articles sharing one OOV embedding) any of them is a right answer.

    Returns:
      recall in [0, 1]; 1.0 for zero queries.
    """
    approx_rows = np.asarray(approx_rows)[:, :k]
    exact_rows = np.asarray(exact_rows)[:, :k]
    if approx_rows.shape[0] != exact_rows.shape[0]:
        raise ValueError(f"{approx_rows.shape[0]} approximate vs {exact_rows.shape[0]} exact result rows")
    if approx_rows.shape[0] == 0:
        return 1.0
    tie_aware = approx_scores is not None and exact_scores is not None
    total = 0.0
    for q in range(approx_rows.shape[0]):
        truth = exact_rows[q][exact_rows[q] >= 0]
        if truth.size == 0:
            total += 1.0
            continue
        found = approx_rows[q]
        valid = found >= 0
        hits = np.isin(found[valid], truth)
        count = int(hits.sum())
        if tie_aware:
            kth = float(np.asarray(exact_scores)[q, truth.size - 1])
            others = np.asarray(approx_scores)[q, : found.shape[0]][valid][~hits]
            count += int((others >= kth - tie_tolerance).sum())
        total += min(count, truth.size) / truth.size
    return total / approx_rows.shape[0]


def measure_recall(index, queries: np.ndarray, exact: tuple[np.ndarray, np.ndarray], k: int) -> float:
    """recall@k of `index` on `queries` against `exact = (scores, rows)` from `exact_search`."""
    scores, rows = search(index, queries, k)
    return recall_at_k(rows, exact[1], k, scores, exact[0])


def single_query_ms(index, queries: np.ndarray, k: int, repeats: int = 200) -> float:
    """Median milliseconds of one single-query search on one thread (how the service searches)."""
    import time

    import faiss

    queries = np.ascontiguousarray(queries[:repeats], dtype=np.float32)
    if len(queries) == 0:
        return float("nan")
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        timings = []
        for i in range(len(queries)):
            started = time.perf_counter()
            index.search(queries[i : i + 1], k)
            timings.append(time.perf_counter() - started)
    finally:
        faiss.omp_set_num_threads(threads)
    return float(np.median(timings) * 1000)


def tune_search(
    index,
    queries: np.ndarray,
    exact: tuple[np.ndarray, np.ndarray],
    k: int,
    floor: float,
    config: IndexConfig,
) -> TuningResult:
    """The smallest efSearch (HNSW) or nprobe (IVF) whose recall@k reaches `floor`, about.

    Search cost grows with the parameter, so: start at the configured value, double until the
    floor is met (up to `config.max_ef_search` / `config.max_nprobe`), then bisect between the last
    failing and the first passing value down to a 10% step. The index is left set to the returned
    parameters; with `config.tune_search` off only the configured value is measured. For an exact
    index the recall is measured once.
    """
    import faiss

    base = base_index(index)
    trials: list[dict[str, Any]] = []
    if isinstance(base, faiss.IndexHNSW):
        name, value, limit = "ef_search", max(config.hnsw_ef_search, k), max(config.max_ef_search, k)
    elif isinstance(base, faiss.IndexIVF):
        name, value, limit = "nprobe", min(config.ivf_nprobe, base.nlist), min(config.max_nprobe, base.nlist)
    else:
        recall = measure_recall(index, queries, exact, k)
        return TuningResult(SearchParams(), recall, [{"recall": recall}])

    def trial(value: int) -> float:
        set_search_params(index, SearchParams(**{name: value}))
        recall = measure_recall(index, queries, exact, k)
        trials.append({name: value, "recall": round(recall, 5)})
        LOG.info("recall@%d with %s=%d: %.4f", k, name, value, recall)
        return recall

    recall = trial(value)
    failing = None
    while recall < floor and value < limit and config.tune_search:
        failing, value = value, min(value * 2, limit)
        recall = trial(value)
    best, best_recall = value, recall
    if recall >= floor and failing is not None:
        low, high = failing, value  # recall(low) < floor <= recall(high)
        while high - low > max(1, high // 10):
            middle = (low + high) // 2
            middle_recall = trial(middle)
            if middle_recall >= floor:
                high, best, best_recall = middle, middle, middle_recall
            else:
                low = middle
    set_search_params(index, SearchParams(**{name: best}))
    return TuningResult(SearchParams(**{name: best}), best_recall, trials)
