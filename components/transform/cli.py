"""`candidates transform`: a thin wrapper over `components.transform.job.run_transform`."""

from __future__ import annotations

import argparse
import logging

from homefeed import features

EPILOG = """\
Any option not listed above is passed to Apache Beam unchanged, so other runners work as usual:
  candidates transform --examples gs://b/extract --out gs://b/transform --runner DataflowRunner \\
      --project P --region europe-west1 --temp_location gs://b/tmp --setup_file ./setup.py
Locally, DirectRunner runs in this process; --direct-num-workers 2 --direct-running-mode
multi_processing spreads it over processes.

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

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
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
    parser.add_argument("--examples", required=True, metavar="EXTRACT_DIR",
                        help="output directory of `candidates extract` (local or gs://)")
    parser.add_argument("--out", required=True, metavar="TRANSFORM_DIR",
                        help="directory to write (local or gs://); must be new, empty or a failed output")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a finished transform output at --out")
    parser.add_argument("--runner", default="DirectRunner",
                        help="Beam runner (default: %(default)s; e.g. DataflowRunner, FlinkRunner, SparkRunner)")
    parser.add_argument("--history-length", type=int, default=features.HISTORY_LENGTH, metavar="H",
                        help="keep the H most recent views of each history (default: %(default)s)")
    parser.add_argument("--vocab-frequency-threshold", type=int,
                        default=features.VocabularyDefaults.frequency_threshold, metavar="N",
                        help="article ids seen fewer than N times (train split) become OOV "
                             "(default: %(default)s)")
    parser.add_argument("--vocab-top-k", type=_optional_int, default=features.VocabularyDefaults.top_k,
                        metavar="K",
                        help="keep at most the K most frequent article ids (0 or none: no cap; default: no cap)")
    parser.add_argument("--num-oov-buckets", type=int, default=features.VocabularyDefaults.num_oov_buckets,
                        metavar="B",
                        help="hash unknown values into B ids after the vocabulary (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=4096, metavar="ROWS",
                        help="rows per batch fed to TensorFlow (default: %(default)s)")
    parser.add_argument("--direct-num-workers", type=int, default=1, metavar="N",
                        help="DirectRunner: parallel workers, 0 = one per core (default: %(default)s)")
    parser.add_argument("--direct-running-mode", default="in_memory",
                        choices=("in_memory", "multi_threading", "multi_processing"),
                        help="DirectRunner: how workers run (default: %(default)s)")
    parser.set_defaults(handler=handle, beam_args=[])
    parser.__class__ = _BeamArgsParser  # subparsers.add_parser offers no way to pass a class


def handle(args: argparse.Namespace) -> int:
    from components.transform.job import run_transform  # heavy: Beam, TensorFlow
    from homefeed.config import TransformConfig

    if getattr(args, "verbose", 0) < 1:
        # Beam and TFT log every shard rename and batch-size guess at INFO; the job's own stage
        # logs say what happens. -v brings them back.
        for name in ("apache_beam", "tensorflow_transform"):
            logging.getLogger(name).setLevel(max(logging.getLogger().level, logging.WARNING))

    beam_args = list(getattr(args, "beam_args", None) or [])
    check_beam_args(beam_args)
    config = TransformConfig(
        history_length=args.history_length,
        vocab_frequency_threshold=args.vocab_frequency_threshold,
        vocab_top_k=args.vocab_top_k,
        num_oov_buckets=args.num_oov_buckets,
        runner=args.runner,
        direct_num_workers=args.direct_num_workers,
        direct_running_mode=args.direct_running_mode,
        batch_size=args.batch_size,
        beam_args=beam_args,
    )
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
