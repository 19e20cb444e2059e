"""The publish task's library side: one model directory from the pipeline's artifacts, the gated
publish, and the Markdown report the KFP UI shows.

    publish_artifacts(model, evaluation, index, examples, publish_root, config)  -> PublishDecision
    render_report(decision, publish_root)                                        -> Markdown text
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from components.publish.gate import FIGURES_KEY, figures_record
from components.publish.publish import PublishDecision, publish_model
from homefeed.config import PublishConfig
from homefeed.layout import extract_dir
from homefeed.layout import index_dir as index_layout
from homefeed.layout import model_dir as model_layout


def assemble_model_dir(
    model: str | os.PathLike, evaluation: str | os.PathLike, index: str | os.PathLike, target: str | os.PathLike
) -> Path:
    """MODEL_DIR as docs/architecture.md describes it, at `target`: the model artifact, the
    evaluation artifact's files beside it, and the index artifact as `index/`.

    When the evaluation is another model's (the held-out one, the model being the final fit on
    every view up to as_of), its `evaluation.json` gets `figures_of` (gate.figures_record): whose
    figures they are, and what the model published was trained on."""
    target = Path(target)
    shutil.copytree(model, target)
    for item in Path(evaluation).iterdir():
        destination = target / item.name
        shutil.copytree(item, destination) if item.is_dir() else shutil.copy2(item, destination)
    evaluation_file = target / model_layout.EVALUATION_FILE
    if evaluation_file.is_file():
        figures = json.loads(evaluation_file.read_text())
        manifest = json.loads((target / model_layout.MANIFEST_FILE).read_text())
        metrics_file = target / model_layout.METRICS_FILE
        fit = (json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}).get("fit")
        record = figures_record(str(manifest.get("model_version")), fit, figures)
        if record is not None:
            figures[FIGURES_KEY] = record
            evaluation_file.write_text(json.dumps(figures, indent=2) + "\n")
    if (target / index_layout.INDEX_DIR).exists():
        shutil.rmtree(target / index_layout.INDEX_DIR)
    shutil.copytree(index, target / index_layout.INDEX_DIR)
    return target


def publish_artifacts(
    model: str | os.PathLike,
    evaluation: str | os.PathLike,
    index: str | os.PathLike,
    examples: str | os.PathLike,
    publish_root: str | os.PathLike,
    config: PublishConfig,
) -> PublishDecision:
    """Publishes the pipeline's model + evaluation + index (with the extract's user histories)
    under `publish_root` if the gate lets it (components.publish.publish.publish_model).

    Raises:
      ValueError: an empty `publish_root`; IncompleteModelError and the rest as `publish_model`.
    """
    if not os.fspath(publish_root):
        raise ValueError("publish_root is empty: set the pipeline parameter publish_root (a local or mounted path)")
    with tempfile.TemporaryDirectory(prefix="homefeed-publish-") as tmp:
        assembled = assemble_model_dir(model, evaluation, index, Path(tmp) / "model")
        return publish_model(
            assembled, publish_root, config, user_histories=Path(examples) / extract_dir.USER_HISTORIES_FILE
        )


def render_report(decision: PublishDecision, publish_root: str | os.PathLike) -> str:
    """The task's Markdown report: the decision, its reason, and the recalls it compared."""
    lines = [
        f"# {'Published' if decision.published else 'Not published'}: `{decision.version}`",
        "",
        decision.reason,
        "",
        "| | recall@200 |",
        "| --- | --- |",
        f"| this model | {decision.recall_at_200:.4f} |",
        f"| floor | {decision.min_recall_at_200:.4f} |",
    ]
    if decision.previous_version is not None:
        previous = "unknown" if decision.previous_recall_at_200 is None else f"{decision.previous_recall_at_200:.4f}"
        lines.append(
            f"| published `{decision.previous_version}` (tolerance {decision.max_regression:.4f}) | {previous} |"
        )
    lines += ["", f"Publish root: `{publish_root}`"]
    if decision.published:
        lines.append(f"Serve it with `candidates serve --model {publish_root}`")
    return "\n".join(lines) + "\n"


def write_report(path: str | os.PathLike, decision: PublishDecision, publish_root: str | os.PathLike) -> None:
    """`render_report` written to `path` (the task's Markdown output)."""
    Path(path).write_text(render_report(decision, publish_root))
