"""Kubeflow component: build the FAISS index (a thin wrapper over `components.build_index.build.build_model_index`)."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from components.image import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def build_index(
    model: Input[Model],
    examples: Input[Dataset],
    index_type: str,
    recall_floor: float,
    index: Output[Artifact],
    index_metrics: Output[Metrics],
):
    """The model's article vectors -> an `index/` directory (docs/architecture.md) at `index.path`.

    `index_type`: auto | flat | hnsw | ivf. An approximate index is checked against exact search on
    real user vectors (from the extract's user histories) and refused below `recall_floor`.
    """
    from pathlib import Path

    from components import runtime

    stage = runtime.start("build-index")
    from components.build_index.build import build_model_index, recall_key
    from homefeed.config import IndexConfig
    from homefeed.layout import extract_dir

    config = IndexConfig(index_type=index_type, recall_floor=recall_floor)
    manifest = build_model_index(
        model.path,
        config,
        histories=Path(examples.path) / extract_dir.USER_HISTORIES_FILE,
        output_dir=index.path,
    )
    key = recall_key(manifest["k"])
    index.metadata.update(
        {"model_version": manifest["model_version"], "index_type": manifest["index_type"], key: manifest[key]}
    )
    index_metrics.log_metric(f"index_{key}_vs_exact", manifest[key])
    index_metrics.log_metric("n_articles", manifest["n_articles"])
    index_metrics.log_metric("build_seconds", manifest["build_seconds"])
    index_metrics.log_metric("seconds", stage.seconds)
