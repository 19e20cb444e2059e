"""The experiment file of `candidates serve --experiment FILE` (YAML or JSON), as a typed config.

    name: new-model-vs-popular        # recorded in every exposure
    salt: 2026-12-homefeed            # assignment depends on it: a new salt reshuffles every user
    exposure_top_n: 50                # how many of each answer's ids an exposure records
    exposure_dir: /var/lib/homefeed/exposures   # optional: rolling Parquet files (serving/experiments/exposures.py)
    arms:
      - {name: control, model: popularity, share: 0.5}
      - {name: two-tower, model: /srv/publish/versions/20261201T0000, share: 0.5}

`model` is `popularity` (the popular-article list of the --model version, the control) or the
directory of a published model version; a relative path is taken from the file's own folder.
Shares are fractions of users and add up to 1. A bad file is refused with the file and the field.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

import pydantic
from pydantic import BaseModel, ConfigDict, Field, field_validator

POPULARITY = "popularity"
ARM_NAME_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"
SHARE_TOLERANCE = 1e-6


class ExperimentError(ValueError):
    """An experiment file that cannot be served: the message names the file and the field."""


class ArmConfig(BaseModel):
    """One arm: a name, what it serves, the share of users it gets."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    name: str = Field(pattern=ARM_NAME_PATTERN, description="arm name, in answers and exposures")
    model: str = Field(min_length=1, description="`popularity`, or a published model version directory")
    share: float = Field(gt=0, le=1, description="fraction of users assigned to this arm")

    @property
    def is_popularity(self) -> bool:
        return self.model == POPULARITY


class ExperimentConfig(BaseModel):
    """An experiment: arms with shares that add up to 1, and the salt of the user assignment."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=ARM_NAME_PATTERN)
    salt: str = Field(min_length=1, max_length=256)
    arms: list[ArmConfig] = Field(min_length=1, max_length=16)
    exposure_top_n: int = Field(50, ge=1, le=1000, description="ids per exposure record (the first N of the answer)")
    exposure_dir: Path | None = Field(None, description="where the rolling exposure Parquet files go; none: no log")

    @field_validator("arms")
    @classmethod
    def _distinct_names_shares_add_up(cls, arms: list[ArmConfig]) -> list[ArmConfig]:
        names = [arm.name for arm in arms]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"arm names must be distinct; repeated: {', '.join(repeated)}")
        total = math.fsum(arm.share for arm in arms)
        if abs(total - 1.0) > SHARE_TOLERANCE:
            shares = ", ".join(f"{arm.name}={arm.share:g}" for arm in arms)
            raise ValueError(f"arm shares must add up to 1, they add up to {total:g} ({shares})")
        return arms

    def arm(self, name: str) -> ArmConfig | None:
        return next((arm for arm in self.arms if arm.name == name), None)

    @property
    def shares(self) -> dict[str, float]:
        return {arm.name: arm.share for arm in self.arms}


def _where(location: tuple[Any, ...], data: Any) -> str:
    """`arms[1].share (arm 'b')` for a pydantic error location."""
    parts: list[str] = []
    for item in location:
        if isinstance(item, int):
            parts[-1:] = [f"{parts[-1] if parts else ''}[{item}]"]
        else:
            parts.append(str(item))
    where = ".".join(parts) or "(top level)"
    if len(location) >= 2 and location[0] == "arms" and isinstance(location[1], int):
        arms = data.get("arms") if isinstance(data, dict) else None
        if isinstance(arms, list) and location[1] < len(arms) and isinstance(arms[location[1]], dict):
            name = arms[location[1]].get("name")
            if name is not None:
                where += f" (arm {name!r})"
    return where


def parse_experiment(data: Any, source: str = "experiment") -> ExperimentConfig:
    """`data` (the file's parsed content) as an ExperimentConfig; ExperimentError names `source` and each field."""
    try:
        return ExperimentConfig.model_validate(data)
    except pydantic.ValidationError as error:
        problems = []
        for item in error.errors():
            message = re.sub(r"^Value error, ", "", item["msg"])
            problems.append(f"{_where(tuple(item['loc']), data)}: {message}")
        raise ExperimentError(f"{source}: " + "; ".join(problems)) from None


def load_experiment(path: str | os.PathLike) -> ExperimentConfig:
    """Reads an experiment file (`.json`, else YAML); relative model paths and exposure_dir are made
    absolute from the file's folder.

    Raises:
      ExperimentError: unreadable, not YAML/JSON, or a field out of place (file and field named).
    """
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ExperimentError(f"cannot read the experiment file {path}: {error}") from None
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as error:
        kind = "JSON" if path.suffix.lower() == ".json" else "YAML"
        raise ExperimentError(f"{path}: not valid {kind}: {error}") from None
    if not isinstance(data, dict):
        raise ExperimentError(f"{path}: expected a mapping with name, salt and arms, got {type(data).__name__}")
    config = parse_experiment(data, str(path))
    base = path.resolve().parent
    arms = [
        arm if arm.is_popularity else arm.model_copy(update={"model": str((base / arm.model).resolve())})
        for arm in config.arms
    ]
    exposure_dir = None if config.exposure_dir is None else (base / config.exposure_dir).resolve()
    return config.model_copy(update={"arms": arms, "exposure_dir": exposure_dir})
