"""Per-request array work on the candidate path: the seen filter and the scores' rounding.

Both replace a Python loop over the ~200-300 neighbours of each request (profiled at c=16 as 13 %
and, with `round`, most of the 24 % of the GIL time spent building the response; docs/serving.md).

* `drop_seen` filters FAISS's neighbours against the user's seen article ids with numpy: each
  pair keeps `hash(article_id)` per row (8 bytes per article, built once, on first use); a
  neighbour is dropped when its hash is among the seen ids' hashes AND its id is really seen (the
  check on id strings runs only for the few hash matches, so a 64-bit collision drops nothing).
  Same result as `ids[row] in seen` per neighbour.
* `round6` is `[round(s, 6) for s in scores]` vectorised: exact for float32 scores (FAISS's), since
  a float32 times 10**6 is exact in float64, so numpy's rint-then-divide rounds the exact value
  half-to-even like `round` does; other floats (the fallback's view shares) take `round`.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable, Sequence

import numpy as np

_hashes: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # ModelPair -> int64 [n_articles]
_hashes_lock = threading.Lock()


def row_hashes(pair) -> np.ndarray:
    """`hash(article_id)` for every row of `pair` (computed once per pair, then cached)."""
    cached = _hashes.get(pair)
    if cached is None:
        with _hashes_lock:
            cached = _hashes.get(pair)
            if cached is None:
                ids = pair.article_ids
                cached = np.fromiter((hash(a) for a in ids), dtype=np.int64, count=len(ids))
                _hashes[pair] = cached
    return cached


def drop_seen(
    pair, rows: np.ndarray, scores: np.ndarray, seen_ids: Iterable[str], k: int
) -> tuple[list[int], list[float]]:
    """The first `k` of FAISS's neighbours (`rows`, `scores`: one query's, best first) that are
    real rows (FAISS pads with -1) and whose article id is not in `seen_ids` (any iterable of ids;
    a set avoids a copy)."""
    rows = np.asarray(rows)
    keep = rows >= 0
    if seen_ids and len(pair.article_ids):
        seen = seen_ids if isinstance(seen_ids, (set, frozenset)) else set(seen_ids)
        seen_hashes = np.fromiter((hash(a) for a in seen), dtype=np.int64, count=len(seen))
        hashes = row_hashes(pair)
        suspect = np.isin(hashes[np.where(keep, rows, 0)], seen_hashes) & keep
        if suspect.any():
            ids = pair.article_ids
            for position in np.flatnonzero(suspect).tolist():
                if ids[rows[position]] in seen:
                    keep[position] = False
    kept = np.flatnonzero(keep)[:k]
    return rows[kept].tolist(), np.asarray(scores)[kept].tolist()


def round6(scores: Sequence[float]) -> list[float]:
    """`[round(s, 6) for s in scores]`, the same floats, vectorised when every score is a float32."""
    values = np.asarray(scores, dtype=np.float64)
    with np.errstate(over="ignore"):  # a double beyond float32's range: not a float32, `round` it
        narrowed = values.astype(np.float32).astype(np.float64)
    if values.size and np.array_equal(narrowed, values, equal_nan=True):
        return np.round(values, 6).tolist()
    return [round(s, 6) for s in scores]
