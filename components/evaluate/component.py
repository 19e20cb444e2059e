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
    """Recall@K and NDCG on the eval split, model vs popularity.

    Writes `evaluation.json` and `evaluation.png` into the `evaluation` directory (the model
    artifact is an input and stays as it was), the scalar metrics to `metrics` (shown in the KFP
    UI) and the recall@K plot with a table to `recall_plot`. `example_age`: "examples" feeds each
    eval example's own age (a replay of the moment of the view), "serving" the age the service
    sends (what a user gets now); see EvaluateConfig.
    """
    import base64
    import html
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
        for name in (layout.EVALUATION_FILE, layout.EVALUATION_PLOT_FILE):
            shutil.copy2(working / name, out / name)

    ours, popular = result["model"], result["popularity"]
    for name, value in ours.items():
        metrics.log_metric(name, value)
    for name, value in popular.items():
        metrics.log_metric(f"popularity_{name}", value)
    metrics.log_metric("num_users", result["num_users"])
    metrics.metadata["example_age"] = example_age
    metrics.log_metric("seconds", stage.seconds)
    evaluation.metadata.update({"model_version": result["model_version"], "recall@200": ours.get("recall@200")})

    picture = base64.b64encode((out / layout.EVALUATION_PLOT_FILE).read_bytes()).decode()
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{ours[name]:.4f}</td><td>{popular.get(name, float('nan')):.4f}</td></tr>"
        for name in ours
    )
    Path(recall_plot.path).write_text(
        "<html><body style='font-family: sans-serif'>"
        f"<h3>Model {html.escape(result['model_version'])} on {result['num_users']} eval users</h3>"
        f"<img alt='recall@K' src='data:image/png;base64,{picture}' style='max-width: 720px'/>"
        "<table border='1' cellpadding='4' style='border-collapse: collapse'>"
        f"<tr><th>metric</th><th>model</th><th>popularity</th></tr>{rows}</table>"
        f"<p>{result['targets_outside_corpus']} targets outside the corpus, "
        f"{result['targets_already_viewed']} already viewed (misses by definition).</p>"
        "</body></html>"
    )
    Outputs = namedtuple("EvaluateOutputs", ["recall_at_200"])
    return Outputs(float(ours["recall@200"]))
