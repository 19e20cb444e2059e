"""Kubeflow component: offline evaluation (a thin wrapper over `trainer.evaluate.evaluate_model`)."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model, Output

from components.image import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def evaluate(
    model: Input[Model],
    examples: Input[Dataset],
    example_age: str,
    evaluation: Output[Artifact],
    metrics: Output[Metrics],
    recall_plot: Output[HTML],
) -> NamedTuple("EvaluateOutputs", [("recall_at_200", float)]):
    """Recall@K and NDCG on the test split, model vs the baselines, and the output viewer.

    Writes `evaluation.json`, `evaluation.png` and `predictions.html` into the `evaluation`
    directory (the model artifact is an input and stays as it was), the scalar metrics to
    `metrics` (shown in the KFP UI; baselines prefixed with their name) and the page made by
    `trainer.predictions.render_html` (figures, recall plot, sample users' last views and top
    candidates) to `recall_plot`. `example_age`: "examples" feeds each test example's own age (a
    replay of the moment of the view), "serving" the age the service sends; see EvaluateConfig.
    """
    import shutil
    import tempfile
    from collections import namedtuple
    from pathlib import Path

    from components import runtime

    stage = runtime.start("evaluate")
    from homefeed.config import EvaluateConfig
    from trainer import model_dir as layout
    from trainer.evaluate import evaluate_model

    config = EvaluateConfig(example_age=example_age)

    out = Path(evaluation.path)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="homefeed-evaluate-") as tmp:
        # evaluate_model writes next to the model; work on a copy so the input artifact is untouched.
        working = Path(tmp) / "model"
        shutil.copytree(model.path, working)
        result = evaluate_model(working, examples.path, config)
        for name in (layout.EVALUATION_FILE, layout.EVALUATION_PLOT_FILE, layout.PREDICTIONS_PAGE_FILE):
            shutil.copy2(working / name, out / name)
    shutil.copy2(out / layout.PREDICTIONS_PAGE_FILE, recall_plot.path)

    ours = result["model"]
    for name, value in ours.items():
        metrics.log_metric(name, value)
    for baseline, figures in result["baselines"].items():
        for name, value in figures.items():
            metrics.log_metric(f"{baseline}_{name}", value)
    metrics.log_metric("num_users", result["num_users"])
    metrics.metadata["example_age"] = example_age
    metrics.metadata["split"] = result["split"]
    fit = result.get("fit") or {}
    metrics.metadata["fit"] = f"{'+'.join(fit.get('splits', []))}, {fit.get('epochs')} epochs chosen on {fit.get('chosen_on')}"
    metrics.log_metric("seconds", stage.seconds)
    evaluation.metadata.update({"model_version": result["model_version"], "recall@200": ours.get("recall@200")})
    Outputs = namedtuple("EvaluateOutputs", ["recall_at_200"])
    return Outputs(float(ours["recall@200"]))
