"""Kubeflow component: train the two-tower model (a thin wrapper over `trainer.training.train.train_model`)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components.image import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def train(
    transformed: Input[Dataset],
    embedding_dim: int,
    output_dim: int,
    learning_rate: float,
    batch_size: int,
    epochs: int,
    temperature: float,
    early_stopping_patience: int,
    seed: int,
    overrides: dict,
    model: Output[Model],
    training_metrics: Output[Metrics],
    workers: int = 1,
):
    """TRANSFORM_DIR -> MODEL_DIR (docs/architecture.md) at `model.path`.

    `overrides` sets any other `homefeed.config.TrainConfig` field by name (e.g.
    `{"tower_units": [256, 128], "dropout": 0.1}`); unknown names are refused.

    `workers` > 1 trains data-parallel with that many worker processes on the task's machine
    (trainer/training/distributed.py; `batch_size` must split evenly over them). A task started
    with TF_CONFIG (as a Kubeflow Training Operator or deploy/training/ runs the image) is one
    worker of that cluster instead, and only its chief writes the model.
    """
    from components import runtime

    stage = runtime.start("train")
    from components.train.train_into import train_into
    from trainer.training.id_dropout_choice import train_config

    settings = {
        "embedding_dim": embedding_dim,
        "output_dim": output_dim,
        "learning_rate": learning_rate,
        "batch_size": batch_size,
        "epochs": epochs,
        "temperature": temperature,
        "early_stopping_patience": early_stopping_patience,
        "seed": seed,
    }
    clash = sorted(set(overrides or {}) & set(settings))
    if clash:
        raise ValueError(f"overrides {clash} are pipeline parameters of their own; set those instead")
    config = train_config({**settings, **dict(overrides or {})})

    result = train_into(transformed.path, model.path, config, workers)
    metrics = result.metrics
    training_metrics.log_metric("workers", metrics.get("workers", 1))
    if not result.manifest:  # a worker other than the chief: the chief's task reports the model
        return
    model.metadata.update(
        {
            "model_version": result.model_version,
            "num_articles": result.num_articles,
            "embedding_dim": result.manifest.get("embedding_dim"),
            "best_epoch": metrics.get("best_epoch"),
        }
    )
    training_metrics.metadata["fit"] = "+".join(metrics["fit"]["splits"])
    for name in ("best_validation_recall", "best_epoch", "epochs_run", "train_seconds", "num_train_examples"):
        if isinstance(metrics.get(name), (int, float)):
            training_metrics.log_metric(name, metrics[name])
    epochs_log = metrics.get("epochs") or []
    if epochs_log:
        training_metrics.log_metric("final_loss", epochs_log[-1]["loss"])
    training_metrics.log_metric("seconds", stage.seconds)


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def train_final(
    transformed: Input[Dataset],
    held_out: Input[Model],
    model: Output[Model],
    training_metrics: Output[Metrics],
    workers: int = 1,
):
    """The model to publish: TRANSFORM_DIR analysed over every split (`transform` with
    `analyze_splits="all"`) -> MODEL_DIR at `model.path`, trained on every view up to as_of with the
    held-out model's settings (`held_out`: its id dropout and best epoch, chosen on validation;
    `components.train.train_into.final_config`). Its test figures are the held-out model's.
    """
    from components import runtime

    stage = runtime.start("train-final")
    from components.train.train_into import final_config, train_into

    config = final_config(held_out.path)
    result = train_into(transformed.path, model.path, config, workers)
    metrics = result.metrics
    training_metrics.log_metric("workers", metrics.get("workers", 1))
    if not result.manifest:
        return
    fit = metrics["fit"]
    model.metadata.update(
        {
            "model_version": result.model_version,
            "num_articles": result.num_articles,
            "embedding_dim": result.manifest.get("embedding_dim"),
            "held_out_model_version": held_out.metadata.get("model_version"),
            "trained_through": fit.get("through"),
        }
    )
    training_metrics.metadata["fit"] = "+".join(fit["splits"])
    training_metrics.metadata["held_out"] = (
        "no: trained on every view up to as_of; its figures are the held-out model's"
    )
    for name in ("epochs_run", "train_seconds", "num_train_examples"):
        if isinstance(metrics.get(name), (int, float)):
            training_metrics.log_metric(name, metrics[name])
    training_metrics.log_metric("seconds", stage.seconds)
