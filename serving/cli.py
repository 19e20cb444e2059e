"""CLI: `candidates load-histories`, `serve`, `query` (thin wrappers over serving/).

Heavy imports (faiss, tensorflow, fastapi, uvicorn, redis) happen inside the handlers.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import typing
from pathlib import Path

from serving.store import DEFAULT_REDIS_PREFIX  # the history keys' owner (light: orjson only)

LOG = logging.getLogger(__name__)


def register(subparsers) -> None:
    _register_load_histories(subparsers)
    _register_serve(subparsers)
    _register_query(subparsers)


# ---------------------------------------------------------------------------------------------
# load-histories
# ---------------------------------------------------------------------------------------------
def _register_load_histories(subparsers) -> None:
    p = subparsers.add_parser(
        "load-histories",
        help="load a user_histories.parquet snapshot into Redis (the production history store)",
        description=(
            "Write every user of a user_histories.parquet snapshot (EXTRACT_DIR/user_histories.parquet) "
            "to Redis as `<prefix><user_id>` -> JSON, in pipelined batches. `candidates serve --redis-url` "
            "then reads histories from there. Users absent from the snapshot keep their keys (use --ttl-days "
            "to let them expire)."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--histories", required=True, metavar="PATH", help="user_histories.parquet")
    p.add_argument(
        "--redis-url",
        metavar="URL",
        default=os.environ.get("CANDIDATES_REDIS_URL") or os.environ.get("REDIS_URL"),
        help="e.g. redis://127.0.0.1:6379/0; default: CANDIDATES_REDIS_URL or REDIS_URL from the environment "
        "(where a URL with a password belongs: the command line is visible to every local user)",
    )
    p.add_argument("--prefix", default=DEFAULT_REDIS_PREFIX, help="key prefix (serve --redis-prefix must match)")
    p.add_argument("--batch-size", type=int, default=1000, help="SETs per pipelined round trip")
    p.add_argument("--ttl-days", type=float, default=None, help="expire each key after this many days")
    p.set_defaults(handler=load_histories_command)


def load_histories_command(args: argparse.Namespace) -> int:
    if not args.redis_url:
        raise ValueError("no Redis: set --redis-url, or CANDIDATES_REDIS_URL / REDIS_URL in the environment")
    from homefeed.errors import CommandError
    from serving.store import StoreUnavailableError, load_histories_to_redis

    last = [time.monotonic()]

    def progress(written: int) -> None:
        now = time.monotonic()
        if now - last[0] >= 2.0:  # a line every couple of seconds, not every batch
            print(f"  {written:,} users written...", file=sys.stderr, flush=True)
            last[0] = now

    ttl = None if args.ttl_days is None else int(args.ttl_days * 86400)
    started = time.monotonic()
    try:
        written = load_histories_to_redis(
            args.histories,
            args.redis_url,
            prefix=args.prefix,
            batch_size=args.batch_size,
            ttl_seconds=ttl,
            progress=progress,
        )
    except StoreUnavailableError as error:
        raise CommandError(str(error)) from None
    print(f"loaded {written:,} user histories into Redis (prefix {args.prefix!r}) in {time.monotonic() - started:.1f}s")
    return 0


# ---------------------------------------------------------------------------------------------
# serve
# ---------------------------------------------------------------------------------------------
def _register_serve(subparsers) -> None:
    p = subparsers.add_parser(
        "serve",
        help="run the HTTP candidate service",
        description=(
            "Serve GET /v1/users/{user_id}/candidates?k=200 (plus /healthz, /readyz, /metrics, /docs) with "
            "uvicorn, or with --workers N gunicorn running N uvicorn workers that share the model loaded before "
            "they fork. --model is a model directory with index/, or a publish root: the service then follows "
            "LATEST, polling it for new versions (also POST /admin/reload, or SIGHUP). User histories come "
            "from --redis-url, else --histories, else the model directory's user_histories.parquet. "
            "Every option is a service setting (serving/http/settings.py) and can also come from its "
            "CANDIDATES_<SETTING> variable, e.g. CANDIDATES_ADMIN_TOKEN to protect /admin/reload; options given "
            "here win."
        ),
        formatter_class=argparse.HelpFormatter,
    )
    _add_settings_flags(p)
    p.set_defaults(handler=serve_command)


# Flags whose name is not the field's (`--field-name`, a trailing `_s` dropped).
FLAG_NAMES = {"watch_latest": "--watch"}


def serve_flags() -> dict[str, str]:
    """ServiceSettings field -> its `serve` flag: every setting is a flag."""
    from serving.http.settings import ServiceSettings

    return {
        field: FLAG_NAMES.get(field) or "--" + field.removesuffix("_s").replace("_", "-")
        for field in ServiceSettings.model_fields
    }


def _add_settings_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per ServiceSettings field; its help and the default shown are the field's. Not given
    means the CANDIDATES_* variable, then the field's default."""
    from serving.http.settings import ServiceSettings

    for field, flag in serve_flags().items():
        info = ServiceSettings.model_fields[field]
        kinds = [k for k in typing.get_args(info.annotation) if k is not type(None)] or [info.annotation]
        kind = str if kinds[0] is Path else kinds[0]
        # A secret's default is never shown; None shows as nothing.
        shown = "" if info.repr is False or info.default is None else f" [{info.default}]"
        text = f"{info.description or field.replace('_', ' ')}{shown}".replace("%", "%%")
        if kind is bool:
            parser.add_argument(flag, dest=field, action=argparse.BooleanOptionalAction, default=None, help=text)
        else:
            metavar = field.upper().removesuffix("_S")
            parser.add_argument(flag, dest=field, type=kind, metavar=metavar, default=None, help=text)


