"""CLI: `candidates experiment report` (serving/experiments/report.py)."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "experiment",
        help="online experiments: the report of an experiment's exposures",
        description="Online experiments served with `candidates serve --experiment FILE`.",
    )
    commands = p.add_subparsers(dest="experiment_command", metavar="COMMAND")
    report = commands.add_parser(
        "report",
        help="per-arm views, shares and coverage with 95%% intervals against the control",
        description=(
            "Join the exposure log (Parquet files written by the service) with the views that followed: a view "
            "of a listing the user was shown within --window counts for the arm that showed it. Prints per arm "
            "users, exposures, views per user, the share of views from exposed candidates, the new-listing "
            "share and catalogue coverage, the differences against the control with 95%% bootstrap intervals "
            "over users, and a sample-ratio-mismatch check; --out also writes report.html, lift.png, report.json."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    report.add_argument("--exposures", required=True, metavar="DIR", help="the experiment's exposure_dir")
    report.add_argument(
        "--events", required=True, metavar="FILE", help="views: Parquet with user_id, article_id, viewed_at"
    )
    report.add_argument("--window", default="24h", help="how long after an exposure a view counts (s, m, h, d)")
    report.add_argument("--articles", metavar="FILE", help="articles.parquet (created_at): new-listing share, coverage")
    report.add_argument("--new-days", type=float, default=7.0, help="a listing is new this many days after created_at")
    report.add_argument("--control", help="the control arm (default: the popularity arm, else the first by name)")
    report.add_argument("--replicates", type=int, default=1000, help="bootstrap replicates")
    report.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    report.add_argument("--out", metavar="DIR", help="write report.html, lift.png and report.json here")
    report.set_defaults(handler=report_command)
    p.set_defaults(handler=lambda args: p.print_help() or 1)


def report_command(args: argparse.Namespace) -> int:
    from pathlib import Path

    import pandas as pd

    from serving.experiments.exposures import read_exposures
    from serving.experiments.report import build_report, format_report, parse_window, read_views, write_html

    if args.replicates < 100:
        raise ValueError(f"--replicates {args.replicates}: at least 100 for a 95% interval")
    window = parse_window(args.window)
    articles = None
    if args.articles:
        path = Path(args.articles)
        if not path.exists():
            raise FileNotFoundError(f"--articles {path} does not exist")
        articles = pd.read_parquet(path, columns=["article_id", "created_at"])
    report = build_report(
        read_exposures(args.exposures),
        read_views(args.events),
        window,
        articles,
        args.new_days,
        args.control,
        args.replicates,
        args.seed,
    )
    print(format_report(report))
    if args.out:
        print(f"\nwrote {write_html(Path(args.out), report)}")
    return 0
