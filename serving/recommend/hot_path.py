"""Per-request array work on the candidate path: the seen filter and the scores' rounding.

Both run over the ~200-300 neighbours of each request (profiled at c=16 as 13 % and, with
`round`, most of the 24 % of the GIL time spent building the response; docs/serving.md).

* `drop_seen` filters FAISS's neighbours against the user's seen article ids (any iterable: the
  store's seen set plugs in here). Kept a plain loop on purpose: numpy variants (a mask from one
  comprehension; per-row id hashes with `searchsorted`; `np.isin`, 60 us alone) were no faster
  in a micro-benchmark at 10-50 seen ids (21-25 us against 23-25 us for k=200) and slower in the
  service at concurrency 1 (filter stage 0.18-0.30 ms against 0.12-0.16 ms: numpy's per-call
  overhead on cold caches after the model call), so the filter was never the cost.
* `round6` is `[round(s, 6) for s in scores]` vectorised (11 us instead of 54-93 us for 200):
  exact for float32 scores (FAISS's), since a float32 times 10**6 is exact in float64, so numpy's
  rint-then-divide rounds the exact value half-to-even like `round` does; other floats (the
  fallback's view shares) take `round`, which numpy would get wrong (2.5e-06 -> 2e-06).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np


def drop_seen(
    pair, rows: np.ndarray, scores: np.ndarray, seen_ids: Iterable[str], k: int
) -> tuple[list[int], list[float]]:
    """The first `k` of FAISS's neighbours (`rows`, `scores`: one query's, best first) that are
    real rows (FAISS pads with -1) and whose article id (`pair.article_ids[row]`) is not in
    `seen_ids` (any iterable of ids; a set is used as is, anything else is made one). The ids of
    the neighbours are read in one `take` (serving/versions/article_table.py), not one lookup per row."""
    seen = seen_ids if not seen_ids or isinstance(seen_ids, (set, frozenset, dict)) else set(seen_ids)
    rows, scores = np.asarray(rows).tolist(), np.asarray(scores).tolist()
    # Ids only when there is something to compare them with; all at once (one call, not one per row).
    ids = pair.article_ids.take([row for row in rows if row >= 0]) if seen else []
    kept_rows, kept_scores = [], []
    i = 0
    for score, row in zip(scores, rows):
        if row < 0:
            continue
        i += 1
        if seen and ids[i - 1] in seen:
            continue
        kept_rows.append(row)
        kept_scores.append(score)
        if len(kept_rows) == k:
            break
    return kept_rows, kept_scores


def round6(scores: Sequence[float]) -> list[float]:
    """`[round(s, 6) for s in scores]`, the same floats, vectorised when every score is a float32."""
    values = np.array(scores, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):  # beyond float32's range, NaN: `round` them
        if values.size and (values.astype(np.float32) == values).all():
            return (np.rint(values * 1e6) / 1e6).tolist()  # what np.round does, without its wrappers
    return [round(s, 6) for s in scores]
