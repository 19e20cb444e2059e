"""Reading the JSON records of the artifact directories (manifests, summaries, the publish record)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def read_json_object(path: str | os.PathLike, error: type[Exception], what: str = "") -> dict[str, Any]:
    """The JSON object in `path`.

    Raises:
      FileNotFoundError: `path` does not exist (callers that expect it say why it is missing).
      `error`: the file is not valid JSON or holds something other than an object (the message
        names `what` and the path).
    """
    label = f"{what} {path}" if what else str(path)
    try:
        value = json.loads(Path(path).read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as problem:
        raise error(f"{label} is not valid JSON: {problem}") from None
    if not isinstance(value, dict):
        raise error(f"{label} must hold a JSON object, not {type(value).__name__}")
    return value
