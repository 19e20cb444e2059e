"""The CLI's log set-up: what a user sees on stderr at the default verbosity."""

from __future__ import annotations

import subprocess
import sys


def test_faiss_import_chatter_is_not_shown_at_the_default_level():
    # faiss logs at INFO which instruction-set builds it tried, with a ModuleNotFoundError repr for
    # each one the machine lacks: alarming noise at every `candidates serve` start.
    code = "from homefeed.logs import configure_logging; configure_logging(0); import faiss"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert "faiss.loader" not in result.stderr and "ModuleNotFoundError" not in result.stderr, result.stderr
