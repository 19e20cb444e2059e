"""`candidates sample-data`, `simulate-views` and `import-movielens`: make the input tables as Parquet.

Thin wrappers over `homefeed.sample.marketplace.write_sample_data` and `homefeed.sample.movielens.import_movielens`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

SAMPLE_DATA_HELP = """\
Simulate a second-hand marketplace feed and write its input tables:
  DIR/events.parquet    user_id, article_id, viewed_at   (one row per view)
  DIR/articles.parquet  article_id, title, category, region, created_at, status, removed_at
  DIR/dataset.json      counts, time span and the settings used

The simulated world: 12 categories (furniture, bikes, ...) and 8 regions. Listings have a
title ("Vintage oak desk"), a creation time spread over the window (some listed before it) and a
status; about 15% get sold and a few deleted, and nobody views a listing after that. Users have
tastes concentrated on a few categories and a home region they mostly browse. They browse in short
sessions that tend to stay in one category, and pick listings by quality (a few listings are very
popular) and freshness (most views come in the days after a listing appears). Each user opens a
listing at most once and has at least 3 views.

The window is the DAYS days before 2026-06-01T00:00Z, never today's date, and the same --seed always
gives the same files, so the data is learnable and reproducible: a personalised model beats
popularity on it. The defaults make a demo-sized world (about 48,000 views, a second to build);
--users 20000 makes about a million views.
"""

IMPORT_HELP = """\
Convert MovieLens 100K into the same input tables as `sample-data`:
  DIR/events.parquet    every rating is a view (user_id, article_id, viewed_at = rating time)
  DIR/articles.parquet  article_id, title, category = first flagged genre, created_at = release date
                        (missing -> null), status = active, removed_at = null; no region column
Ids are zero-padded (user 42 -> "0042") so text order is numeric order. Reads u.data, u.item
(latin-1) and u.genre (optional) from SRC_DIR. A malformed line is an error naming file and line;
nothing is written then. MovieLens is for research use: keep the output out of your repository.
"""


SAMPLE_DATA_OPTIONS = ("users", "articles", "days", "seed")  # SampleDataConfig fields set from flags


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def register(subparsers: Any) -> None:
    """Add `sample-data` and `import-movielens` to the `candidates` sub-commands."""
    sample = subparsers.add_parser(
        "sample-data",
        help="simulate a marketplace feed: events.parquet + articles.parquet",
        description=SAMPLE_DATA_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sample.add_argument("--out", required=True, metavar="DIR", help="output directory (created if missing)")
    # Defaults live in SampleDataConfig (None = keep them); the numbers in the help text are checked
    # against it by tests/homefeed/test_sample_data.py. Importing it here would pull in pandas.
    sample.add_argument("--users", type=_positive_int, help="number of users (default: 1000)")
    sample.add_argument("--articles", type=_positive_int, help="number of listings, at least 50 (default: 2000)")
    sample.add_argument("--days", type=_positive_int, help="length of the time window in days (default: 30)")
    sample.add_argument("--seed", type=int, help="random seed; same seed, same files (default: 42)")
    sample.add_argument(
        "--churn",
        action="store_true",
        help="fresh-content world: listings live about a day (then sold or deleted) and most views go "
        "to listings from the last hours; users look for kinds of items within a category (a cargo bike, "
        "not any bike), so a title says something about who opens it; 14 days, 8000 listings unless "
        "--days/--articles say otherwise "
        "(homefeed.sample.marketplace.CHURN_SETTINGS)",
    )
    sample.set_defaults(handler=run_sample_data)

    simulate = subparsers.add_parser(
        "simulate-views",
        help="simulated users answer an experiment's exposures: the views they make (events.parquet)",
        description=(
            "Read the exposure log of `candidates serve --experiment` and write the views the sample's users "
            "make after what they were shown (homefeed/sample/response.py: each user's taste over categories and "
            "home region, as in sample-data, and the rank of the listing). Feed the result to "
            "`candidates experiment report --events`."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    simulate.add_argument("--exposures", required=True, metavar="DIR", help="the experiment's exposure_dir")
    simulate.add_argument("--articles", required=True, metavar="FILE", help="articles.parquet (category, region)")
    simulate.add_argument("--out", required=True, metavar="FILE", help="views Parquet to write")
    simulate.add_argument("--seed", type=int, default=0, help="seed of the outcomes (users' tastes: --taste-seed)")
    simulate.add_argument("--taste-seed", type=int, default=42, help="seed of the users' preferences")
    simulate.add_argument("--base-rate", type=float, default=0.03, help="P(open) of an average listing at rank 1")
    simulate.set_defaults(handler=run_simulate_views)

    movielens = subparsers.add_parser(
        "import-movielens",
        help="convert MovieLens 100K (u.data, u.item) into events.parquet + articles.parquet",
        description=IMPORT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    movielens.add_argument("src", metavar="SRC_DIR", help="directory holding u.data, u.item (and u.genre)")
    movielens.add_argument("--out", required=True, metavar="DIR", help="output directory (created if missing)")
    movielens.set_defaults(handler=run_import_movielens)


def _print_summary(summary: dict[str, Any], seconds: float) -> None:
    statuses = ", ".join(f"{count:,} {status}" for status, count in summary["articles_by_status"].items())
    print(
        f"wrote {summary['events']:,} events by {summary['users']:,} users on {summary['articles_viewed']:,} "
        f"of {summary['articles']:,} articles ({statuses}) in {seconds:.1f}s"
    )
    print(f"  viewed_at: {summary['first_viewed_at']} .. {summary['last_viewed_at']}")
    print(f"  {summary['events_path']}")
    print(f"  {summary['articles_path']}")
    if summary.get("oracle_path"):
        print(f"  {summary['oracle_path']} (the generator's own user preferences: homefeed/sample/oracle.py)")


def run_sample_data(args: argparse.Namespace) -> int:
    from homefeed.sample.marketplace import (
        SampleDataConfig,
        churn_config,
        write_sample_data,
    )

    given = {name: getattr(args, name) for name in SAMPLE_DATA_OPTIONS if getattr(args, name) is not None}
    config = churn_config(**given) if getattr(args, "churn", False) else SampleDataConfig(**given)
    started = time.perf_counter()
    summary = write_sample_data(args.out, config)
    _print_summary(summary, time.perf_counter() - started)
    return 0


def run_simulate_views(args: argparse.Namespace) -> int:
    import pandas as pd

    from homefeed import atomic
    from homefeed.sample.response import ResponseConfig, ResponseModel, read_exposure_lists

    articles_path = Path(args.articles)
    if not articles_path.exists():
        raise FileNotFoundError(f"--articles {articles_path} does not exist")
    model = ResponseModel(
        pd.read_parquet(articles_path, columns=["article_id", "category", "region"]),
        ResponseConfig(seed=args.taste_seed, base_rate=args.base_rate),
    )
    exposures = read_exposure_lists(args.exposures)
    views = model.simulate(exposures, seed=args.seed)
    atomic.write_with(args.out, lambda temporary: views.to_parquet(temporary, index=False))
    print(
        f"wrote {len(views):,} views by {views['user_id'].nunique():,} of {exposures['user_id'].nunique():,} users to {args.out}"
    )
    return 0


def run_import_movielens(args: argparse.Namespace) -> int:
    from homefeed.sample.movielens import import_movielens

    started = time.perf_counter()
    summary = import_movielens(args.src, args.out)
    _print_summary(summary, time.perf_counter() - started)
    return 0
