"""The evaluate task's library side: evaluate a model artifact without changing it, and name the
figures for the KFP UI.

    evaluate_into(model, examples, out, page, config)  -> the evaluation dict
    ui_metrics(result)                                  -> {name: value} (baselines prefixed)
"""

from __future__ import annotations

import os
import shutil
import tempfile
from datetime import UTC
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
        result["test_views"] = test_view_times(examples)
        layout.write_json_atomic(working / layout.EVALUATION_FILE, result)
        for name in REPORT_FILES:
            shutil.copy2(working / name, out / name)
    shutil.copy2(out / layout.PREDICTIONS_PAGE_FILE, page)
    return result


def test_view_times(examples: str | os.PathLike) -> dict[str, Any]:
    """`{"first", "last", "count"}` of the extract's test views (ISO times; None without times): the
    publish gate does not credit a published model with recall on views it was trained on."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from homefeed import features
    from homefeed.layout import extract_dir

    path = Path(examples) / extract_dir.TRAINING_EXAMPLES_FILE
    names = pq.read_schema(path).names
    columns = [features.SPLIT] + ([features.VIEWED_AT] if features.VIEWED_AT in names else [])
    table = pq.read_table(path, columns=columns)
    test = table.filter(pc.equal(table.column(features.SPLIT), features.TEST_SPLIT))
    if features.VIEWED_AT not in names or test.num_rows == 0:
        return {"first": None, "last": None, "count": test.num_rows}
    bounds = pc.min_max(test.column(features.VIEWED_AT))
    first, last = (bounds[k].as_py() for k in ("min", "max"))

    def iso(value: Any) -> str | None:
        if value is None:
            return None
        return (value if value.tzinfo is not None else value.replace(tzinfo=UTC)).isoformat()

    return {"first": iso(first), "last": iso(last), "count": test.num_rows}


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
