"""What the sample generator knows: each user's true preference over the listings (the oracle).

`candidates sample-data` writes `oracle.npz` beside the tables. It holds the parameters the
generator (homefeed/sample/marketplace.py) drew every view from, which no model can see:

  users:    `user_ids [U]`; `taste [U, C]` (preference over CATEGORIES, rows sum to 1); `home [U]`
            (home region, index into REGIONS); `type_preference [U, T]` (preference over the product
            types TYPES within each category, each category's part sums to 1; zeros when the world
            has no type taste)
  listings: `article_ids [A]`; `category`, `region`, `kind` (product type) `[A]` indices;
            `quality [A]`; `created_s`, `removed_s [A]` (seconds from the window start; removed_s
            +inf while up)
  world:    `start_s` (the window start, seconds since the epoch) and the settings that shape a draw:
            `home_region_share`, `other_region_weight`, `recency_days`, `stale_weight`, `type_taste`

`Oracle.scores(user, t)` is the probability the generator gives each listing of being the user's
view at time t, from those parameters alone: a session's region is the home region with
`home_region_share` (else one of the others), its category drawn from the taste; within that
(category, region) a listing is drawn in proportion to quality x recency (x `other_region_weight`
away from the region), or, with `type_taste`, first a product type from the user's preference and
then a listing of that type. Listings not live at t score 0. What it leaves out: the state of the
session in progress (its category and region, which a model can read from the last views), and
that a user never opens a listing twice (the evaluation excludes seen listings for every ranker).
Ranked by these scores, a test view's target is where the best ranker knowing the users' true
preferences would put it: the benchmarks report every figure also as a share of the oracle's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from homefeed.sample.world import CATEGORIES, REGIONS, TYPES

ORACLE_FILE = "oracle.npz"
SECONDS_PER_DAY = 86_400.0


def write_oracle(out_dir: str | os.PathLike, config: Any, latent: dict[str, Any]) -> str:
    """Writes `oracle.npz` under `out_dir` from `marketplace.generate(config, latent)`'s `latent`;
    returns its path. Written under a temporary name and renamed into place."""
    world = latent["world"]
    n_users = len(latent["taste"])
    arrays: dict[str, Any] = {
        "user_ids": np.asarray(latent["user_ids"], dtype=str),
        "taste": np.asarray(latent["taste"], np.float64),
        "home": np.asarray(latent["home"], np.int64),
        "type_preference": np.asarray(latent.get("type_preference", np.zeros((n_users, len(TYPES)))), np.float64),
        "article_ids": np.asarray(latent["article_ids"], dtype=str),
        "category": np.asarray(world.category, np.int64),
        "region": np.asarray(world.region, np.int64),
        "kind": np.asarray(world.kind, np.int64),
        "quality": np.asarray(world.quality, np.float64),
        "created_s": np.asarray(world.created, np.float64),
        "removed_s": np.asarray(world.removed, np.float64),
        "start_s": np.float64(latent["start"].value / 1e9),
        "home_region_share": np.float64(config.home_region_share),
        "other_region_weight": np.float64(config.other_region_weight),
        "recency_days": np.float64(config.recency_days),
        "stale_weight": np.float64(config.stale_weight),
        "type_taste": np.float64(config.type_taste),
    }
    out = Path(out_dir)
    temporary = out / f".{ORACLE_FILE}.tmp.npz"
    np.savez_compressed(temporary, **arrays)
    os.replace(temporary, out / ORACLE_FILE)
    return str(out / ORACLE_FILE)


@dataclass(frozen=True)
class Oracle:
    """The generator's parameters (see the module docstring), with the users and listings by id."""

    arrays: dict[str, np.ndarray]

    @classmethod
    def load(cls, path: str | os.PathLike) -> Oracle:
        """Reads `oracle.npz` (a file, or the sample-data directory holding it).

        Raises:
          FileNotFoundError: no oracle there (MovieLens imports and tables from elsewhere have none).
          ValueError: a field is missing or of the wrong shape.
        """
        path = Path(path)
        path = path / ORACLE_FILE if path.is_dir() else path
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no oracle (written by `candidates sample-data` only)")
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
        users, articles = len(arrays.get("user_ids", ())), len(arrays.get("article_ids", ()))
        shapes = {
            "taste": (users, len(CATEGORIES)),
            "home": (users,),
            "type_preference": (users, len(TYPES)),
            **dict.fromkeys(("category", "region", "kind", "quality", "created_s", "removed_s"), (articles,)),
        }
        for name, shape in shapes.items():
            if name not in arrays or arrays[name].shape != shape:
                got = None if name not in arrays else arrays[name].shape
                raise ValueError(f"{path}: {name} has shape {got}, expected {shape}")
        return cls(arrays)

    @property
    def article_ids(self) -> np.ndarray:
        return self.arrays["article_ids"]

    def user_index(self, user_ids) -> np.ndarray:
        """int64 index of each user id (-1: not a user of this world)."""
        lookup = {u: i for i, u in enumerate(self.arrays["user_ids"].tolist())}
        return np.array([lookup.get(str(u), -1) for u in user_ids], np.int64)

    def article_index(self, article_ids) -> np.ndarray:
        """int64 index of each article id (-1: not a listing of this world)."""
        lookup = {a: i for i, a in enumerate(self.article_ids.tolist())}
        return np.array([lookup.get(str(a), -1) for a in article_ids], np.int64)

    def scores(self, user: int, t_ms: float) -> np.ndarray:
        """float64 `[A]`: the probability of each listing being user `user`'s view at `t_ms` (ms since
        the epoch) by the generator's parameters; 0 for a listing not live then."""
        a = self.arrays
        t = t_ms / 1000.0 - float(a["start_s"])
        age = t - a["created_s"]
        live = (a["created_s"] <= t) & (t < a["removed_s"])
        recency = np.exp(-np.maximum(age, 0.0) / (float(a["recency_days"]) * SECONDS_PER_DAY)) + float(
            a["stale_weight"]
        )
        base = np.where(live, a["quality"] * recency, 0.0)
        n_regions, home = len(REGIONS), int(a["home"][user])
        share = float(a["home_region_share"])
        region_p = np.full(n_regions, (1.0 - share) / (n_regions - 1))
        region_p[home] = share
        type_taste = float(a["type_taste"])
        taste = a["taste"][user][a["category"]]
        preference = a["type_preference"][user][a["kind"]]
        out = np.zeros(len(base))
        for r in range(n_regions):
            w = base * np.where(a["region"] == r, 1.0, float(a["other_region_weight"]))
            by_category = np.bincount(a["category"], w, minlength=len(CATEGORIES))[a["category"]]
            by_kind = np.bincount(a["kind"], w, minlength=len(TYPES))[a["kind"]]
            with np.errstate(invalid="ignore", divide="ignore"):
                in_category = np.where(by_category > 0, w / by_category, 0.0)
                in_kind = np.where(by_kind > 0, w / by_kind, 0.0)
            out += region_p[r] * taste * ((1.0 - type_taste) * in_category + type_taste * preference * in_kind)
        return out
