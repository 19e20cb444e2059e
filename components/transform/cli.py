"""`candidates transform`: a thin wrapper over `components.transform.job.run_transform`."""

from __future__ import annotations

import argparse
import logging

from homefeed.config import TransformConfig
from homefeed.config_flags import add_config_flags, config_from_args

EPILOG = """\
Any option not listed above is passed to Apache Beam unchanged, so other runners work as usual:
  candidates transform --examples gs://b/extract --out gs://b/transform --runner DataflowRunner \\
      --project P --region europe-west1 --temp_location gs://b/tmp --setup_file ./setup.py
Locally, DirectRunner runs on one core by default; --direct-num-workers 2 --direct-running-mode
multi_processing runs it on two (the outputs are the same as with one worker).

Writes TRANSFORM_DIR (docs/architecture.md): transform_fn/, transformed_metadata/,
{train,validation,test}/part-*.tfrecord.gz, corpus/articles.parquet, dead_letter/*.jsonl,
transform_summary.json and _SUCCESS (last). Malformed records go to dead_letter/ with the reason;
the command fails if the input is empty or no record is usable.
"""


class _BeamArgsParser(argparse.ArgumentParser):
    """Collects options it does not know into `beam_args` (Beam pipeline options) instead of failing.

    The top-level `candidates` parser calls `parse_known_args` on sub-command parsers; returning no
    extras keeps it from rejecting options meant for Beam. `check_beam_args` later refuses any that
    Beam does not know either, so a typo is still an error.
    """

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        namespace.beam_args = list(getattr(namespace, "beam_args", None) or []) + list(extras)
        return namespace, []


def check_beam_args(beam_args: list[str]) -> None:
    """Raises ValueError for an option that neither this command nor Beam knows (likely a typo)."""
    from apache_beam.options.pipeline_options import PipelineOptions  # heavy-ish: only when used

    known = set(PipelineOptions([]).get_all_options(drop_default=False))
    unknown = []
    for arg in beam_args:
        if arg.startswith("--"):
            name = arg[2:].split("=", 1)[0]
            if name.replace("-", "_") not in known:
                unknown.append(arg.split("=", 1)[0])
    if unknown:
        raise ValueError(
            f"unknown option(s) {unknown}: not a `candidates transform` option nor a Beam pipeline "
            "option (see `candidates transform --help`)"
        )


def _optional_int(text: str) -> int | None:
    return None if text.lower() in ("none", "0", "") else int(text)


# Help for the generated flags (homefeed/config_flags.py); the defaults are TransformConfig's.
FLAG_HELP = {
    "history_length": "keep this many most recent views of each history",
    "vocab_frequency_threshold": "article ids seen fewer times than this (train split) become OOV",
    "vocab_top_k": "keep at most this many most frequent article ids (0 or none: no cap)",
    "num_oov_buckets": "hash unknown values into this many ids after the vocabulary",
    "search_length": "the most recent queries used per example",
    "search_vocab_frequency_threshold": "search tokens seen fewer times than this (train split) are hashed instead",
    "search_oov_buckets": "hash buckets for rare or unseen search tokens",
    "analyze_splits": "build vocabularies and statistics on the train split (held-out model) or all splits "
    "(the model published after the held-out run: every view up to as_of)",
    "runner": "Beam runner (e.g. DataflowRunner, FlinkRunner, SparkRunner)",
    "direct_num_workers": "DirectRunner: parallel workers (0: one per core)",
    "direct_running_mode": "DirectRunner: how workers run (in_memory, multi_threading, multi_processing)",
    "batch_size": "rows per batch fed to TensorFlow (more: less CPU per row, more memory)",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "transform",
        help="TF Transform on Beam: training examples -> features + the transform graph",
        description=(
            "Builds the article/category/region vocabularies and the example-age statistics on the "
            "train split, transforms the train, validation and test splits with them, and exports the transform graph "
            "that the serving model runs."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--examples",
        required=True,
        metavar="EXTRACT_DIR",
        help="output directory of `candidates extract` (local or gs://)",
    )
    parser.add_argument(
        "--out",
        required=True,
        metavar="TRANSFORM_DIR",
        help="directory to write (local or gs://); must be new, empty or a failed output",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace a finished transform output at --out")
    add_config_flags(
        parser,
        TransformConfig,
        "transform settings",
        helps=FLAG_HELP,
        skip=("beam_args",),
        types={"vocab_top_k": _optional_int},
    )
    parser.set_defaults(handler=handle, beam_args=[])
    parser.__class__ = _BeamArgsParser  # subparsers.add_parser offers no way to pass a class


def handle(args: argparse.Namespace) -> int:
    from components.transform.job import run_transform  # heavy: Beam, TensorFlow

    if getattr(args, "verbose", 0) < 1:
        # Beam and TFT log every shard rename and batch-size guess at INFO; the job's own stage
        # logs say what happens. -v brings them back.
        for name in ("apache_beam", "tensorflow_transform"):
            logging.getLogger(name).setLevel(max(logging.getLogger().level, logging.WARNING))

    beam_args = list(getattr(args, "beam_args", None) or [])
    check_beam_args(beam_args)
    config = config_from_args(TransformConfig, args, beam_args=beam_args)
    summary = run_transform(args.examples, args.out, config, overwrite=args.overwrite)
    reasons = ", ".join(f"{r}: {n}" for r, n in summary["dead_lettered_by_reason"].items()) or "none"
    vocabs = ", ".join(f"{name} {size}" for name, size in summary["vocabulary_sizes"].items())
    print(
        f"transformed {summary['records_in']} examples -> "
        + ", ".join(f"{n} {split}" for split, n in summary["records_out"].items())
        + f"; dead-lettered {summary['dead_lettered']} ({reasons}); "
        f"vocabularies: {vocabs}; {summary['seconds']['total']:.1f} s; wrote {args.out}"
    )
    return 0
