"""The candidate service: FastAPI app, lifespan (model + index load, LATEST watcher), endpoints.

Endpoints (OpenAPI docs at /docs):
  GET  /v1/users/{user_id}/candidates?k=200&exclude_seen=true   the candidates, best first
  GET  /healthz    liveness: the process answers
  GET  /readyz     readiness: a model + index pair is loaded (503 until then)
  GET  /metrics    Prometheus text format
  POST /admin/reload[?force=true]   load what --model points at now (LATEST for a publish root)

Handlers are thin: the work is `serving.recommend.candidates.recommend` on the pair the request took from
`ModelHolder` (see serving/versions/holder.py for the atomic swap). Errors are JSON,
`{"error": {"status", "message", "details"?}}`; a user the model cannot personalise is never an
error but the popular-article fallback (`fallback: true` and `fallback_reason`).

Run it with `candidates serve` (uvicorn; gunicorn with `--workers N`, serving/http/workers.py), or
`uvicorn --factory serving.http.app:create_app_from_environment` with `CANDIDATES_*` environment
variables (serving/http/settings.py). Whatever launches it, writes that arrive on a non-loopback
address are refused unless a write token is configured (serving/http/auth.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import signal
import time
from typing import Annotated, Any

import orjson
from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from homefeed import __version__
from homefeed.redact import public_message, strip_paths
from serving.experiments.config import ARM_NAME_PATTERN
from serving.http import live_routes as routes_live
from serving.http.auth import WriteAuth, token_problem, write_token_of
from serving.http.experiment_route import answer_on_arm, no_experiment
from serving.http.guards import GuardAndMeasure, error_response, jsonable
from serving.http.openapi_errors import ErrorBody, document_errors
from serving.http.settings import ServiceSettings, get_settings
from serving.http.startup import (
    configure_threads,
    model_loader,
    open_store,
    preload_model,
    reload_every_worker,
)
from serving.http.upsert_route import UpsertRoute
from serving.metrics import ServiceMetrics
from serving.recommend import candidates as candidate_logic
from serving.recommend.dispatch import BatchDispatcher
from serving.store import CORRUPT_RECORDS
from serving.versions.holder import ModelHolder

LOG = logging.getLogger(__name__)

# Ids are strings everywhere; this keeps them printable, unambiguous in a URL and bounded.
USER_ID_PATTERN = r"^[A-Za-z0-9._:@-]{1,128}$"
MAX_USER_ID_LENGTH = 128


# ---------------------------------------------------------------------------------------------
# Response models: they document the API (OpenAPI); the candidates body itself is written with
# orjson, skipping per-item validation on the hot path.
# ---------------------------------------------------------------------------------------------
class Candidate(BaseModel):
    article_id: str
    score: float = Field(description="inner product of user and article vectors (fallback: share of views)")
    title: str | None = Field(None, description="present when the article table has a title")


class CandidatesResponse(BaseModel):
    user_id: str
    model_version: str
    fallback: bool = Field(description="true: popular articles, not personalised (see fallback_reason)")
    fallback_reason: str | None = Field(
        None, description=f"one of {', '.join(candidate_logic.FALLBACK_REASONS)}; only when fallback is true"
    )
    arm: str | None = Field(None, description="the experiment arm that answered (only with --experiment)")
    candidates: list[Candidate]


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    422: {"model": ErrorBody, "description": "invalid k, user id or parameter"},
    503: {"model": ErrorBody, "description": "no model loaded yet"},
}


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI):
    under_gunicorn = app.state.master_pid is not None  # a worker: reloads go through the master
    preloaded = under_gunicorn and app.state.holder is not None  # the master loaded the model
    if not under_gunicorn:
        app.state.settings = app.dependency_overrides.get(get_settings, get_settings)()
    settings: ServiceSettings = app.state.settings
    if settings.model is None:
        raise ValueError("no model to serve: set --model (CANDIDATES_MODEL) to a model directory or publish root")
    problem = token_problem(write_token_of(settings))
    if problem is not None:
        LOG.warning("%s: writes and /admin/* are answered only on loopback addresses (serving/http/auth.py)", problem)
    configure_threads(settings)
    # Requests run in batches on one compute thread; Redis reads (network) happen before, on the thread pool.
    app.state.dispatcher = BatchDispatcher(settings.max_batch, prepare_apart=bool(settings.redis_url))
    if preloaded:
        store = app.state.store if not settings.redis_url else open_store(settings)
        holder: ModelHolder = app.state.holder
    else:
        store = app.state.store or open_store(settings)
        holder = ModelHolder(
            settings.model, model_loader(settings, store), app.state.metrics, settings.reload_min_interval_s
        )
        app.state.holder = holder  # /readyz answers "not loaded yet" meanwhile
        first = await holder.reload_async("startup")
        if not first.ok:
            raise RuntimeError(f"cannot serve {settings.model}: {first.message}")
    app.state.holder = holder
    app.state.store = store
    pair = holder.pair
    assert pair is not None  # the startup load succeeded (here, or in the gunicorn master)
    if store is None and pair.histories is None:
        LOG.warning(
            "no user histories (no --redis-url, no --histories, no %s/user_histories.parquet): "
            "every user gets the popular fallback",
            pair.model_dir,
        )
    if settings.experiment is not None:  # every arm's model, loaded once per process
        from serving.experiments.arms import build_experiment

        app.state.experiment = build_experiment(settings.experiment, model_loader(settings, store), app.state.metrics)
        await app.state.experiment.load()
    tasks: set[asyncio.Task] = set()
    routes_live.start_live(app, settings, store, tasks)  # live views, live corpus and its sync loop
    if settings.watch_latest and holder.is_publish_root and not under_gunicorn:  # the master watches for workers
        tasks.add(asyncio.create_task(holder.watch(settings.watch_interval_s)))
    loop = asyncio.get_running_loop()
    sighup = False
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError, AttributeError):
        # Only possible in the main thread of a process (uvicorn's); TestClient runs elsewhere.
        def on_sighup() -> None:
            if under_gunicorn:  # the master reloads and replaces every worker
                LOG.info("SIGHUP: asking the gunicorn master to reload every worker")
                reload_every_worker(app)
                return
            LOG.info("SIGHUP: reloading %s", holder.source)
            task = asyncio.create_task(holder.reload_async("SIGHUP", wait=False))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        loop.add_signal_handler(signal.SIGHUP, on_sighup)
        sighup = True
    LOG.info("serving model %s (%s)", pair.version, pair.describe())
    del pair  # the holder owns the model: this frame lives until shutdown and must not keep it after a reload
    try:
        yield
    finally:
        if sighup:
            loop.remove_signal_handler(signal.SIGHUP)
        for task in tasks:
            task.cancel()
        holder.close()
        if app.state.experiment is not None:
            app.state.experiment.close()  # writes the exposures still queued
        if app.state.dispatcher is not None:
            app.state.dispatcher.close()
        if store is not None:
            store.close()
        app.state.live.close()


class _CorruptRecords:
    """Exports serving.store.CORRUPT_RECORDS: records of a store skipped as unreadable, by store."""

    def describe(self):
        return []

    def collect(self):
        from prometheus_client.core import CounterMetricFamily

        family = CounterMetricFamily(
            "candidates_corrupt_records", "Stored records skipped as unreadable, by store", labels=["store"]
        )
        for store, count in sorted(CORRUPT_RECORDS.items()):
            family.add_metric([store], count)
        yield family


# ---------------------------------------------------------------------------------------------
# The app.
# ---------------------------------------------------------------------------------------------
def create_app(settings: ServiceSettings | None = None, preload: bool = False) -> FastAPI:
    """A new app instance (own metrics registry). `settings` overrides `get_settings` if given.

    `preload`: load the model now, in this process (the gunicorn master, before it forks its workers:
    serving/http/workers.py), rather than in the lifespan of each process.
    """
    app = FastAPI(
        title="homefeed candidates",
        version=__version__,
        description="Top-k candidate articles per user from a two-tower model and a FAISS index.",
        lifespan=lifespan,
    )
    app.state.metrics = ServiceMetrics()
    app.state.metrics.registry.register(_CorruptRecords())
    app.state.holder = None
    app.state.experiment = None  # serving/experiments/arms.py, with --experiment
    app.state.live = None
    app.state.dispatcher = None  # set by the lifespan (serving/recommend/dispatch.py)
    app.state.store = None
    app.state.master_pid = None  # the gunicorn master that loaded the model (serving/http/workers.py)
    if settings is not None:
        app.dependency_overrides[get_settings] = lambda: settings
    app.state.settings = None  # set by the lifespan, or by the preload below
    app.add_middleware(UpsertRoute)  # innermost: listing upserts skip FastAPI's routing (serving/http/upsert_route.py)
    app.add_middleware(WriteAuth)  # inside GuardAndMeasure, so refused writes are counted too
    app.add_middleware(GuardAndMeasure)
    app.include_router(routes_live.router)
    document_errors(app)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> Response:
        details = [
            {"where": ".".join(str(p) for p in e.get("loc", ())), "problem": e.get("msg"), "got": e.get("input")}
            for e in error.errors()
        ]
        message = "; ".join(f"{d['where']}: {d['problem']}" for d in details) or "invalid request"
        return error_response(422, message, jsonable(details))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> Response:
        return error_response(error.status_code, str(error.detail), headers=getattr(error, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> Response:
        LOG.exception("unhandled error on %s", request.url.path)
        return error_response(500, "internal error; see the service log")

    @app.get(
        "/v1/users/{user_id}/candidates",
        response_model=CandidatesResponse,
        responses=ERROR_RESPONSES,
        summary="Candidate articles for a user",
    )
    async def user_candidates(
        request: Request,
        user_id: Annotated[str, Path(pattern=USER_ID_PATTERN, max_length=MAX_USER_ID_LENGTH, description="user id")],
        k: Annotated[
            int | None, Query(ge=1, description="how many candidates (default 200, at most max_k=1000)")
        ] = None,
        exclude_seen: Annotated[bool, Query(description="drop articles the user already viewed")] = True,
        region: Annotated[
            list[Annotated[str, Query(min_length=1, max_length=128)]] | None,
            Query(max_length=100, description="only listings in one of these regions (repeat: region=R1&region=R2)"),
        ] = None,
        arm: Annotated[
            str | None,
            Query(
                pattern=ARM_NAME_PATTERN,
                description="with --experiment: serve this arm instead of the user's (debugging; needs the write token)",
            ),
        ] = None,
    ) -> Response:
        """The user's top-k articles by the served model, best first; popular articles as fallback."""
        # The settings the lifespan resolved (a sync Depends would cost a thread-pool hop per request).
        settings: ServiceSettings = request.app.state.settings
        k = settings.default_k if k is None else k
        if k > settings.max_k:
            return error_response(
                422,
                f"k={k} is above the maximum of {settings.max_k}",
                [{"where": "query.k", "problem": f"must be at most {settings.max_k}", "got": k}],
            )
        holder: ModelHolder | None = request.app.state.holder
        pair = holder.pair if holder is not None else None  # taken once: this request's pair
        if pair is None:
            return error_response(503, "no model loaded yet")
        state = request.app.state
        arguments = (state.store, user_id, k, exclude_seen, state.live, set(region) if region else None)
        extra = None
        if state.experiment is None:
            if (refused := no_experiment(arm)) is not None:
                return refused
            answer = await state.dispatcher.recommend(pair, *arguments)  # serving/recommend/dispatch.py: batches
        else:  # serving/http/experiment_route.py: the user's arm answers
            outcome = await answer_on_arm(request, state.experiment, pair, arm, arguments)
            if isinstance(outcome, Response):
                return outcome
            answer, pair, extra = outcome
        started = time.perf_counter()
        body = candidate_logic.answer_json(answer, pair, settings.include_titles, extra)
        answer.timings["serialize"] = time.perf_counter() - started
        metrics: ServiceMetrics = request.app.state.metrics
        for stage, seconds in answer.timings.items():
            metrics.observe_stage(stage, seconds)
        metrics.candidates_returned.observe(len(answer.rows))
        if answer.fallback:
            metrics.fallbacks.labels(answer.fallback_reason).inc()
        headers = None
        if settings.server_timing:
            headers = {"Server-Timing": ", ".join(f"{s};dur={t * 1000:.3f}" for s, t in answer.timings.items())}
        return Response(body, media_type="application/json", headers=headers)

    @app.get("/healthz", summary="Liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="Readiness: a model and its index are loaded", responses={503: {"model": ErrorBody}})
    async def readyz(request: Request) -> Response:
        holder: ModelHolder | None = request.app.state.holder
        if holder is None or holder.pair is None:
            reason = holder.last_error if holder is not None and holder.last_error else "model not loaded yet"
            return error_response(503, reason)
        # The current state: the pair being served and the outcome of the latest reload attempt
        # (a later success clears an earlier rejection).
        last = holder.last_reload
        body = {
            "ready": True,
            "worker_pid": os.getpid(),  # which worker process answered (candidates serve --workers N)
            # Where the model lives on this host is no client's business: paths are cut to their last parts.
            **{k: strip_paths(v) if isinstance(v, str) else v for k, v in holder.pair.describe().items()},
            "experiment": request.app.state.experiment.describe() if request.app.state.experiment else None,
            "last_reload_error": public_message(holder.last_error) if holder.last_error else None,
            "last_reload": None
            if last is None
            else {
                "result": last.result,
                "trigger": last.trigger,
                "at": last.at,
                "message": public_message(last.message),
            },
        }
        return Response(orjson.dumps(body), media_type="application/json")

    @app.get(
        "/metrics",
        summary="Prometheus metrics",
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "text format"}},
    )
    async def metrics(request: Request) -> Response:
        return Response(generate_latest(metrics_registry(request.app)), media_type=CONTENT_TYPE_LATEST)

    @app.post(
        "/admin/reload",
        summary="Load the model --model points at now (LATEST for a publish root)",
        responses={
            401: {"model": ErrorBody},
            409: {"model": ErrorBody, "description": "new version rejected"},
            429: {
                "model": ErrorBody,
                "description": "a reload is running, or the last one was too recent (Retry-After)",
            },
        },
    )
    async def reload(
        request: Request,
        settings: Annotated[ServiceSettings, Depends(get_settings)],
        force: Annotated[bool, Query(description="reload even if the version is unchanged")] = False,
    ) -> Response:
        if settings.admin_token and request.headers.get("authorization") != f"Bearer {settings.admin_token}":
            return error_response(401, "admin token required", headers={"WWW-Authenticate": "Bearer"})
        holder: ModelHolder | None = request.app.state.holder
        if holder is None:
            return error_response(503, "service is still starting")
        result = await holder.reload_async("admin", force, wait=False)  # on the reload thread, never the loop
        if result.deferred:
            retry = max(1, math.ceil(result.retry_after_s or 1))
            return error_response(429, result.message, headers={"Retry-After": str(retry)})
        if not result.ok:
            serving = f"; still serving {result.previous_version}" if result.previous_version else ""
            return error_response(409, f"new version rejected: {result.message}{serving}")
        if result.result == "loaded":  # gunicorn workers: every worker follows
            reload_every_worker(request.app)
        body = {
            "result": result.result,
            "model_version": result.model_version,
            "previous_version": result.previous_version,
            "message": result.message,
        }
        return Response(orjson.dumps(body), media_type="application/json")

    if preload:
        app.state.settings = settings if settings is not None else get_settings()
        preload_model(app)
    return app


def metrics_registry(app: FastAPI) -> CollectorRegistry:
    """What /metrics reports: this app's registry, or with gunicorn workers the sum over every
    worker process (prometheus_client's multiprocess mode, PROMETHEUS_MULTIPROC_DIR)."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return app.state.metrics.registry
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry


def create_app_from_environment(preload: bool = False) -> FastAPI:
    """Factory for `uvicorn --factory` and a plain gunicorn launch (serving/http/gunicorn_conf.py,
    with `preload=True`): settings from CANDIDATES_*, logging set up if nobody did."""
    if not logging.getLogger().handlers:
        from homefeed.logs import configure_logging

        configure_logging()
    return create_app(preload=preload)
