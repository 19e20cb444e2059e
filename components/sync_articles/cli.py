"""CLI: `candidates sync-articles` (a thin wrapper over components/sync_articles/sync.py).

Heavy imports (httpx, pandas, BigQuery) happen inside the handler.
"""

from __future__ import annotations

import argparse
import os
import sys

from serving.http.auth import WRITE_TOKEN_ENV as TOKEN_ENV  # the one owner of the name


def register(subparsers) -> None:
    _register_sync_articles(subparsers)


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
    from components.sync_articles.sync import read_articles_file, read_articles_table, send_articles
    from homefeed.errors import CommandError
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
    print(
        f"{result['accepted']} of {len(rows)} listings accepted by {args.service}; {len(result['rejected'])} rejected"
    )
    for item in result["rejected"][:20]:
        print(f"  row {item['index']}: {item['reason']}", file=sys.stderr)
    return 0 if not result["rejected"] else 1
