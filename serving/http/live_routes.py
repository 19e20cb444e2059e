"""HTTP endpoints of the live feed (an APIRouter the app includes).

  POST   /v1/events                 live views (at most 1,000); per-item accepted / rejected
  PUT    /v1/articles/{article_id}  upsert a listing (sold / deleted removes it at once)
  DELETE /v1/articles/{article_id}  remove a listing at once
  GET    /v1/articles/{article_id}  the listing's live state, if any
  POST   /v1/articles               many upserts at once (`candidates sync-articles`), per item

Writes need `Authorization: Bearer <token>` when a write token is configured (serving/http/auth.py).
Handlers are thin: parsing is serving/live/events.py and serving/live/corpus.py, storage the
`LiveState` the lifespan opened (serving/live/state.py).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path, Request
from fastapi.responses import Response

from homefeed import features
from serving.http.live_schemas import ARTICLE_DOC, ARTICLES_DOC, EVENTS_DOC
from serving.live.articles import ACTIVE, ArticleError, ArticleRecord, parse_article, removal
from serving.live.events import (
    ARTICLE_ID_PATTERN,
    ARTICLE_ID_RULE,
    MAX_EVENTS_PER_REQUEST,
    parse_items,
    valid_article_id,
)
from serving.live.state import DEFAULT_SYNC_INTERVAL_S, open_live_state
from serving.metrics import LiveMetrics
from serving.store import StoreUnavailableError

LOG = logging.getLogger(__name__)

EVENTS_PATH = "/v1/events"
ARTICLES_PATH = "/v1/articles"
MAX_ARTICLES_PER_REQUEST = 1000
MAX_LIVE_LISTINGS = 200_000  # without settings (ServiceSettings.live_max_listings)
# Small writes to in-process stores run on the event loop (no thread hop; see `_store_async`).
INLINE_RECORDS = 4  # at most this many listings are embedded on the event loop (~0.2 ms each)
INLINE_EVENTS = 32  # at most this many views are merged into in-process histories on the event loop
# Bodies of the bulk endpoints may be larger than the service's general limit: 1,000 items of a
# few hundred bytes each. Larger ones are refused with 413 before they are read.
BULK_BODY_BYTES = 1024 * 1024
ArticleId = Annotated[
    str, Path(min_length=1, max_length=256, pattern=ARTICLE_ID_PATTERN, description="the listing's id")
]

router = APIRouter()


def _metrics(state) -> LiveMetrics | None:
    return getattr(state, "live_metrics", None)


def body_limit(path: str, default: int) -> int:
    """The request body limit for `path` (the bulk endpoints take up to `BULK_BODY_BYTES`)."""
    return max(default, BULK_BODY_BYTES) if path in (EVENTS_PATH, ARTICLES_PATH) else default


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def _error(status: int, message: str, details: list[dict[str, Any]] | None = None, **extra) -> Response:
    error: dict[str, Any] = {"status": status, "message": message}
    if details:
        error["details"] = details
    return _json({"error": error, **extra}, status)


def _state_pair(state):
    holder = getattr(state, "holder", None)
    return holder.pair if holder is not None else None


def _pair(request: Request):
    return _state_pair(request.app.state)


async def _items(request: Request, key: str, limit: int) -> list[Any] | Response:
    """The `key` list of a JSON body, or the error response saying what is wrong with the body."""
    raw = await request.body()
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        return _error(400, f"the body is not valid JSON: {error}")
    if not isinstance(body, dict) or not isinstance(body.get(key), list):
        got = type(body.get(key)).__name__ if isinstance(body, dict) else type(body).__name__
        return _error(
            422,
            f'the body must be {{"{key}": [...]}}',
            [{"where": f"body.{key}", "problem": "must be a list", "got": got}],
        )
    extra = sorted(set(body) - {key})
    if extra:
        return _error(
            422,
            f"unknown field(s) {extra} in the body",
            [{"where": "body", "problem": f"unknown field(s) {extra}", "got": extra}],
        )
    items = body[key]
    if len(items) > limit:
        return _error(
            413,
            f"{len(items)} {key} in one request; the limit is {limit}: split the batch",
            [{"where": f"body.{key}", "problem": f"at most {limit} items", "got": len(items)}],
        )
    return items


@router.post(EVENTS_PATH, summary="Post live events (views, searches)", openapi_extra=EVENTS_DOC)
async def post_events(request: Request) -> Response:
    """Appends views to the users' live histories; answers per item.

    Body: `{"events": [{"user_id", "article_id", "viewed_at": RFC 3339, "type"?: "view", "event_id"?}]}`;
    searches are `{"type": "search", "user_id", "query", "searched_at", "event_id"?}` items.
    Answer: `{"accepted", "applied", "duplicates", "rejected": [{"index", "reason"}]}`; 422 when no
    item is valid.
    """
    items = await _items(request, "events", MAX_EVENTS_PER_REQUEST)
    if isinstance(items, Response):
        return items
    pair = _pair(request)
    live = getattr(request.app.state, "live", None)
    if pair is None or live is None:
        return _error(503, "no model loaded yet")
    overlay = live.overlay(pair)
    views, rejected = parse_items(items, overlay.is_known)
    try:
        applied = await _add_views_async(request.app.state, live.views, views) if views else 0
    except StoreUnavailableError as error:
        LOG.error("events not stored: %s", error)
        return _error(503, f"the history store did not take the events; nothing was stored: {error}")
    live.corpus.clock.observe(views)  # an `events` listing age clock follows them (serving/live/clock.py)
    answer = {"accepted": len(views), "applied": applied, "duplicates": len(views) - applied, "rejected": rejected}
    metrics = _metrics(request.app.state)
    if metrics is not None:
        metrics.events.labels("applied").inc(applied)
        metrics.events.labels("duplicate").inc(len(views) - applied)
        metrics.events.labels("rejected").inc(len(rejected))
    if rejected and not views:
        return _error(422, f"none of the {len(items)} events is valid", rejected, **answer)
    if rejected:
        LOG.info("events: %d accepted, %d rejected (first: %s)", len(views), len(rejected), rejected[0]["reason"])
    return _json(answer)


def _room(state, live) -> int:
    """How many listings the live corpus may still add (settings' `live_max_listings`)."""
    settings = getattr(state, "settings", None)
    cap = getattr(settings, "live_max_listings", None) or MAX_LIVE_LISTINGS
    return cap - len(live.corpus.records)


def _new_listings(live, pair, records: list[ArticleRecord]) -> int:
    """How many of `records` would add a live record (a listing the live corpus does not hold yet,
    the served model's own listings included: a change of one is a new live record)."""
    del pair
    return sum(1 for r in records if live.corpus.get(r.article_id) is None)


def _full(state, body: bool = True):
    settings = getattr(state, "settings", None)
    cap = getattr(settings, "live_max_listings", None) or MAX_LIVE_LISTINGS
    message = f"the live corpus holds its maximum of {cap} listings (live_max_listings); changes of other listings wait for the next model"
    return _error(507, message) if body else message


def complete(record: ArticleRecord, given: set[str], live, pair) -> ArticleRecord:
    """`record` with the fields the body left out taken from the listing's current state."""
    from dataclasses import replace

    current = live.corpus.get(record.article_id)
    if current is not None:
        base = {f: getattr(current, f) for f in ("title", "category", "region", "created_at")}
    elif pair is not None:
        overlay = live.overlay(pair)
        corpus = overlay.corpus
        row = corpus.row_of.get(record.article_id)
        base = {"title": None, "category": None, "region": None, "created_at": None}
        if row is not None:
            base["title"] = pair.titles[row] if pair.titles is not None else None
            for attr in ("category", "region"):
                if attr in corpus.attributes and corpus.attributes[attr][row] != features.MISSING_ATTRIBUTE:
                    base[attr] = corpus.attributes[attr][row]
    else:
        base = {}
    return replace(record, **{f: v for f, v in base.items() if f not in given})


def _store(state, records: list[ArticleRecord], embedded: tuple | None = None) -> Response | None:
    """Stores `records` in the live corpus of the app whose `state` is given; the error response
    when that failed, else None. `embedded`: (pair, vectors) from `LiveCorpus.embed`, used when
    that pair is still the one served."""
    pair = _state_pair(state)
    live = getattr(state, "live", None)
    if pair is None or live is None:
        return _error(503, "no model loaded yet")
    vectors = embedded[1] if embedded is not None and embedded[0] is pair else None
    try:
        live.corpus.upsert(records, pair, vectors)
    except StoreUnavailableError as error:
        LOG.error("listing change not stored: %s", error)
        return _error(503, f"the live corpus store did not take the change; nothing was stored: {error}")
    except ValueError as error:  # the model cannot embed listings (no article tower)
        return _error(409, str(error))
    metrics = _metrics(state)
    if metrics is not None:
        for record in records:
            metrics.article_changes.labels(record.status).inc()
        metrics.records.set(len(live.corpus.records))
    return None


async def _store_async(state, records: list[ArticleRecord]) -> Response | None:
    """`_store` on the event loop when the live corpus says an upsert there is cheap and cannot
    block (`LiveCorpus.writes_inline`) and the change is small, else in a thread (a SavedModel
    call, a Redis round trip, a batch of many listings: the loop keeps answering meanwhile)."""
    await _reads_first(state)
    live, pair = getattr(state, "live", None), _state_pair(state)
    if len(records) <= INLINE_RECORDS and live is not None and pair is not None and live.corpus.writes_inline(pair):
        # Two steps, each in a pause between candidate batches (`BatchDispatcher.next_gap`): the
        # article tower now, the commit (log, overlay) and the answer at the next pause.
        try:
            embedded = (pair, live.corpus.embed(records, pair))
        except ValueError as error:  # the model cannot embed listings (no article tower)
            return _error(409, str(error))
        await _next_gap(state)
        if live.corpus.writes_inline(pair):
            return _store(state, records, embedded)
        return await asyncio.to_thread(_store, state, records, embedded)
    return await asyncio.to_thread(_store, state, records)


async def _reads_first(state) -> None:
    """Lets a running batch of candidate requests finish before a write (serving/recommend/dispatch.py,
    `BatchDispatcher.reads_first`); without the dispatcher (Redis histories) writes go at once."""
    dispatcher = getattr(state, "dispatcher", None)
    if dispatcher is not None:
        await dispatcher.reads_first()


async def _next_gap(state) -> None:
    """Waits for the next pause between candidate batches (serving/recommend/dispatch.py,
    `BatchDispatcher.next_gap`); without the dispatcher (Redis histories) writes go on at once."""
    dispatcher = getattr(state, "dispatcher", None)
    if dispatcher is not None:
        await dispatcher.next_gap()


async def _add_views_async(state, views_store, views: list) -> int:
    """`views_store.add(views)` on the event loop when the store is in this process and the batch
    small (a few dict updates: cheaper than a thread hop), else in a thread (a Redis round trip,
    many users' histories merged)."""
    if getattr(views_store, "in_process", False) and len(views) <= INLINE_EVENTS:
        await _reads_first(state)
        return views_store.add(views)
    return await asyncio.to_thread(views_store.add, views)


def _state(record: ArticleRecord, result: str) -> dict[str, Any]:
    return {
        "article_id": record.article_id,
        "result": result,
        "status": record.status,
        "visible": record.status == ACTIVE,
    }


@router.put(ARTICLES_PATH + "/{article_id}", summary="Upsert a listing", openapi_extra=ARTICLE_DOC)
async def put_article(request: Request, article_id: ArticleId) -> Response:
    """Creates or changes a listing. `status` sold/deleted removes it from every answer at once.

    Body (all optional): `{"title", "category", "region", "status": active|sold|deleted, "created_at"}`.
    A valid id is answered by serving/http/upsert_route.py before FastAPI routes it (the same
    `upsert_article`); this route documents the endpoint and answers ids that fail validation.
    """
    return await upsert_article(request.app.state, article_id, await request.body())


async def upsert_article(state, article_id: str, raw_body: bytes) -> Response:
    """The answer to `PUT /v1/articles/{article_id}` with `raw_body` (a valid id), for the app
    whose `state` is given."""
    await _reads_first(state)  # arrived during a candidate batch: the steps below go after it
    try:
        body = orjson.loads(raw_body or b"{}")
    except orjson.JSONDecodeError as error:
        return _error(400, f"the body is not valid JSON: {error}")
    try:
        record = parse_article(article_id, body)
    except ArticleError as error:
        return _error(422, str(error), error.details)
    live, pair = getattr(state, "live", None), _state_pair(state)
    existed = False
    if live is not None and _new_listings(live, pair, [record]) > _room(state, live):
        return _full(state)
    if live is not None:
        existed = live.corpus.get(article_id) is not None or (
            pair is not None and live.overlay(pair).is_known(article_id)
        )
        record = complete(record, set(body), live, pair)
    failure = await _store_async(state, [record])
    if failure is not None:
        return failure
    result = "removed" if record.status != ACTIVE else ("updated" if existed else "created")
    return _json(_state(record, result))


@router.delete(ARTICLES_PATH + "/{article_id}", summary="Remove a listing")
async def delete_article(request: Request, article_id: ArticleId) -> Response:
    """Removes the listing from every answer (fallback included) until a model without it is served."""
    live, pair = getattr(request.app.state, "live", None), _pair(request)
    if live is None or pair is None:
        return _error(503, "no model loaded yet")
    if not live.overlay(pair).is_known(article_id):
        return _error(404, f"article {article_id!r} is neither in the served corpus nor a live listing")
    record = complete(removal(article_id), {"status"}, live, pair)
    failure = await _store_async(request.app.state, [record])
    return failure or _json(_state(record, "removed"))


@router.get(ARTICLES_PATH + "/{article_id}", summary="A listing's live state")
async def get_article(request: Request, article_id: ArticleId) -> Response:
    live, pair = getattr(request.app.state, "live", None), _pair(request)
    if live is None or pair is None:
        return _error(503, "no model loaded yet")
    record = live.corpus.get(article_id)
    if record is not None:
        return _json({**record.__dict__, "source": "live"})
    corpus = live.overlay(pair).corpus
    row = corpus.row_of.get(article_id)
    if row is None:
        return _error(404, f"article {article_id!r} is neither in the served corpus nor a live listing")
    attrs = {a: corpus.attributes[a][row] for a in corpus.attributes}
    return _json({"article_id": article_id, "status": ACTIVE, **attrs, "source": f"model {pair.version}"})


@router.post(ARTICLES_PATH, summary="Upsert many listings (sync-articles)", openapi_extra=ARTICLES_DOC)
async def post_articles(request: Request) -> Response:
    """Body `{"articles": [{"article_id", ...PUT fields}]}` (at most 1,000); answers per item."""
    items = await _items(request, "articles", MAX_ARTICLES_PER_REQUEST)
    if isinstance(items, Response):
        return items
    live, pair = getattr(request.app.state, "live", None), _pair(request)
    if live is None or pair is None:
        return _error(503, "no model loaded yet")
    records: list[ArticleRecord] = []
    indexes: list[int] = []
    rejected: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        article_id = item.get("article_id") if isinstance(item, dict) else None
        if not valid_article_id(article_id):
            rejected.append({"index": index, "reason": ARTICLE_ID_RULE})
            continue
        try:
            records.append(complete(parse_article(article_id, item), set(item), live, pair))
            indexes.append(index)
        except ArticleError as error:
            rejected.append({"index": index, "reason": str(error)})
    room = _room(request.app.state, live)
    if _new_listings(live, pair, records) > room:  # the new listings that do not fit: per item
        kept, kept_indexes = [], []
        for index, record in zip(indexes, records):
            if _new_listings(live, pair, [record]) and room <= 0:
                rejected.append({"index": index, "reason": _full(request.app.state, body=False)})
                continue
            room -= _new_listings(live, pair, [record])
            kept.append(record)
            kept_indexes.append(index)
        records, indexes = kept, kept_indexes
        rejected.sort(key=lambda r: r["index"])
    if records:
        failure = await _store_async(request.app.state, records)
        if failure is not None and failure.status_code == 409 and len(records) > 1:
            # The model refused to embed the batch: item by item, so one listing it cannot embed
            # is that item's answer and the others are stored.
            stored = []
            for index, record in zip(indexes, records):
                one = await _store_async(request.app.state, [record])
                if one is None:
                    stored.append(record)
                elif one.status_code == 409:
                    rejected.append({"index": index, "reason": orjson.loads(one.body)["error"]["message"]})
                else:
                    return one
            records, failure = stored, None
            rejected.sort(key=lambda r: r["index"])
        if failure is not None:
            return failure
    answer = {"accepted": len(records), "rejected": rejected}
    if rejected and not records:
        return _error(422, f"none of the {len(items)} articles is valid", rejected, **answer)
    return _json(answer)


def start_live(app, settings, store, tasks: set) -> None:
    """Opens the live state (`app.state.live`) and starts its sync loop (added to `tasks`)."""
    live = open_live_state(settings, store)
    app.state.live = live
    holder = getattr(app.state, "holder", None)
    if holder is not None:  # a reload builds the new model's live vectors before it swaps
        holder.prepare = live.prepare
    if getattr(app.state, "live_metrics", None) is None:
        app.state.live_metrics = LiveMetrics(app.state.metrics.registry)
    interval = getattr(settings, "live_sync_interval_s", DEFAULT_SYNC_INTERVAL_S)
    tasks.add(asyncio.create_task(live.sync_forever(interval, getattr(app.state, "holder", None))))
