"""One candidate request, without HTTP: history -> user vector -> FAISS top-k -> filter.

`recommend` is what the HTTP handler calls (and what tests call directly).
It never raises for a user it cannot personalise: an unknown user, an empty history (no views,
and no searches or a model that does not read them), an
unreachable history store or a failing model call all give the popular-article fallback, marked
`fallback=True` with the reason.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from homefeed import features
from serving.index import faiss_index
from serving.recommend import hot_path
from serving.store import HistoryStore, StoreUnavailableError, seen_set
from serving.versions.pair import ModelPair

LOG = logging.getLogger(__name__)

STORE_WARNING_INTERVAL_S = 10.0  # while the history store is down, one warning per this many seconds
_store_warning = [float("-inf"), 0]  # when the last one was logged, fallbacks since then


def _warn_store_unavailable(error: Exception) -> None:
    """Logs an unreachable history store at most every `STORE_WARNING_INTERVAL_S` (each request
    falls back and is counted in /metrics; a line per request would flood the log)."""
    now = time.monotonic()
    if now - _store_warning[0] < STORE_WARNING_INTERVAL_S:
        _store_warning[1] += 1
        return
    since = f" ({_store_warning[1]} more fallbacks since the last warning)" if _store_warning[1] else ""
    _store_warning[:] = [now, 0]
    LOG.warning("history store unavailable, serving the fallback%s: %s", since, error)


UNKNOWN_USER = "unknown_user"
EMPTY_HISTORY = "empty_history"
STORE_UNAVAILABLE = "history_store_unavailable"
MODEL_ERROR = "model_error"
POPULARITY_ARM = "popularity_arm"  # an experiment's control arm (serving/experiments): popular for everyone
FALLBACK_REASONS = (UNKNOWN_USER, EMPTY_HISTORY, STORE_UNAVAILABLE, MODEL_ERROR, POPULARITY_ARM)

# Stages timed per request (seconds), reported in metrics and the Server-Timing header.


@dataclass
class CandidateAnswer:
    """The answer for one user: parallel lists, best first.

    Attributes:
      rows: article rows (indices into `pair.article_ids`), at most k.
      scores: inner product user . article for model answers; for the fallback, the article's
        share of the popular list's views (so scores still order the list).
      fallback_reason: one of FALLBACK_REASONS when `fallback` is True.
      timings: seconds spent per stage (see STAGES).
    """

    user_id: str
    model_version: str
    fallback: bool
    rows: list[int]
    scores: list[float]
    fallback_reason: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    overlay: Any = None  # live_corpus.LiveOverlay: rows >= pair.n_articles are its new listings


def _popular(
    pair: ModelPair, user_id: str, k: int, seen: set[str], reason: str, timings, overlay=None, regions=None
) -> CandidateAnswer:
    """The popular articles, minus seen, removed (live tombstones) and, with `regions`, other regions."""
    started = time.perf_counter()
    total = sum(count for _, count in pair.popular) or 1.0
    ids = pair.article_ids
    region_of = overlay.corpus.attributes["region"] if overlay is not None and regions is not None else None
    rows, scores = [], []
    for row, count in pair.popular:
        if seen and ids[row] in seen:
            continue
        if overlay is not None and overlay.is_dead_row(row):
            continue
        if region_of is not None and region_of[row] not in regions:
            continue
        rows.append(row)
        scores.append(count / total)
        if len(rows) == k:
            break
    timings["filter"] = time.perf_counter() - started
    return CandidateAnswer(user_id, pair.version, True, rows, scores, reason, timings, overlay)


@dataclass
class PendingAnswer:
    """A request that has its history and needs its user vector (`prepare` -> encode -> `finish`)."""

    pair: ModelPair
    user_id: str
    k: int
    history: dict
    seen: set[str]
    overlay: Any
    regions: set[str] | None
    timings: dict[str, float]


def recommend(
    pair: ModelPair,
    store: HistoryStore | None,
    user_id: str,
    k: int,
    exclude_seen: bool = True,
    live=None,
    regions: set[str] | None = None,
) -> CandidateAnswer:
    """Up to `k` candidates for `user_id` from `pair`, already-viewed articles dropped by default.

    Args:
      pair: the model + index to answer with (the caller takes it once per request).
      store: where the user's history lives; None: the pair's own embedded snapshot (if any).
      k: how many candidates (>= 1; fewer come back when the corpus is smaller).
      exclude_seen: drop articles the user viewed (the store's seen set, features.SEEN).
      live: the service's `serving.live.state.LiveState`: live views join the history, new
        listings join the search, removed ones leave every answer (fallback included).
      regions: only articles in one of these regions (the top k of that set, not a post-filter).

    The service runs it in batches (serving/recommend/dispatch.py: one user-tower call per batch).
    """
    step = prepare(pair, store, user_id, k, exclude_seen, live, regions)
    if isinstance(step, CandidateAnswer):
        return step
    started = time.perf_counter()
    try:
        vector = pair.encoder.encode([step.history])
    except Exception:  # a bad history must not become a 500; the log keeps the traceback
        return encode_failed(step, time.perf_counter() - started)
    step.timings["encode"] = time.perf_counter() - started
    return finish(step, vector)


def prepare(
    pair: ModelPair,
    store: HistoryStore | None,
    user_id: str,
    k: int,
    exclude_seen: bool = True,
    live=None,
    regions: set[str] | None = None,
) -> CandidateAnswer | PendingAnswer:
    """`recommend` up to the user-tower call: the fallback answer, or what the call needs."""
    timings: dict[str, float] = {}
    started = time.perf_counter()
    if live is not None:
        overlay = live.overlay(pair)
    elif regions is not None:  # a filter without live state: an overlay with no live records
        from serving.live.overlay import OverlayBuilder

        overlay = OverlayBuilder(pair).snapshot()
    else:
        overlay = None
    if live is None:
        store = store if store is not None else pair.histories
    try:
        if live is not None:
            history = live.history(pair, store, user_id, overlay)
        else:
            history = store.get(user_id) if store is not None else None
    except StoreUnavailableError as error:
        _warn_store_unavailable(error)
        timings["store"] = time.perf_counter() - started
        return _popular(pair, user_id, k, set(), STORE_UNAVAILABLE, timings, overlay, regions)
    timings["store"] = time.perf_counter() - started
    if history is None:
        return _popular(pair, user_id, k, set(), UNKNOWN_USER, timings, overlay, regions)
    viewed = history.get(features.HISTORY) or []
    seen = seen_set(history) if exclude_seen else set()  # every earlier view (features.SEEN), not only the history
    # Searches alone personalise too, when the model reads them (trained with a searches table).
    searched = bool(history.get(features.RECENT_QUERIES)) and getattr(pair.encoder, "uses_searches", False)
    if not viewed and not searched:
        return _popular(pair, user_id, k, seen, EMPTY_HISTORY, timings, overlay, regions)
    return PendingAnswer(pair, user_id, k, history, seen, overlay, regions, timings)


def popular_for(
    pair: ModelPair,
    store: HistoryStore | None,
    user_id: str,
    k: int,
    exclude_seen: bool = True,
    live=None,
    regions: set[str] | None = None,
) -> CandidateAnswer:
    """The popular articles for `user_id` as `recommend` filters them (seen, removed, regions), without
    the model: an experiment's popularity arm. A known user's answer has reason POPULARITY_ARM."""
    step = prepare(pair, store, user_id, k, exclude_seen, live, regions)
    if isinstance(step, CandidateAnswer):
        return step
    return _popular(pair, user_id, k, step.seen, POPULARITY_ARM, step.timings, step.overlay, regions)


def exposed_ids(answer: CandidateAnswer, pair: ModelPair, n: int) -> list[str]:
    """The article ids of the answer's first `n` candidates, best first (live listings included)."""
    rows = answer.rows[:n]
    if answer.overlay is not None and answer.overlay.records:
        return [item["article_id"] for item in answer.overlay.candidate_items(rows, [0.0] * len(rows), False)]
    return [a for a in pair.article_ids.take(rows) if a is not None]


def encode_failed(step: PendingAnswer, seconds: float) -> CandidateAnswer:
    """The fallback for a request whose user-tower call raised (logged with its traceback)."""
    LOG.exception("model %s failed to encode the history of user %r", step.pair.version, step.user_id)
    step.timings["encode"] = seconds
    return _popular(step.pair, step.user_id, step.k, step.seen, MODEL_ERROR, step.timings, step.overlay, step.regions)


def finish(step: PendingAnswer, vector) -> CandidateAnswer:
    """`recommend` after the user-tower call: search (`vector`: `float32 [1, d]`) and filter."""
    pair, user_id, k, seen, overlay, regions, timings = (
        step.pair,
        step.user_id,
        step.k,
        step.seen,
        step.overlay,
        step.regions,
        step.timings,
    )
    if overlay is not None and (regions is not None or overlay.records):
        from serving.live.corpus_search import search_live

        started = time.perf_counter()
        live_rows, live_scores = search_live(overlay, vector[0], k, seen, regions)
        timings["search"] = time.perf_counter() - started
        return CandidateAnswer(user_id, pair.version, False, live_rows, live_scores, None, timings, overlay)

    started = time.perf_counter()
    # Ask for enough extra neighbours that dropping the seen ones still leaves k.
    scores, rows = faiss_index.search(pair.index, vector, k + len(seen))
    timings["search"] = time.perf_counter() - started

    started = time.perf_counter()
    kept_rows, kept_scores = hot_path.drop_seen(pair, rows[0], scores[0], seen, k)
    timings["filter"] = time.perf_counter() - started
    return CandidateAnswer(user_id, pair.version, False, kept_rows, kept_scores, None, timings, overlay)


def answer_json(
    answer: CandidateAnswer, pair: ModelPair, include_titles: bool = True, extra: dict[str, Any] | None = None
) -> bytes:
    """The response body: `{user_id, model_version, fallback, [fallback_reason], **extra, candidates}`.

    Each candidate is `{article_id, score[, title]}` (title only when the article table has one);
    `extra`: fields added before the candidates (an experiment's `arm`).
    """
    rounded = hot_path.round6(answer.scores)
    if answer.overlay is not None and answer.overlay.records:
        return _body(answer, answer.overlay.candidate_items(answer.rows, rounded, include_titles), extra)
    ids = pair.article_ids.take(answer.rows)  # one call for the answer's rows (serving/versions/article_table.py)
    titles = pair.titles.take(answer.rows) if include_titles and pair.titles is not None else None
    if titles is None:
        candidates = [{"article_id": a, "score": s} for a, s in zip(ids, rounded)]
    else:
        candidates = [
            {"article_id": a, "score": s, "title": t} if t is not None else {"article_id": a, "score": s}
            for a, s, t in zip(ids, rounded, titles)
        ]
    return _body(answer, candidates, extra)


def _body(answer: CandidateAnswer, candidates: list[dict], extra: dict[str, Any] | None = None) -> bytes:
    body = {"user_id": answer.user_id, "model_version": answer.model_version, "fallback": answer.fallback}
    if answer.fallback:
        body["fallback_reason"] = answer.fallback_reason
    if extra:
        body.update(extra)
    body["candidates"] = candidates
    return orjson.dumps(body)
