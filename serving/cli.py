"""CLI: `candidates build-index`, `load-histories`, `serve`, `query` (thin wrappers over serving/).

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

from homefeed.config import IndexConfig
from homefeed.config_flags import add_config_flags, config_from_args
from serving.store import DEFAULT_REDIS_PREFIX  # the history keys' owner (light: orjson only)

LOG = logging.getLogger(__name__)
WORKERS_DIR_PREFIX = "candidates-workers-"  # the directory `serve --workers N` makes for its workers

# build-index flags: generated from IndexConfig (homefeed/config_flags.py), under their established names.
INDEX_FLAGS = {"hnsw_ef_construction": "--ef-construction", "hnsw_ef_search": "--ef-search", "ivf_nprobe": "--nprobe",
               "tune_search": "--tune", "recall_sample_size": "--sample-size"}  # fmt: skip
INDEX_FLAG_HELP = {
    "index_type": "auto: exact (flat) below --exact-below articles, IVF-Flat from there on; or flat, hnsw, ivf",
    "recall_floor": "refuse an index below this recall@k", "recall_sample_size": "users sampled for the recall check",
    "k": "k of the recall check", "hnsw_m": "HNSW links per node", "hnsw_ef_construction": "HNSW build depth",
    "hnsw_ef_search": "HNSW search depth to start tuning from", "ivf_nlist": "IVF lists (none: about 4*sqrt(n))",
    "ivf_nprobe": "IVF lists probed, to start tuning from", "exact_below": "auto: exact search below this many articles",
    "max_ef_search": "highest efSearch the tuning may reach", "max_nprobe": "highest nprobe the tuning may reach",
    "seed": "random seed (IVF training, the recall sample)",
    "tune_search": "raise --ef-search/--nprobe until the recall floor is met (--no-tune: keep them, refuse if below)",
}  # fmt: skip


def _index_type(text: str) -> str:
    if text not in ("auto", "flat", "hnsw", "ivf"):
        raise argparse.ArgumentTypeError(f"invalid choice {text!r} (choose from auto, flat, hnsw, ivf)")
    return text


def register(subparsers) -> None:
    _register_build_index(subparsers)
    _register_load_histories(subparsers)
    _register_serve(subparsers)
    _register_query(subparsers)


# ---------------------------------------------------------------------------------------------
# build-index
# ---------------------------------------------------------------------------------------------
def _register_build_index(subparsers) -> None:
    p = subparsers.add_parser(
        "build-index",
        help="build the FAISS index of a model directory (MODEL_DIR/index/)",
        description=(
            "Build a FAISS inner-product index over a model's article vectors and write it atomically to "
            "MODEL_DIR/index/ (articles.faiss + index_manifest.json, with the model version and the "
            "vectors' sha256). Approximate indexes are checked: recall@k against exact search on a "
            "sample of real user vectors (user histories encoded by the model) must reach the floor, "
            "raising efSearch/nprobe as needed; otherwise nothing is written and the exit status is 2."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--model", required=True, metavar="DIR", help="finished model directory (from `candidates train`)")
    p.add_argument(
        "--histories", metavar="PATH",
        help="user_histories.parquet for the recall queries (default: MODEL_DIR/user_histories.parquet; "
        "without any, article vectors are the queries, which overstates recall)",
    )
    p.add_argument("--output", metavar="DIR", help="index directory to write (default: MODEL_DIR/index)")
    add_config_flags(p, IndexConfig, "index settings", helps=INDEX_FLAG_HELP, flags=INDEX_FLAGS, types={"index_type": _index_type})
    p.set_defaults(handler=build_index_command)


def build_index_command(args: argparse.Namespace) -> int:
    from serving.index_build import build_model_index

    config = config_from_args(IndexConfig, args)
    manifest = build_model_index(args.model, config, histories=args.histories, output_dir=args.output)
    k = manifest["k"]
    where = args.output or os.path.join(args.model, "index")
    print(
        f"index written to {where}: {manifest['index_type']} over {manifest['n_articles']} articles, "
        f"recall@{k} {manifest[f'recall@{k}']:.4f} vs exact ({manifest['recall_query_source']}, "
        f"{manifest['recall_queries']} queries), search {manifest['search_params'] or 'exact'}, "
        f"built in {manifest['build_seconds']:.1f}s, model {manifest['model_version']}"
    )
    return 0


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
    p.add_argument("--redis-url", required=True, metavar="URL", help="e.g. redis://127.0.0.1:6379/0")
    p.add_argument("--prefix", default=DEFAULT_REDIS_PREFIX, help="key prefix (serve --redis-prefix must match)")
    p.add_argument("--batch-size", type=int, default=1000, help="SETs per pipelined round trip")
    p.add_argument("--ttl-days", type=float, default=None, help="expire each key after this many days")
    p.set_defaults(handler=load_histories_command)


def load_histories_command(args: argparse.Namespace) -> int:
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
            args.histories, args.redis_url, prefix=args.prefix, batch_size=args.batch_size, ttl_seconds=ttl,
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
            "uvicorn. --model is a model directory with index/, or a publish root: the service then follows "
            "LATEST, polling it for new versions (also POST /admin/reload, or SIGHUP). User histories come "
            "from --redis-url, else --histories, else the model directory's user_histories.parquet. "
            "Service settings can also come from CANDIDATES_<SETTING> variables (serving/settings.py), e.g. "
            "CANDIDATES_ADMIN_TOKEN to protect /admin/reload; options given here win."
        ),
        formatter_class=argparse.HelpFormatter,
    )
    p.add_argument("--model", required=True, metavar="DIR", help="model directory or publish root")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind, 0.0.0.0 for all [127.0.0.1]")
    p.add_argument("--port", type=int, default=8080, help="[8080]")
    # Service settings: flags generated from ServiceSettings (serving/settings.py owns the defaults
    # and help); not given means CANDIDATES_* variables and then the settings' defaults apply.
    _add_settings_flags(p)
    p.add_argument(
        "--no-watch", dest="watch_latest", action="store_false", default=None,
        help="do not poll LATEST (reload only on POST /admin/reload or SIGHUP)",
    )
    p.add_argument("--access-log", action="store_true", help="log every request (costs latency)")
    p.set_defaults(handler=serve_command)


# serve flag -> ServiceSettings field; the help text and the default shown come from the field.
SERVE_FLAGS: dict[str, tuple[str, str]] = {
    "workers": ("--workers", "N"),
    "redis_url": ("--redis-url", "URL"),
    "redis_prefix": ("--redis-prefix", "PREFIX"),
    "histories": ("--histories", "PATH"),
    "default_k": ("--default-k", "K"),
    "max_k": ("--max-k", "K"),
    "watch_interval_s": ("--watch-interval", "SECONDS"),
    "reload_min_interval_s": ("--reload-min-interval", "SECONDS"),
    "header_timeout_s": ("--header-timeout", "SECONDS"),
    "body_timeout_s": ("--body-timeout", "SECONDS"),
    "batch_wait_ms": ("--batch-wait-ms", "MS"),
    "encoder": ("--encoder", "KIND"),
    "write_token": ("--write-token", "TOKEN"),
}


def _add_settings_flags(parser: argparse.ArgumentParser) -> None:
    from serving.settings import ServiceSettings

    for field, (flag, metavar) in SERVE_FLAGS.items():
        info = ServiceSettings.model_fields[field]
        kinds = [k for k in typing.get_args(info.annotation) if k is not type(None)] or [info.annotation]
        kind = str if kinds[0] is Path else kinds[0]
        # A secret's default is never shown; None shows as nothing.
        shown = "" if info.repr is False or info.default is None else f" [{info.default}]"
        parser.add_argument(flag, dest=field, type=kind, metavar=metavar, default=None,
                            help=f"{info.description or field.replace('_', ' ')}{shown}".replace("%", "%%"))  # fmt: skip


def settings_from_args(args: argparse.Namespace):
    """The service's settings: the flags given win over CANDIDATES_* variables and the defaults."""
    from serving.settings import ServiceSettings

    overrides = {field: getattr(args, field) for field in SERVE_FLAGS if getattr(args, field, None) is not None}
    if "histories" in overrides:
        overrides["histories"] = os.path.abspath(overrides["histories"])
    if args.watch_latest is not None:
        overrides["watch_latest"] = args.watch_latest
    import pydantic

    try:
        return ServiceSettings(model=os.path.abspath(args.model), **overrides)
    except pydantic.ValidationError as error:
        problems = []
        for item in error.errors():
            field = str(item["loc"][0]) if item["loc"] else ""
            flag = SERVE_FLAGS.get(field, (f"CANDIDATES_{field.upper()}",))[0]
            given = "(hidden)" if field == "write_token" else item.get("input")
            problems.append(f"{flag} {given}: {item['msg']}")
        raise ValueError("; ".join(problems)) from None


