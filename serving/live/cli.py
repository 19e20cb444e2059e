"""CLI of the live feed: `candidates consume-events` (a thin wrapper over serving/live/consumer.py).

Heavy imports (redis, httpx, pandas, BigQuery) happen inside the handlers.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading

from homefeed import features
from serving.store import DEFAULT_REDIS_PREFIX  # the history keys' owner (light: orjson only)

LOG = logging.getLogger(__name__)


def register(subparsers) -> None:
    _register_consume_events(subparsers)


def _register_consume_events(subparsers) -> None:
    from serving.live.consumer import DEFAULT_GROUP

    p = subparsers.add_parser(
        "consume-events",
        help="apply live views from a Redis Stream to the live history store",
        description=(
            "Read live views from a Redis Stream with a consumer group and store them where `candidates serve "
            "--redis-url` reads histories; acknowledge (XACK) each batch only after it is written. Producers only "
            'XADD entries: an `event` field holding the item JSON ({"user_id", "article_id", "viewed_at": '
            'RFC 3339, "event_id"?}) or those fields flat. After a crash, a restarted consumer with the same '
            "--consumer name re-processes what it had not acknowledged; any consumer of the group reclaims a dead "
            "one's entries after --claim-idle-ms (XAUTOCLAIM). Every event has an idempotency key (event_id, else "
            "viewed_at|article_id), so nothing is lost and nothing applied twice. Invalid entries go, with their "
            "reason, to the stream NAME:rejected. Stops cleanly on SIGTERM / Ctrl-C."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--redis-url",
        metavar="URL",
        default=os.environ.get("CANDIDATES_REDIS_URL") or os.environ.get("REDIS_URL"),
        help="e.g. redis://127.0.0.1:6379/0; default: CANDIDATES_REDIS_URL or REDIS_URL from the environment "
        "(where a URL with a password belongs: the command line is visible to every local user)",
    )
    p.add_argument("--stream", required=True, metavar="NAME", help="the stream producers XADD views to")
    p.add_argument("--group", default=DEFAULT_GROUP, help="consumer group name")
    p.add_argument(
        "--consumer",
        metavar="NAME",
        help="this consumer's name in the group (default: HOST-PID; keep it stable across restarts)",
    )
    p.add_argument("--redis-prefix", default=DEFAULT_REDIS_PREFIX, help="the service's --redis-prefix")
    p.add_argument(
        "--history-length", type=int, default=features.HISTORY_LENGTH, metavar="H", help="live views kept per user"
    )
    p.add_argument(
        "--model",
        metavar="DIR",
        help="model directory or publish root: reject views of articles neither in its corpus nor live (default: accept any id)",
    )
    p.add_argument("--batch-size", type=int, default=500, help="entries per read")
    p.add_argument("--block-ms", type=int, default=1000, help="how long one read waits for new entries")
    p.add_argument(
        "--claim-idle-ms", type=int, default=30_000, help="reclaim other consumers' entries pending this long"
    )
    p.add_argument(
        "--dead-letter-cap",
        type=int,
        default=100_000,
        help="keep about this many entries in STREAM:rejected (oldest trimmed first)",
    )
    p.add_argument(
        "--keep-consumed",
        action="store_true",
        help="keep entries every consumer group has acknowledged (default: delete them about once a second, "
        "so the stream holds only what is not yet consumed); for streams that other readers follow without a group",
    )
    p.add_argument(
        "--exit-when-idle", action="store_true", help="stop once the stream has nothing new (batch back-fills)"
    )
    p.set_defaults(handler=consume_events_command)


def _known_articles(model: str, redis_url: str, prefix: str):
    from serving.live.articles import RedisArticleLog
    from serving.versions import files as model_files

    model_dir = model_files.resolve_model_dir(model).model_dir
    corpus = set(model_files.read_article_ids(model_dir))
    live_log = RedisArticleLog(redis_url, prefix)

    def known(article_id: str) -> bool:
        return article_id in corpus or live_log.exists(article_id)

    LOG.info("accepting views of the %d articles of %s and of live listings", len(corpus), model_dir)
    return known


def consume_events_command(args: argparse.Namespace) -> int:
    from homefeed.errors import CommandError
    from serving.live.consumer import EventConsumer
    from serving.store import StoreUnavailableError

    if not args.redis_url:
        raise ValueError("no Redis: set --redis-url, or CANDIDATES_REDIS_URL / REDIS_URL in the environment")
    for name in ("batch_size", "block_ms", "history_length", "dead_letter_cap"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
    known = _known_articles(args.model, args.redis_url, args.redis_prefix) if args.model else None
    consumer = EventConsumer(
        args.redis_url,
        args.stream,
        group=args.group,
        consumer=args.consumer,
        history_prefix=args.redis_prefix,
        history_length=args.history_length,
        batch_size=args.batch_size,
        block_ms=args.block_ms,
        claim_idle_ms=args.claim_idle_ms,
        known_article=known,
        dead_letter_cap=args.dead_letter_cap,
        trim_consumed=not args.keep_consumed,
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
    print(
        f"{stats.read} entries read: {stats.applied} applied, {stats.duplicates} duplicate(s), {stats.rejected} rejected, {stats.claimed} reclaimed"
    )
    return 0
