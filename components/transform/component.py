"""Kubeflow component: the TF Transform job on Beam (a thin wrapper over `components.transform.job`)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Output

from components.image import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def transform(
    examples: Input[Dataset],
    history_length: int,
    vocab_frequency_threshold: int,
    vocab_top_k: int,
    runner: str,
    direct_num_workers: int,
    beam_args: list[str],
    transformed: Output[Dataset],
    summary: Output[Metrics],
    analyze_splits: str = "train",
):
    """EXTRACT_DIR -> TRANSFORM_DIR (docs/architecture.md) at `transformed.path`.

    `runner` is any Beam runner (DirectRunner here; DataflowRunner, FlinkRunner, SparkRunner with
    their options in `beam_args`); `direct_num_workers` and `direct_running_mode` apply to the
    DirectRunner only. `vocab_top_k` 0 means no cap. `analyze_splits`: "train" builds the
    vocabularies and statistics on the train split (the held-out model), "all" on every split (the
    model published after the held-out run).
    """
    from components import runtime

    stage = runtime.start("transform")
    from components.transform.job import run_transform
    from homefeed.config import TransformConfig

    config = TransformConfig(
        history_length=history_length,
        vocab_frequency_threshold=vocab_frequency_threshold,
        vocab_top_k=vocab_top_k or None,
        runner=runner,
        direct_num_workers=direct_num_workers,
        beam_args=list(beam_args),
        analyze_splits=analyze_splits,
    )
    result = run_transform(examples.path, transformed.path, config)

    transformed.metadata.update(
        {
            "records_out": result["records_out"],
            "vocabulary_sizes": result["vocabulary_sizes"],
            "runner": runner,
            "analyzed_splits": analyze_splits,
        }
    )
    summary.log_metric("records_in", result["records_in"])
    for split, count in result["records_out"].items():
        summary.log_metric(f"records_out_{split}", count)
    summary.log_metric("dead_lettered", result["dead_lettered"])
    for name, size in result["vocabulary_sizes"].items():
        summary.log_metric(f"vocabulary_size_{name}", size)
    summary.log_metric("seconds", stage.seconds)
