"""Kubeflow component: the gated publish (a thin wrapper over `components.publish.publish.publish_model`)."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Markdown, Metrics, Model, Output

from components.image import DEFAULT_IMAGE


# KFP reads named outputs from a NamedTuple("Name", [...]) return annotation, made in the
# annotation itself (the component's source runs alone in its container); mypy takes no call there.
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
) -> NamedTuple("PublishOutputs", [("published", bool), ("version", str), ("reason", str)]):  # type: ignore[valid-type]
    """Assembles model + evaluation + index + user histories and publishes them if the gate passes.

    A model that fails the gate ends the task green with `published = 0` and the reason in the
    metrics and the report; a half-written model fails the task (it must never go live).
    """
    from collections import namedtuple

    from components import runtime

    stage = runtime.start("publish")
    from components.publish.publish_artifacts import publish_artifacts, write_report
    from homefeed.config import PublishConfig

    config = PublishConfig(min_recall_at_200=min_recall_at_200, max_regression=max_regression)
    outcome = publish_artifacts(model.path, evaluation.path, index.path, examples.path, publish_root, config)

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
    write_report(report.path, outcome, publish_root)
    PublishOutputs = namedtuple("PublishOutputs", ["published", "version", "reason"])
    return PublishOutputs(outcome.published, outcome.version, outcome.reason)
