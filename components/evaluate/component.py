"""Kubeflow component: offline evaluation (a thin wrapper over `trainer.evaluation.evaluate.evaluate_model`)."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model, Output

from components.image import DEFAULT_IMAGE


# KFP reads named outputs from a NamedTuple("Name", [...]) return annotation, made in the
# annotation itself (the component's source runs alone in its container); mypy takes no call there.
@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def evaluate(
    model: Input[Model],
    examples: Input[Dataset],
    example_age: str,
    publish_root: str,
    evaluation: Output[Artifact],
    metrics: Output[Metrics],
    recall_plot: Output[HTML],
) -> NamedTuple("EvaluateOutputs", [("recall_at_200", float)]):  # type: ignore[valid-type]
    """Recall@K and NDCG on the test split, model vs the baselines, and the output viewer.

    Writes `evaluation.json`, `evaluation.png` and `predictions.html` into the `evaluation`
    directory (the model artifact is an input and stays as it was), the scalar metrics to
    `metrics` (shown in the KFP UI; baselines prefixed with their name) and the page made by
    `trainer.evaluation.predictions.render_html` (figures, recall plot, sample users' last views and top
    candidates) to `recall_plot`. `example_age`: "examples" feeds each test example's own age (a
    replay of the moment of the view), "serving" the age the service sends; see EvaluateConfig.
    `publish_root`: where the published version lives (empty: none); it is re-run on the same test
    views, so the publish gate compares the two models pairwise.
    """
    import logging
    from collections import namedtuple

    from components import runtime

    stage = runtime.start("evaluate")
    from components.evaluate.evaluate_into import evaluate_into, fit_description, ui_metrics
    from components.publish.publish import latest_model_dir
    from homefeed.config import EvaluateConfig

    published = None
    if publish_root:
        try:
            published = latest_model_dir(publish_root)
        except ValueError as error:  # a URL: the gate then compares stored figures and says so
            logging.getLogger(__name__).warning("the published model is not re-run: %s", error)
    result = evaluate_into(
        model.path,
        examples.path,
        evaluation.path,
        recall_plot.path,
        EvaluateConfig(example_age=example_age),
        published_model_dir=published,
    )
    for name, value in ui_metrics(result).items():
        metrics.log_metric(name, value)
    metrics.metadata["example_age"] = example_age
    metrics.metadata["split"] = result["split"]
    metrics.metadata["fit"] = fit_description(result)
    metrics.log_metric("seconds", stage.seconds)
    recall = result["model"]["recall@200"]
    evaluation.metadata.update({"model_version": result["model_version"], "recall@200": recall})
    EvaluateOutputs = namedtuple("EvaluateOutputs", ["recall_at_200"])
    return EvaluateOutputs(float(recall))
