"""One search over the served index plus the live corpus: new listings in, removed ones out.

The main index answers for the model's own rows (tombstoned and seen rows excluded, the region
filter applied inside the search, see serving/index/filtered.py); the new listings are few and
searched exactly; the two lists are merged by score. Exact semantics throughout: the top k of
what is allowed, never a post-filter that returns fewer than k.
"""

from __future__ import annotations

import numpy as np

from serving.index import faiss_index
from serving.index.filtered import top_k
from serving.live.model import region_index
from serving.live.overlay import LiveOverlay

# Beyond this many excluded rows an unfiltered search excludes them inside FAISS (a selector)
# rather than asking for k + excluded neighbours and dropping them.
OVERFETCH_LIMIT = 2000


def _search_excluding(pair, query: np.ndarray, k: int, exclude: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if exclude.size <= OVERFETCH_LIMIT:
        scores, rows = faiss_index.search(pair.index, query[None, :], k + exclude.size)
        scores, rows = faiss_index.valid_hits(scores[0], rows[0])
        if exclude.size:
            keep = ~np.isin(rows, exclude)
            scores, rows = scores[keep], rows[keep]
        return scores[:k], rows[:k]
    import faiss

    selector = faiss.IDSelectorNot(faiss.IDSelectorBatch(exclude.size, faiss.swig_ptr(exclude)))
    base = faiss_index.base_index(pair.index)
    # faiss's stubs lack SearchParametersHNSW and the keyword constructors of its class wrappers
    if isinstance(base, faiss.IndexHNSW):
        params = faiss.SearchParametersHNSW(sel=selector, efSearch=max(int(base.hnsw.efSearch), k))  # type: ignore[attr-defined]
    elif isinstance(base, faiss.IndexIVF):
        params = faiss.SearchParametersIVF(sel=selector, nprobe=int(base.nprobe))  # type: ignore[call-arg]
    else:
        params = faiss.SearchParameters(sel=selector)  # type: ignore[call-arg]
    k_search = max(1, min(k, int(pair.index.ntotal)))
    scores, rows = pair.index.search(query[None, :], k_search, params=params)
    return faiss_index.valid_hits(scores[0], rows[0])


def search_live(
    overlay: LiveOverlay, query: np.ndarray, k: int, seen: set[str], regions: set[str] | None = None
) -> tuple[list[int], list[float]]:
    """Top-`k` rows (model rows, then `n + j` for new listing j) and scores, best first.

    Args:
      overlay: the live corpus as the served model sees it.
      query: the user vector, `float32 [d]`.
      seen: article ids to leave out (the user's history).
      regions: allowed regions, or None for all.
    """
    pair, corpus = overlay.pair, overlay.corpus
    query = np.ascontiguousarray(query, dtype=np.float32).reshape(-1)
    seen_rows = corpus.row_of.rows(seen)  # one vectorised lookup (-1: not a model row)
    seen_rows = seen_rows[seen_rows >= 0]
    exclude = np.union1d(overlay.dead_rows, seen_rows) if seen_rows.size else overlay.dead_rows
    if regions is None:
        main_scores, main_rows = _search_excluding(pair, query, k, exclude)
    else:
        codes = [corpus.region_code[r] for r in regions if r in corpus.region_code]
        main_scores, main_rows, _ = region_index(pair).search(query, k, codes, exclude)
    if not overlay.n_side:
        return main_rows.tolist(), main_scores.tolist()
    side_scores = overlay.side_vectors @ query
    side_rows = np.flatnonzero(overlay.side_allowed(regions, seen)).astype(np.int64)
    scores, rows = top_k(
        np.concatenate([main_scores.astype(np.float32), side_scores[side_rows].astype(np.float32)]),
        np.concatenate([main_rows.astype(np.int64), side_rows + overlay.n_main]),
        k,
    )
    return rows.tolist(), scores.tolist()
