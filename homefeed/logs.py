"""Logging set-up for the command line: one format, levels chosen by -v/-q, credentials masked."""

from __future__ import annotations

import logging
import os

from homefeed.redact import install_log_redaction


def configure_logging(verbosity: int = 0) -> None:
    """Log to stderr with timestamps; quieten TensorFlow's C++ start-up chatter."""
    level = logging.INFO if verbosity == 0 else logging.DEBUG if verbosity > 0 else logging.WARNING
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        force=True,
    )
    install_log_redaction()  # every line through this handler, uvicorn's and libraries' included
    # TensorFlow reads this at import time; set it before any stage imports TF. Level 3 also hides
    # the "failed call to cuInit" line every CPU-only machine prints; real TF failures still surface
    # as Python exceptions. -v keeps TF's own warnings.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1" if verbosity > 0 else "3")
    for noisy in ("absl", "apache_beam.runners", "tensorflow", "urllib3", "google.auth", "h5py", "faiss"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
