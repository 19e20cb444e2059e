"""Which split protocol an extract uses and its windows (docs/evaluation.md).

`time` (marketplace data, the default): train before `validation_from`, validation up to
`test_from`, test from it to as_of. `per-user`: each user's last view is test, the one before it
validation (MovieLens; `candidates import-movielens` asks for it in `dataset.json`).
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from homefeed import config as config_lib
from homefeed.config import ExtractConfig

LOG = logging.getLogger(__name__)


def dataset_split(events_path: str | Path) -> str:
    """The split protocol the input's `dataset.json` (beside the events file, as `candidates
    sample-data` and `candidates import-movielens` write it) asks for under `source.split`; "time"
    (marketplace data) when there is none or it names none.

    Raises:
      ValueError: the file is not JSON, or names an unknown protocol.
    """
    from homefeed.sample.marketplace import DATASET_FILE

    path = Path(events_path).parent / DATASET_FILE
    if not path.exists():
        return config_lib.TIME_SPLIT
    try:
        source = json.loads(path.read_text()).get("source") or {}
    except (ValueError, AttributeError) as error:
        raise ValueError(f"{path}: not a JSON object ({error})") from None
    split = source.get("split", config_lib.TIME_SPLIT) if isinstance(source, dict) else config_lib.TIME_SPLIT
    if split not in config_lib.SPLIT_PROTOCOLS:
        raise ValueError(f"{path}: source.split is {split!r}, not one of {config_lib.SPLIT_PROTOCOLS}")
    LOG.info("split protocol %r, as %s asks", split, path)
    return split


def split_protocol(config: ExtractConfig, as_of: datetime) -> dict[str, Any]:
    """How the examples are split (recorded in extract_summary.json as `split`; the evaluation reads
    it): `{"protocol": "time", "validation_from", "test_from", "test_to"}` (ISO timestamps: train
    before validation_from, validation up to test_from, test from it to as_of, inclusive) or
    `{"protocol": "per-user"}`."""
    protocol = config.split or config_lib.TIME_SPLIT
    if protocol != config_lib.TIME_SPLIT:
        return {"protocol": protocol}
    test_from = as_of - timedelta(days=config.test_days)
    return {
        "protocol": protocol,
        "validation_from": (test_from - timedelta(days=config.validation_days)).isoformat(),
        "test_from": test_from.isoformat(),
        "test_to": as_of.isoformat(),
    }
