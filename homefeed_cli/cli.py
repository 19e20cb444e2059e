"""The `candidates` command line (`python -m homefeed_cli`).

Each stage owns a small `cli.py` with `register(subparsers)`; this module only collects them.
Those modules import heavy libraries (TensorFlow, Beam, FAISS) inside their handlers, so
`candidates --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from homefeed import __version__
from homefeed.errors import CommandError
from homefeed.logs import configure_logging
from homefeed.redact import redact

# Modules that add sub-commands, in the order a user runs the stages.
COMMAND_MODULES = (
    "homefeed.sample.cli",  # sample-data, import-movielens
    "components.extract.cli",  # extract
    "components.transform.cli",  # transform
    "trainer.cli",  # train, evaluate
    "components.build_index.cli",  # build-index
    "serving.cli",  # load-histories, serve, query
    "serving.live.cli",  # consume-events
    "serving.experiments.cli",  # experiment report
    "components.sync_articles.cli",  # sync-articles
    "pipeline.cli",  # pipeline compile | submit | run-local
    "serving.replay.cli",  # replay: the held-out window through the service vs the evaluation
)

DESCRIPTION = """\
Candidate generation for a home feed: picks the ~200 articles each user is most likely to open.

Stages, in order (each reads the previous one's output directory):
  sample-data / import-movielens   make input tables (events, articles) as Parquet
  extract                          BigQuery SQL -> training examples, user histories, corpus
  transform                        TF Transform on Beam -> features + the transform graph
  train / evaluate                 two-tower model -> SavedModel, article vectors, recall metrics
  build-index / serve / query      FAISS index and the HTTP candidate service
  experiment report                an online experiment's lift per arm (serve --experiment FILE)
  pipeline                         the same stages as one Kubeflow pipeline (compile, submit, run-local)
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="candidates",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 1
    configure_logging(-1 if args.quiet else args.verbose)
    try:
        result = args.handler(args)
    except (CommandError, FileNotFoundError, ValueError) as error:
        # Input problems: one readable line, naming what was wrong and where.
        logging.getLogger("candidates").debug("details", exc_info=True)
        print(f"candidates {args.command}: error: {redact(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":  # python -m homefeed_cli.cli (python -m homefeed_cli is the same)
    sys.exit(main())
