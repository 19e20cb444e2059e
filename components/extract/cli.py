"""`candidates extract`: the SQL stage from the command line (a thin wrapper over extract.py)."""

from __future__ import annotations

import argparse
import json

from homefeed.config import ExtractConfig
from homefeed.config_flags import add_config_flags, config_from_args

DESCRIPTION = """\
Run the SQL stage (sql/*.sql) and write EXTRACT_DIR: training_examples.parquet,
user_histories.parquet, articles.parquet, extract_summary.json and _SUCCESS (written last; a
failed run leaves no output behind).

Where the tables come from:
  --events FILE --articles FILE      local default: Parquet or CSV files are loaded into a
                                     BigQuery emulator (bqemulator) started on a free loopback
                                     port; the same SQL runs there through the same client.
  ... --endpoint URL                 load the files into an emulator that is already running
  --endpoint URL --project P --dataset D
                                     tables already in that emulator
  --project P --dataset D            BigQuery itself, with application-default credentials
                                     (gcloud auth application-default login)

Cleaning (counted in extract_summary.json): events with a missing id or time are dropped,
exact duplicates (user, article, viewed_at) collapsed, events of unknown articles dropped, and
events dated after this machine's clock plus --max-clock-skew dropped (they cannot have happened
yet); as_of is never later than that either.
Searches (optional: --searches FILE, or --searches-table NAME): each training example gets the
user's --search-length most recent queries made strictly before its view, most recent first, and
each user history the latest ones; users who searched but viewed nothing get a history row too.
Blank queries are dropped and counted, queries over 512 characters cut. Without it, the outputs
are those of an extract without searches (recent_queries empty).
Split (--split): `time` (the default for marketplace data) cuts every user's views at the same
instants: train before T_val, validation in [T_val, T_test), test in [T_test, as_of], with
T_test = as_of - --test-days and T_val = T_test - --validation-days (one day each); the
evaluation replays the test window as the live service would have seen it. `per-user` holds out
each user's last view as test and the one before as validation (what `import-movielens` data asks
for in its dataset.json). An empty window stops the run, naming it and its bounds.
Missing columns, wrong types and empty tables stop the run with an error naming the table and
column.
"""

EPILOG = """\
examples:
  candidates extract --events data/events.parquet --articles data/articles.parquet --out work/extract
  candidates extract --events data/events.parquet --articles data/articles.parquet --searches data/searches.parquet --out work/extract
  candidates extract --events events.csv --articles articles.csv --out work/extract --as-of 2024-03-01
  candidates extract --project my-project --dataset homefeed --out work/extract --max-article-age-days 90
"""


# Flags generated from ExtractConfig (homefeed/config_flags.py): help here, defaults in the dataclass.
FLAGS = {"max_clock_skew_s": "--max-clock-skew"}
FLAG_HELP = {
    "project": "Google Cloud project holding the tables (local: the emulator's project)",
    "dataset": "dataset holding the tables",
    "events_table": "events table: TABLE, DATASET.TABLE or PROJECT.DATASET.TABLE",
    "articles_table": "articles table",
    "searches_table": "optional searches table (user_id, query, searched_at); none: no search signal",
    "search_length": "recent queries kept per example and user",
    "as_of": "cut-off, ISO 8601 (e.g. 2024-03-01 or 2024-03-01T12:00:00Z); none: the latest event, never today",
    "history_length": "views kept per history",
    "max_article_age_days": "corpus: only articles created within this many days before as_of (none: no limit)",
    "lookback_days": "ignore views older than this many days before as_of (none: keep all)",
    "location": "BigQuery location to run in, e.g. EU (none: BigQuery's choice)",
    "split": "time: a global time cut (train before T_val, validation [T_val, T_test), test [T_test, as_of]); "
    "per-user: each user's last view test, the one before validation (leave-last-out, as published MovieLens "
    "comparisons); none: what dataset.json beside --events asks for (import-movielens: per-user), else time",
    "test_days": "time split: the test window is the last this-many days up to as_of (T_test = as_of - N days)",
    "validation_days": "time split: the validation window is the this-many days before T_test",
    "max_clock_skew_s": "events dated more than this many seconds after the run's wall clock are counted and dropped as future",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "extract",
        help="BigQuery SQL -> training examples, user histories, candidate corpus",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--out", required=True, metavar="DIR", help="EXTRACT_DIR to write (replaced if it holds an earlier extract)"
    )
    local = parser.add_argument_group("local files")
    local.add_argument("--events", metavar="FILE", help="events as Parquet or CSV: user_id, article_id, viewed_at")
    local.add_argument(
        "--articles",
        metavar="FILE",
        help="articles as Parquet or CSV: article_id [, title, category, region, created_at, status, removed_at]",
    )
    local.add_argument(
        "--searches", metavar="FILE", help="optional searches as Parquet or CSV: user_id, query, searched_at"
    )
    local.add_argument(
        "--endpoint",
        metavar="URL",
        help="use the BigQuery emulator already running at URL (e.g. http://127.0.0.1:9050)",
    )
    add_config_flags(parser, ExtractConfig, "BigQuery tables and windowing", helps=FLAG_HELP, flags=FLAGS)
    parser.add_argument("--json", action="store_true", help="print the summary as JSON instead of text")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from google.api_core import exceptions as google_exceptions

    from components.extract import extract, warehouse
    from homefeed import lifetime
    from homefeed.errors import CommandError

    local = bool(args.events or args.articles)
    if local and not (args.events and args.articles):
        raise CommandError("give both --events and --articles (local files), or neither (BigQuery tables)")
    if args.searches and not local:
        raise CommandError(
            "--searches FILE goes with --events and --articles; for a BigQuery table use --searches-table"
        )
    if not local and not (hasattr(args, "project") and hasattr(args, "dataset")):
        raise CommandError(
            "say where the tables are: --events FILE --articles FILE (local), or --project P --dataset D "
            "(BigQuery, or an emulator with --endpoint)"
        )
    searches = {"searches_table": "searches"} if args.searches and not hasattr(args, "searches_table") else {}
    config = config_from_args(ExtractConfig, args, **searches)

    try:
        if local:
            # The emulator dies with this process whatever kills it; SIGTERM unwinds in order.
            with lifetime.children_die_with_me("candidates extract"):
                summary = extract.extract_local(
                    args.events, args.articles, args.out, config, endpoint=args.endpoint, searches_path=args.searches
                )
        elif args.endpoint:
            client = warehouse.emulator_client(args.endpoint, config.project)
            summary = extract.extract_bigquery(
                client, args.out, config, use_storage_api=False, source=f"emulator at {args.endpoint}"
            )
        else:
            from google.cloud import bigquery

            client = bigquery.Client(project=config.project, location=config.location)
            summary = extract.extract_bigquery(client, args.out, config, source=f"BigQuery project {config.project}")
    except google_exceptions.GoogleAPICallError as error:
        raise CommandError(f"BigQuery: {getattr(error, 'message', error)}") from error
    except RuntimeError as error:  # a query failed, or the emulator would not start
        raise CommandError(str(error)) from error
    except Exception as error:  # no credentials for real BigQuery
        if type(error).__name__ == "DefaultCredentialsError":
            raise CommandError(
                f"no Google Cloud credentials ({error}); run `gcloud auth application-default login`"
            ) from error
        raise
    print(json.dumps(summary.to_dict(), indent=2, sort_keys=True) if args.json else summary.describe())
    return 0
