"""CLI of the live feed: `candidates consume-events` and `candidates sync-articles` (thin wrappers).

Heavy imports (redis, httpx, pandas, BigQuery) happen inside the handlers.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

from homefeed import features
from serving.auth import WRITE_TOKEN_ENV as TOKEN_ENV  # the one owner of the name
from serving.store import DEFAULT_REDIS_PREFIX  # the history keys' owner (light: orjson only)

LOG = logging.getLogger(__name__)



def register(subparsers) -> None:
    _register_consume_events(subparsers)
    _register_sync_articles(subparsers)


def _register_consume_events(subparsers) -> None:
    from serving.consumer import DEFAULT_GROUP

    p = subparsers.add_parser(
        "consume-events",
        help="apply live views from a Redis Stream to the live history store",
        description=(
            "Read live views from a Redis Stream with a consumer group and store them where `candidates serve "
            "--redis-url` reads histories; acknowledge (XACK) each batch only after it is written. Producers only "
            "XADD entries: an `event` field holding the item JSON ({\"user_id\", \"article_id\", \"viewed_at\": "
            "RFC 3339, \"event_id\"?}) or those fields flat. After a crash, a restarted consumer with the same "
            "--consumer name re-processes what it had not acknowledged; any consumer of the group reclaims a dead "
            "one's entries after --claim-idle-ms (XAUTOCLAIM). Every event has an idempotency key (event_id, else "
            "viewed_at|article_id), so nothing is lost and nothing applied twice. Invalid entries go, with their "
            "reason, to the stream NAME:rejected. Stops cleanly on SIGTERM / Ctrl-C."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--redis-url", required=True, metavar="URL", help="e.g. redis://127.0.0.1:6379/0 (the service's)")
    p.add_argument("--stream", required=True, metavar="NAME", help="the stream producers XADD views to")
    p.add_argument("--group", default=DEFAULT_GROUP, help="consumer group name")
    p.add_argument("--consumer", metavar="NAME", help="this consumer's name in the group (default: HOST-PID; keep it stable across restarts)")
    p.add_argument("--redis-prefix", default=DEFAULT_REDIS_PREFIX, help="the service's --redis-prefix")
    p.add_argument("--history-length", type=int, default=features.HISTORY_LENGTH, metavar="H", help="live views kept per user")
    p.add_argument("--model", metavar="DIR", help="model directory or publish root: reject views of articles neither in its corpus nor live (default: accept any id)")
    p.add_argument("--batch-size", type=int, default=500, help="entries per read")
    p.add_argument("--block-ms", type=int, default=1000, help="how long one read waits for new entries")
    p.add_argument("--claim-idle-ms", type=int, default=30_000, help="reclaim other consumers' entries pending this long")
    p.add_argument("--exit-when-idle", action="store_true", help="stop once the stream has nothing new (batch back-fills)")
    p.set_defaults(handler=consume_events_command)


def _known_articles(model: str, redis_url: str, prefix: str):
    from serving import model_files
    from serving.live_articles import RedisArticleLog

    model_dir = model_files.resolve_model_dir(model).model_dir
    corpus = set(model_files.read_article_ids(model_dir))
    live_log = RedisArticleLog(redis_url, prefix)

    def known(article_id: str) -> bool:
        return article_id in corpus or live_log.exists(article_id)

    LOG.info("accepting views of the %d articles of %s and of live listings", len(corpus), model_dir)
    return known


def consume_events_command(args: argparse.Namespace) -> int:
    from homefeed.errors import CommandError
    from serving.consumer import EventConsumer
    from serving.store import StoreUnavailableError

    for name in ("batch_size", "block_ms", "history_length"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
    known = _known_articles(args.model, args.redis_url, args.redis_prefix) if args.model else None
    consumer = EventConsumer(
        args.redis_url, args.stream, group=args.group, consumer=args.consumer, history_prefix=args.redis_prefix,
        history_length=args.history_length, batch_size=args.batch_size, block_ms=args.block_ms,
        claim_idle_ms=args.claim_idle_ms, known_article=known,
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        stats = consumer.run(stop, idle_exit=args.exit_when_idle)
    except StoreUnavailableError as error:  # at start: Redis unreachable or refusing us
        raise CommandError(str(error)) from None
    finally:
        consumer.close()
    print(f"{stats.read} entries read: {stats.applied} applied, {stats.duplicates} duplicate(s), {stats.rejected} rejected, {stats.claimed} reclaimed")
    return 0


def _register_sync_articles(subparsers) -> None:
    p = subparsers.add_parser(
        "sync-articles",
        help="upsert listings (new, changed, sold) into a running service's live corpus",
        description=(
            "Send listings to a running service (POST /v1/articles, 1,000 per request): active ones become "
            "candidates at once with a vector from the served model's article tower; sold or deleted ones leave "
            "every answer. Read them from a Parquet/CSV file or a BigQuery articles table (columns article_id "
            "[, title, category, region, status, created_at]). --since keeps only rows created at or after T. "
            f"The write token comes from --write-token or ${TOKEN_ENV}."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--service", required=True, metavar="URL", help="e.g. http://127.0.0.1:8080")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--articles", metavar="FILE", help="articles as Parquet or CSV")
    source.add_argument("--project", help="BigQuery project holding the articles table")
    p.add_argument("--dataset", help="BigQuery dataset (with --project)")
    p.add_argument("--table", default="articles", help="BigQuery table (with --project)")
    p.add_argument("--endpoint", metavar="URL", help="BigQuery emulator endpoint (local runs)")
    p.add_argument("--since", metavar="T", help="only rows with created_at >= T (RFC 3339 or a date)")
    p.add_argument("--write-token", metavar="TOKEN", help=f"bearer token of the service (default: ${TOKEN_ENV})")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    p.set_defaults(handler=sync_articles_command)


def sync_articles_command(args: argparse.Namespace) -> int:
    from homefeed.errors import CommandError
    from serving.article_sync import read_articles_file, read_articles_table, send_articles
    from serving.query import ServiceError

    if args.project and not args.dataset:
        raise ValueError("--project needs --dataset")
    if args.articles:
        rows = read_articles_file(args.articles, args.since)
    else:
        rows = read_articles_table(args.project, args.dataset, args.table, args.since, args.endpoint)
    token = args.write_token or os.environ.get(TOKEN_ENV)
    try:
        result = send_articles(args.service, rows, token=token, timeout_s=args.timeout)
    except ServiceError as error:  # unreachable, or refused (401/403/413...): one line, no traceback
        raise CommandError(str(error)) from None
    print(f"{result['accepted']} of {len(rows)} listings accepted by {args.service}; {len(result['rejected'])} rejected")
    for item in result["rejected"][:20]:
        print(f"  row {item['index']}: {item['reason']}", file=sys.stderr)
    return 0 if not result["rejected"] else 1
