"""What the fault tests share besides fixtures (conftest.py): how they serve and publish."""

from __future__ import annotations

from pathlib import Path

from components.publish.publish import publish_model
from homefeed.config import PublishConfig

SERVE_FLAGS = ("--no-watch", "--reload-min-interval", "0")  # reloads only when a test asks, at once


def publish(model_dir: Path, root: Path) -> None:
    """`model_dir` published into `root` by the real publisher (a gate any model passes)."""
    decision = publish_model(
        model_dir,
        root,
        PublishConfig(min_recall_at_200=0.1, max_regression=1.0),
        user_histories=model_dir / "user_histories.parquet",
    )
    assert decision.published, decision.reason