def _preflight(model: str) -> str:
    """Fails fast, with one clear line, on a model path the service could not load."""
    from serving import model_files
    from serving.index_build import read_index_manifest
    from serving.model_pair import check_index_matches

    resolved = model_files.resolve_model_dir(model)
    manifest = model_files.read_model_manifest(resolved.model_dir)
    check_index_matches(resolved.model_dir, manifest, read_index_manifest(resolved.model_dir / model_files.INDEX_DIR))
    return manifest["model_version"]


def serve_command(args: argparse.Namespace) -> int:
    import uvicorn

    from homefeed.redact import redact
    from serving.http_server import uvicorn_options
    from serving.settings import ENV_PREFIX

    if args.histories and not os.path.isfile(args.histories):
        raise FileNotFoundError(f"--histories {args.histories} not found")
    version = _preflight(args.model)
    settings = settings_from_args(args)  # options win over CANDIDATES_* variables
    from serving.auth import check_bind, write_token_of

    check_bind(args.host, write_token_of(settings))  # no open writes on a reachable address
    if settings.workers > 1 and not settings.redis_url:
        LOG.warning(
            "%d workers without --redis-url: live writes (POST /v1/events, /v1/articles) are refused with 503, "
            "since each worker would keep its own copy; use --redis-url to share them", settings.workers,
        )
    LOG.info("serving model %s from %s on http://%s:%d (%d worker(s))", version, args.model, args.host, args.port, settings.workers)
    if settings.redis_url:
        LOG.info("user histories from Redis at %s", redact(settings.redis_url))
    common = dict(
        host=args.host, port=args.port, log_config=None, access_log=args.access_log, timeout_graceful_shutdown=10,
        **uvicorn_options(settings),  # JSON for the server's own errors, slow clients timed out
    )
    if settings.workers == 1:
        from serving.app import create_app

        uvicorn.run(create_app(settings), **common)
    else:
        import shutil
        import tempfile

        from homefeed import lifetime

        # Worker processes build their own app from the environment (serving/settings.py); they
        # pass /admin/reload on to each other through a directory of this process (serving/workers.py).
        # Named for this process: a later serve removes what a killed one left (its shared arrays
        # can be hundreds of MB; serving/shared_arrays.py).
        lifetime.remove_stale_dirs(tempfile.gettempdir(), WORKERS_DIR_PREFIX)
        bus = str(lifetime.owned_dir(tempfile.gettempdir(), WORKERS_DIR_PREFIX))
        settings = settings.model_copy(update={"reload_bus": bus, "supervisor_pid": os.getpid()})
        for key, value in settings.model_dump(exclude_none=True).items():
            os.environ[f"{ENV_PREFIX}{key.upper()}"] = str(value)
        try:
            uvicorn.run("serving.app:create_app_from_environment", factory=True, workers=settings.workers, **common)
        finally:
            shutil.rmtree(bus, ignore_errors=True)
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
