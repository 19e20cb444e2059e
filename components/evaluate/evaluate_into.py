"""The evaluate task's library side: evaluate a model artifact without changing it, and name the
figures for the KFP UI.

    evaluate_into(model, examples, out, page, config)  -> the evaluation dict
    ui_metrics(result)                                  -> {name: value} (baselines prefixed)
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from homefeed.config import EvaluateConfig
from homefeed.layout import model_dir as layout

REPORT_FILES = (layout.EVALUATION_FILE, layout.EVALUATION_PLOT_FILE, layout.PREDICTIONS_PAGE_FILE)


def evaluate_into(
    model: str | os.PathLike,
    examples: str | os.PathLike,
    out: str | os.PathLike,
    page: str | os.PathLike,
    config: EvaluateConfig,
    published_model_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """`trainer.evaluation.evaluate.evaluate_model` on a copy of `model` (the input stays as it was).

    Writes `evaluation.json`, `evaluation.png` and `predictions.html` into the directory `out`
    and the page (`trainer.evaluation.predictions.render_html`'s output) also to the file `page`.
    `published_model_dir`: the published version, re-run on the same test views for the paired
    publish gate (components/publish/gate.py); None: nothing published.
    """
    from trainer.evaluation.evaluate import evaluate_model  # heavy: TensorFlow

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="homefeed-evaluate-") as tmp:
        working = Path(tmp) / "model"
        shutil.copytree(model, working)
        result = evaluate_model(working, os.fspath(examples), config, published_model_dir=published_model_dir)
        for name in REPORT_FILES:
            shutil.copy2(working / name, out / name)
    shutil.copy2(out / layout.PREDICTIONS_PAGE_FILE, page)
    return result


def ui_metrics(result: dict[str, Any]) -> dict[str, float]:
    """The scalar figures of an evaluation: the model's by name, each baseline's as `<baseline>_<name>`."""
    figures = dict(result["model"])
    for baseline, values in result["baselines"].items():
        figures.update({f"{baseline}_{name}": value for name, value in values.items()})
    figures["num_users"] = result["num_users"]
    return figures


def fit_description(result: dict[str, Any]) -> str:
    """`train+validation, 7 epochs chosen on validation`: how the evaluated model was fitted."""
    fit = result.get("fit") or {}
    return f"{'+'.join(fit.get('splits', []))}, {fit.get('epochs')} epochs chosen on {fit.get('chosen_on')}"
