"""What every component body does first: log in one tagged format, and time its work.

Component bodies run in a fresh Python (a pod, or a kfp.local subprocess) where KFP's executor has
set up its own logging; `start()` replaces it so the library's log lines show with the stage's name
and the `[homefeed]` tag that `candidates pipeline run-local` echoes as progress.
"""

import logging
import os
import time

TAG = "[homefeed]"


class Stage:
    """A running stage: `seconds` since `start()` (recorded in each component's metrics)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._started = time.monotonic()
        self.log = logging.getLogger(f"components.{name}")

    @property
    def seconds(self) -> float:
        return round(time.monotonic() - self._started, 3)


def start(name: str) -> Stage:
    """Configure logging for a component process and start its clock."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(
        level=logging.INFO,
        format=f"{TAG} %(asctime)s {name} %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        force=True,
    )
    for noisy in ("absl", "apache_beam", "tensorflow", "urllib3", "google.auth", "h5py", "kfp", "faiss"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    stage = Stage(name)
    stage.log.info("%s started", name)
    return stage
