"""Filtered top-k over one FAISS index: only rows whose region is allowed, minus excluded rows.

Exact semantics: the answer is the top k of the filtered set, not the filtered top k of the whole
set; fewer than k come back only when the filtered set is smaller. The strategy is picked by
selectivity, as Milvus and Lucene do:

* selective filters (allowed share <= `exact_share`, or any filter on an exact index): exact
  inner products over the allowed rows. Rows are kept sorted by region
  (`RegionIndex.sorted_vectors`), so one region is one contiguous block and the scan is a
  matrix-vector product without a gather;
* broad filters: the HNSW/IVF search itself, restricted by `faiss.IDSelectorBitmap` through
  `SearchParameters(sel=...)`. The allowed top k reach deeper into the unfiltered ranking, so
  efSearch / nprobe grow by 1/sqrt(share) (measured at 10^5-10^6 HNSW: the unchanged efSearch
  loses 3-6 points of recall@200 at 30-50 %, 1/sqrt(share) recovers them at about 1.5x the
  cost, 1/share costs 2-3x; HNSW with a tight filter loses recall: FAISS #3186, #4727).

Numpy in, numpy out: `(scores float32 [m], rows int64 [m])`, best first, m <= k.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from serving.index import faiss_index

LOG = logging.getLogger(__name__)

EXACT_SHARE = 0.25  # filters allowing at most this share of the corpus are searched exactly
MAX_WIDENING = 16  # efSearch / nprobe grow at most this much for a filter
EXACT = "exact"
SELECTOR = "selector"
BITMAP_CACHE = 64


def top_k(scores: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The `k` best of parallel `scores`/`rows` (-inf scores dropped), best first, ties by row."""
    keep = np.isfinite(scores)
    scores, rows = scores[keep], rows[keep]
    if scores.shape[0] > k:
        part = np.argpartition(-scores, k - 1)[:k]
        scores, rows = scores[part], rows[part]
    order = np.lexsort((rows, -scores))
    return scores[order].astype(np.float32), rows[order].astype(np.int64)


def region_arrays(vectors: np.ndarray, region_codes: np.ndarray) -> dict[str, np.ndarray]:
    """What `RegionIndex` searches: rows grouped by region code (`order`, `int64 [n]`), where each
    region's block starts (`starts`, `int64 [n_regions + 1]`), the vectors in that order
    (`sorted_vectors`, `float32 [n, d]`) and each row's place in it (`position`, `int64 [n]`)."""
    codes = np.ascontiguousarray(region_codes, dtype=np.int32)
    n = codes.shape[0]
    n_regions = int(codes.max()) + 1 if n else 0
    order = np.argsort(codes, kind="stable").astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(np.bincount(codes, minlength=n_regions))]).astype(np.int64)
    sorted_vectors = np.empty((n, vectors.shape[1]), dtype=np.float32)
    for start in range(0, n, 65536):  # in blocks: a memory-mapped `vectors` is never copied whole
        sorted_vectors[start : start + 65536] = vectors[order[start : start + 65536]]
    position = np.empty(n, dtype=np.int64)
    position[order] = np.arange(n, dtype=np.int64)
    return {"order": order, "starts": starts, "sorted_vectors": sorted_vectors, "position": position}


