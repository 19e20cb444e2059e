"""`candidates replay`: does the offline evaluation predict what the service answers? (serving/replay/run.py)"""

from __future__ import annotations

import argparse
from typing import Any

REPLAY_HELP = """\
Holds the views (and searches, new and removed listings) after a time cut out of the input tables,
runs `candidates pipeline run-local` on what came before, serves the published model, replays the
held-out window through HTTP in time order (each view answered with GET .../candidates?k=K, then
posted as a live event; listings created or removed upserted at their times; listing ages follow
the replayed events: `serve --listing-age-clock events`), and prints recall@K of the answers with a
95 % bootstrap interval over users beside the evaluation's own figure and interval. Docs:
docs/replay.md.

examples:
  candidates sample-data --churn --out data/churn
  candidates replay --events data/churn/events.parquet --articles data/churn/articles.parquet \\
      --searches data/churn/searches.parquet --workdir runs/replay-churn --label churn
  candidates replay --events ml/events.parquet --articles ml/articles.parquet \\
      --hold-out last-per-user --workdir runs/replay-ml --label movielens
"""


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "replay",
        help="hold out the last day, run the pipeline, replay it through the service, compare with the evaluation",
        description=REPLAY_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--events", required=True, metavar="PATH", help="events table (Parquet or CSV)")
    p.add_argument("--articles", required=True, metavar="PATH", help="articles table (Parquet or CSV)")
    p.add_argument("--searches", metavar="PATH", help="searches table (optional)")
    p.add_argument("--workdir", required=True, metavar="DIR", help="where the cut tables, the run and the logs go")
    p.add_argument(
        "--hold-out",
        choices=("time", "last-per-user"),
        default="time",
        help="time: everything after the cut (marketplace data); last-per-user: each user's last view "
        "(data evaluated under the per-user protocol, e.g. MovieLens) [time]",
    )
    p.add_argument("--cut", metavar="TIME", help="the cut, RFC 3339 (default: --window-days before the last view)")
    p.add_argument("--window-days", type=float, default=1.0, help="length of the held-out window [1]")
    p.add_argument("--k", type=int, action="append", help="cut-offs (repeatable) [50, 200]")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="pipeline parameter")
    p.add_argument("--label", default="data", help="the data set's name in the table and the results line")
    p.add_argument("--results", metavar="FILE", help="append the result as one JSON line here")
    p.set_defaults(handler=replay_command)


def replay_command(args: argparse.Namespace) -> int:
    parameters = {}
    for assignment in args.param:
        name, sep, value = assignment.partition("=")
        if not sep or not name:
            raise ValueError(f"--param {assignment!r}: expected NAME=VALUE")
        parameters[name] = value
    try:
        record = _run(args, parameters)
    except RuntimeError as error:  # the pipeline failed or published nothing, the service refused: one line
        from homefeed.errors import CommandError

        raise CommandError(str(error)) from error
    return 0 if all(row["agrees"] for row in record["comparison"].values()) else 1


def _run(args: argparse.Namespace, parameters: dict[str, str]) -> dict[str, Any]:
    from serving.replay.run import run_replay

    return run_replay(
        args.events,
        args.articles,
        args.workdir,
        searches=args.searches,
        mode=args.hold_out,
        cut=args.cut,
        window_days=args.window_days,
        parameters=parameters,
        ks=tuple(sorted(set(args.k or (50, 200)))),
        label=args.label,
        results=args.results,
    )
