"""Kubeflow component: the gated publish (a thin wrapper over `serving.publish.publish_model`)."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Markdown, Metrics, Model, Output

from components.image import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def publish(
    model: Input[Model],
    evaluation: Input[Artifact],
    index: Input[Artifact],
    examples: Input[Dataset],
    publish_root: str,
    min_recall_at_200: float,
    max_regression: float,
    decision: Output[Metrics],
    report: Output[Markdown],
) -> NamedTuple("PublishOutputs", [("published", bool), ("version", str), ("reason", str)]):
    """Assembles model + evaluation + index + user histories and publishes them if the gate passes.

    A model that fails the gate ends the task green with `published = 0` and the reason in the
    metrics and the report; a half-written model fails the task (it must never go live).
    """
    import shutil
    import tempfile
    from collections import namedtuple
    from pathlib import Path

    from components import runtime

    stage = runtime.start("publish")
    from homefeed import features
    from homefeed.config import PublishConfig
    from serving import publish as publishing

    if not publish_root:
        raise ValueError("publish_root is empty: set the pipeline parameter publish_root (a local or mounted path)")
    config = PublishConfig(min_recall_at_200=min_recall_at_200, max_regression=max_regression)
    with tempfile.TemporaryDirectory(prefix="homefeed-publish-") as tmp:
        # One model directory as docs/architecture.md describes it: model + evaluation + index/.
        assembled = Path(tmp) / "model"
        shutil.copytree(model.path, assembled)
        for item in Path(evaluation.path).iterdir():
            target = assembled / item.name
            shutil.copytree(item, target) if item.is_dir() else shutil.copy2(item, target)
        if (assembled / publishing.INDEX_DIR).exists():
            shutil.rmtree(assembled / publishing.INDEX_DIR)
        shutil.copytree(index.path, assembled / publishing.INDEX_DIR)
        outcome = publishing.publish_model(
            assembled,
            publish_root,
            config,
            user_histories=Path(examples.path) / features.USER_HISTORIES_FILE,
        )

    decision.log_metric("published", 1.0 if outcome.published else 0.0)
    decision.log_metric("recall@200", outcome.recall_at_200)
    decision.log_metric("min_recall@200", outcome.min_recall_at_200)
    if outcome.previous_recall_at_200 is not None:
        decision.log_metric("published_recall@200", outcome.previous_recall_at_200)
    decision.metadata["reason"] = outcome.reason
    decision.metadata["version"] = outcome.version
    decision.metadata["publish_root"] = publish_root
    decision.log_metric("seconds", stage.seconds)
    stage.log.info("%s", outcome.reason)
    lines = [
        f"# {'Published' if outcome.published else 'Not published'}: `{outcome.version}`",
        "",
        outcome.reason,
        "",
        "| | recall@200 |",
        "| --- | --- |",
        f"| this model | {outcome.recall_at_200:.4f} |",
        f"| floor | {outcome.min_recall_at_200:.4f} |",
    ]
    if outcome.previous_version is not None:
        previous = "unknown" if outcome.previous_recall_at_200 is None else f"{outcome.previous_recall_at_200:.4f}"
        lines.append(f"| published `{outcome.previous_version}` (tolerance {outcome.max_regression:.4f}) | {previous} |")
    lines += ["", f"Publish root: `{publish_root}`"]
    if outcome.published:
        lines.append(f"Serve it with `candidates serve --model {publish_root}`")
    Path(report.path).write_text("\n".join(lines) + "\n")
    Outputs = namedtuple("PublishOutputs", ["published", "version", "reason"])
    return Outputs(outcome.published, outcome.version, outcome.reason)