def settings_from_args(args: argparse.Namespace):
    """The service's settings: the flags given win over CANDIDATES_* variables and the defaults."""
    from serving.http.settings import ServiceSettings

    flags = serve_flags()
    overrides = {field: getattr(args, field) for field in flags if getattr(args, field, None) is not None}
    for field in ("model", "histories", "experiment"):
        if field in overrides:
            overrides[field] = os.path.abspath(overrides[field])
    import pydantic

    try:
        return ServiceSettings(**overrides)
    except pydantic.ValidationError as error:
        problems = []
        for item in error.errors():
            field = str(item["loc"][0]) if item["loc"] else ""
            info = ServiceSettings.model_fields.get(field)
            given = "(hidden)" if info is not None and info.repr is False else item.get("input")
            problems.append(f"{flags.get(field, f'CANDIDATES_{field.upper()}')} {given}: {item['msg']}")
        raise ValueError("; ".join(problems)) from None


def default_live_store(model: str) -> Path:
    """Where `candidates serve` keeps live state without Redis: one file per served model path (two
    services of different models on a host never share one), under CANDIDATES_STATE_DIR, else the
    XDG state directory."""
    import hashlib

    base = os.environ.get("CANDIDATES_STATE_DIR") or os.path.join(
        os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state"), "homefeed-candidates"
    )
    digest = hashlib.sha256(os.path.abspath(model).encode()).hexdigest()[:16]
    return Path(base) / f"live-{digest}.sqlite3"


def _preflight(model: str) -> str:
    """Fails fast, with one clear line, on a model path the service could not load."""
    from serving.versions import files as model_files
    from serving.versions.pair import check_index_matches

    resolved = model_files.resolve_model_dir(model)
    manifest = model_files.read_model_manifest(resolved.model_dir)
    check_index_matches(
        resolved.model_dir, manifest, model_files.read_index_manifest(resolved.model_dir / model_files.INDEX_DIR)
    )
    return manifest["model_version"]


def serve_command(args: argparse.Namespace) -> int:
    from homefeed.redact import redact

    settings = settings_from_args(args)  # options win over CANDIDATES_* variables
    if settings.model is None:
        raise ValueError("--model (or CANDIDATES_MODEL) is required: a model directory or publish root")
    if settings.histories and not os.path.isfile(settings.histories):
        raise FileNotFoundError(f"--histories {settings.histories} not found")
    if not settings.redis_url and settings.live_store is None and settings.workers == 1:
        # live writes survive a restart by default
        settings = settings.model_copy(update={"live_store": str(default_live_store(str(settings.model)))})
    if settings.workers > 1:
        from serving.http.workers import limit_openmp_threads

        limit_openmp_threads(settings)  # before the preflight imports FAISS
    version = _preflight(str(settings.model))
    if settings.experiment is not None:
        from serving.experiments.config import load_experiment

        experiment = load_experiment(settings.experiment)  # a bad file fails here, naming the field
        for arm in experiment.arms:
            if not arm.is_popularity:
                _preflight(arm.model)
    from serving.http.auth import check_bind, write_token_of

    check_bind(settings.host, write_token_of(settings))  # no open writes on a reachable address
    if settings.workers > 1 and not settings.redis_url:
        LOG.warning(
            "%d workers without --redis-url: live writes (POST /v1/events, /v1/articles) are refused with 503, "
            "since each worker would keep its own copy; use --redis-url to share them",
            settings.workers,
        )
    LOG.info(
        "serving model %s from %s on http://%s:%d (%d worker(s))",
        version,
        settings.model,
        settings.host,
        settings.port,
        settings.workers,
    )
    if settings.redis_url:
        LOG.info("user histories from Redis at %s", redact(settings.redis_url))
    elif settings.live_store:
        LOG.info("live views and listings kept in %s", settings.live_store)
    if settings.workers > 1:  # gunicorn: the model loaded once, before the workers fork
        from serving.http import workers

        workers.run(settings)
        return 0
    import uvicorn

    from serving.http.app import create_app
    from serving.http.server import uvicorn_options

    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=settings.access_log,
        timeout_graceful_shutdown=10,
        **uvicorn_options(settings),  # JSON for the server's own errors, slow clients timed out
    )
    return 0


# ---------------------------------------------------------------------------------------------
# query
# ---------------------------------------------------------------------------------------------
def _register_query(subparsers) -> None:
    p = subparsers.add_parser(
        "query",
        help="print a user's candidates from a running service",
        description="Ask a running `candidates serve` for USER_ID's candidates and print rank, article id, score and title.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("user_id", metavar="USER_ID")
    p.add_argument("--url", default="http://127.0.0.1:8080", help="where the service listens")
    p.add_argument("--k", type=int, default=200, help="how many candidates")
    p.add_argument("--include-seen", action="store_true", help="keep articles the user already viewed")
    p.add_argument("--json", action="store_true", help="print the raw JSON answer")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the answer")
    p.set_defaults(handler=query_command)


def query_command(args: argparse.Namespace) -> int:
    import json

    from homefeed.errors import CommandError
    from serving.query import ServiceError, fetch_candidates, format_candidates

    try:
        body = fetch_candidates(args.user_id, args.url, args.k, not args.include_seen, args.timeout)
    except ServiceError as error:
        raise CommandError(str(error)) from None
    print(json.dumps(body, indent=2) if args.json else format_candidates(body))
    return 0
