"""Does a title say anything about who opens it, beyond its category? (the generated churn world)

    .venv/bin/python benchmarks/title_signal.py                                  # preset and benchmark sizes, taste 0 and 0.8
    .venv/bin/python benchmarks/title_signal.py --users 2000 --articles 128000 --type-taste 0 0.8

The statistic is homefeed/sample/stats.py `type_repeat`: how often a view's product type (the
title's noun) is the type of the user's previous view in that category, against types shuffled
within the category. Lift ~1: the title carries nothing about the user beyond the category. `sample-data --churn` draws users' taste for types with
`type_taste` (homefeed/sample/marketplace.py); 0: users have no taste for types, a title's noun is drawn uniformly within its category.
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--users", type=int, nargs="+", default=[1000, 2000], help="world sizes (paired with --articles)"
    )
    parser.add_argument("--articles", type=int, nargs="+", default=[8000, 128_000])
    parser.add_argument("--type-taste", type=float, nargs="+", default=[0.0, 0.8])
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    if len(args.users) != len(args.articles):
        parser.error("--users and --articles need as many values each (one world per pair)")
    from homefeed.sample.marketplace import churn_config, generate
    from homefeed.sample.stats import type_repeat

    for users, articles in zip(args.users, args.articles):
        for taste in args.type_taste:
            events, table = generate(churn_config(users=users, articles=articles, type_taste=taste, seed=args.seed))
            row = {"users": users, "articles": articles, "type_taste": taste, **type_repeat(events, table)}
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