class RegionIndex:
    """The rows of one index grouped by region code, for `search`.

    Args:
      index: the served FAISS index (`IndexIDMap`, ids = rows).
      vectors: its article vectors, `float32 [n, d]`, row i = id i.
      region_codes: `int [n]`, code of each row's region (0 .. n_regions-1).
      exact_share: filters up to this share of rows are searched exactly.
      arrays: `region_arrays(vectors, region_codes)` made already (e.g. in the gunicorn master,
        loaded before gunicorn forks its workers, so they share them); None: made here.
    """

    def __init__(
        self,
        index,
        vectors: np.ndarray,
        region_codes: np.ndarray,
        exact_share: float = EXACT_SHARE,
        arrays: dict[str, np.ndarray] | None = None,
    ):
        codes = np.ascontiguousarray(region_codes, dtype=np.int32)
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.shape[0] != codes.shape[0] or vectors.shape[0] != index.ntotal:
            raise ValueError(
                f"{vectors.shape[0]} vectors, {codes.shape[0]} region codes and {index.ntotal} indexed rows must agree"
            )
        self.index = index
        self.n = codes.shape[0]
        self.codes = codes
        self.exact_share = exact_share
        self.index_type = faiss_index.index_type_of(index)
        arrays = arrays if arrays is not None else region_arrays(vectors, codes)
        self.order, self.starts = arrays["order"], arrays["starts"]
        self.sorted_vectors, self.position = arrays["sorted_vectors"], arrays["position"]
        self._bitmaps: OrderedDict[tuple[int, ...], np.ndarray] = OrderedDict()

    def count(self, codes: Sequence[int]) -> int:
        return int(sum(self.starts[c + 1] - self.starts[c] for c in codes if 0 <= c < len(self.starts) - 1))

    def strategy(self, codes: Sequence[int]) -> str:
        if self.index_type == "flat" or self.count(codes) <= self.exact_share * self.n:
            return EXACT
        return SELECTOR

    def search(
        self, query: np.ndarray, k: int, codes: Sequence[int], exclude_rows: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, str]:
        """Top-`k` rows among `codes`' regions, `exclude_rows` left out: `(scores, rows, strategy)`."""
        codes = sorted({int(c) for c in codes if 0 <= int(c) < len(self.starts) - 1})
        exclude = np.asarray(exclude_rows if exclude_rows is not None else (), dtype=np.int64)
        query = np.ascontiguousarray(query, dtype=np.float32).reshape(-1)
        if not codes or k < 1:
            return np.zeros(0, np.float32), np.zeros(0, np.int64), EXACT
        strategy = self.strategy(codes)
        if strategy == EXACT:
            scores, rows = self._exact(query, k, codes, exclude)
        else:
            scores, rows = self._selector(query, k, codes, exclude)
        return scores, rows, strategy

    def _exact(self, query, k, codes, exclude) -> tuple[np.ndarray, np.ndarray]:
        blocks, rows = [], []
        positions = np.sort(self.position[exclude]) if exclude.size else exclude
        for code in codes:
            start, end = int(self.starts[code]), int(self.starts[code + 1])
            if end == start:
                continue
            scores = self.sorted_vectors[start:end] @ query
            if positions.size:
                lo, hi = np.searchsorted(positions, [start, end])
                scores[positions[lo:hi] - start] = -np.inf
            blocks.append(scores)
            rows.append(self.order[start:end])
        if not blocks:
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        return top_k(np.concatenate(blocks), np.concatenate(rows), k)

    def allowed_bitmap(self, codes: Sequence[int]) -> np.ndarray:
        """Packed little-endian bitmap (`IDSelectorBitmap` layout) of the rows in `codes`, cached."""
        key = tuple(codes)
        bitmap = self._bitmaps.get(key)
        if bitmap is None:
            bitmap = np.packbits(np.isin(self.codes, np.asarray(codes, dtype=np.int32)), bitorder="little")
            self._bitmaps[key] = bitmap
            if len(self._bitmaps) > BITMAP_CACHE:
                self._bitmaps.popitem(last=False)
        else:
            self._bitmaps.move_to_end(key)
        return bitmap

    def _selector(self, query, k, codes, exclude) -> tuple[np.ndarray, np.ndarray]:
        import faiss

        bitmap = self.allowed_bitmap(codes)
        if exclude.size:
            bitmap = bitmap.copy()
            np.bitwise_and.at(bitmap, exclude >> 3, (0xFF ^ (1 << (exclude & 7))).astype(np.uint8))
        selector = faiss.IDSelectorBitmap(self.n, faiss.swig_ptr(bitmap))
        share = max(self.count(codes) / max(self.n, 1), 1e-6)
        widening = min(1 / np.sqrt(share), MAX_WIDENING)
        base = faiss_index.base_index(self.index)
        # faiss's stubs lack SearchParametersHNSW and the keyword constructors of its class wrappers
        if isinstance(base, faiss.IndexHNSW):
            params = faiss.SearchParametersHNSW(  # type: ignore[attr-defined]
                sel=selector, efSearch=int(max(base.hnsw.efSearch, k) * widening)
            )
        elif isinstance(base, faiss.IndexIVF):
            params = faiss.SearchParametersIVF(  # type: ignore[call-arg]
                sel=selector, nprobe=int(min(base.nlist, np.ceil(base.nprobe * widening)))
            )
        else:
            params = faiss.SearchParameters(sel=selector)  # type: ignore[call-arg]
        k_search = max(1, min(int(k), self.n))
        scores, rows = self.index.search(query.reshape(1, -1), k_search, params=params)
        del bitmap  # the selector read it during the search; it must live until here
        return faiss_index.valid_hits(scores[0], rows[0])


def exact_filtered_reference(
    vectors: np.ndarray, region_codes: np.ndarray, query: np.ndarray, k: int, codes: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Brute force over every allowed row: the ground truth the benchmark and tests compare with."""
    allowed = np.flatnonzero(np.isin(region_codes, np.asarray(list(codes))))
    scores = np.asarray(vectors, dtype=np.float32)[allowed] @ np.asarray(query, dtype=np.float32).reshape(-1)
    return top_k(scores, allowed.astype(np.int64), k)
