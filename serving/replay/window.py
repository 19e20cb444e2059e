"""Holding traffic out of the input tables before the pipeline sees them.

Two ways (`hold_out`):

* `time` (marketplace data): everything after a cut T is held out. The pipeline gets the views and
  searches at or before T, the listings created at or before T, each as it stood at T (a listing
  sold after T is still up: its `status` active, `removed_at` null). The held-out window is a
  timeline of what happened after T, in time order: listings created (`create`), searches,
  views, listings sold or deleted (`remove`), each at its own time.
* `last-per-user` (MovieLens, whose evaluation holds out each user's last view): each user's last
  view is held out, the rest goes to the pipeline; the window is those views in time order.

Files written under `out_dir`: `events.parquet`, `articles.parquet` (and `searches.parquet`) for
the pipeline, `window.parquet` (the timeline: `at`, `kind`, `user_id`, `article_id`, `query`,
`title`, `category`, `region`, `created_at`, `status`) and `window.json` (what was cut where).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

LOG = logging.getLogger(__name__)

TIME, LAST_PER_USER = "time", "last-per-user"
HOLD_OUTS = (TIME, LAST_PER_USER)
CREATE, SEARCH, VIEW, REMOVE = "create", "search", "view", "remove"
# At one instant: a listing exists before it is viewed, and is viewed before it is taken down.
KIND_ORDER = {CREATE: 0, SEARCH: 1, VIEW: 2, REMOVE: 3}
WINDOW_FILE = "window.parquet"
WINDOW_SUMMARY_FILE = "window.json"
TIMELINE_COLUMNS = (
    "at",
    "kind",
    "user_id",
    "article_id",
    "query",
    "title",
    "category",
    "region",
    "created_at",
    "status",
)


@dataclass
class HeldOut:
    """What `hold_out` wrote. `cut`: the pipeline's as_of (ISO 8601 UTC; None for `last-per-user`,
    whose pipeline takes its as_of from the data)."""

    mode: str
    cut: str | None
    events_path: str
    articles_path: str
    searches_path: str | None
    window_path: str
    pre_views: int
    window_views: int
    window_searches: int
    window_creates: int
    window_removes: int

    def timeline(self) -> pd.DataFrame:
        return pd.read_parquet(self.window_path)


def _read(path: str | os.PathLike, what: str, columns: tuple[str, ...]) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--{what} {path}: no such file")
    frame = pd.read_parquet(path) if path.suffix != ".csv" else pd.read_csv(path)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: the {what} table has no column(s) {missing}; it has {list(frame.columns)}")
    for column in frame.columns:
        if column.endswith("_at"):
            frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame


def _write(frame: pd.DataFrame, path: Path) -> str:
    temporary = path.with_name(f".{path.name}.tmp")
    frame.to_parquet(temporary, index=False)
    os.replace(temporary, path)
    return str(path)


def _timeline(parts: list[pd.DataFrame]) -> pd.DataFrame:
    frame = pd.concat([p for p in parts if len(p)], ignore_index=True) if any(len(p) for p in parts) else None
    if frame is None:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in TIMELINE_COLUMNS})
    for column in TIMELINE_COLUMNS:
        if column not in frame.columns:
            frame[column] = None
    frame["_order"] = frame["kind"].map(KIND_ORDER)
    frame = frame.sort_values(["at", "_order"], kind="stable").drop(columns="_order").reset_index(drop=True)
    return frame[list(TIMELINE_COLUMNS)]


def default_cut(events: pd.DataFrame, window_days: float) -> pd.Timestamp:
    """`window_days` before the last view."""
    return events["viewed_at"].max() - pd.Timedelta(days=window_days)


def hold_out(
    events_path: str | os.PathLike,
    articles_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    searches_path: str | os.PathLike | None = None,
    mode: str = TIME,
    cut: str | None = None,
    window_days: float = 1.0,
) -> HeldOut:
    """Splits the input tables into the pipeline's part and the held-out window (module docstring).

    Args:
      cut: `time` only: T (ISO 8601 with offset); default `window_days` before the last view.

    Raises:
      FileNotFoundError: an input file is missing. ValueError: a column is missing, an unknown
      `mode`, or a cut that leaves no view on one side.
    """
    if mode not in HOLD_OUTS:
        raise ValueError(f"hold-out {mode!r} is not one of {list(HOLD_OUTS)}")
    events = _read(events_path, "events", ("user_id", "article_id", "viewed_at"))
    articles = _read(articles_path, "articles", ("article_id",))
    searches = _read(searches_path, "searches", ("user_id", "query", "searched_at")) if searches_path else None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    if mode == LAST_PER_USER:
        ordered = events.sort_values(["viewed_at", "article_id"], kind="stable")
        last = ordered.groupby("user_id").tail(1).index
        # A user with one view keeps it: nothing to answer them from.
        counts = ordered.groupby("user_id")["user_id"].transform("size")
        held = ordered.index.isin(last) & (counts.loc[ordered.index] > 1).to_numpy()
        pre_events, window_events = ordered[~held], ordered[held]
        pre_articles, pre_searches, cut_at = articles, searches, None
        parts = [
            window_events.assign(at=window_events["viewed_at"], kind=VIEW)[["at", "kind", "user_id", "article_id"]]
        ]
        creates = removes = pd.DataFrame()
        window_search_rows = pd.DataFrame()
    else:
        cut_at = pd.Timestamp(cut) if cut else default_cut(events, window_days)
        if cut_at.tzinfo is None:
            raise ValueError(f"--cut {cut}: give a time zone offset (e.g. 2026-05-31T00:00:00Z)")
        cut_at = cut_at.tz_convert("UTC")
        before = events["viewed_at"] <= cut_at
        pre_events, window_events = events[before], events[~before]
        if not len(pre_events) or not len(window_events):
            raise ValueError(
                f"cut {cut_at.isoformat()} leaves {len(pre_events)} views before it and {len(window_events)} after "
                f"(views run {events['viewed_at'].min().isoformat()} .. {events['viewed_at'].max().isoformat()})"
            )
        created = articles["created_at"] if "created_at" in articles else pd.Series(pd.NaT, index=articles.index)
        removed = articles["removed_at"] if "removed_at" in articles else pd.Series(pd.NaT, index=articles.index)
        # A listing without created_at counts as there from the start (MovieLens films without a date).
        known = created.isna() | (created <= cut_at)
        pre_articles = articles[known].copy()
        gone_later = pre_articles.index[(removed[known] > cut_at).to_numpy()]
        if "status" in pre_articles:
            pre_articles.loc[gone_later, "status"] = "active"
        if "removed_at" in pre_articles:
            pre_articles.loc[gone_later, "removed_at"] = pd.NaT
        fields = [c for c in ("article_id", "title", "category", "region", "created_at") if c in articles]
        born = articles[~known]
        creates = born[fields].assign(at=born["created_at"], kind=CREATE, status="active")
        gone = articles[removed.notna() & (removed > cut_at)]
        removes = gone[["article_id"]].assign(at=gone["removed_at"], kind=REMOVE, status=gone.get("status", "sold"))
        if "created_at" in creates:
            creates["created_at"] = creates["created_at"].map(lambda t: t.isoformat().replace("+00:00", "Z"))
        if searches is not None:
            later = searches["searched_at"] > cut_at
            pre_searches, window_search_rows = searches[~later], searches[later]
        else:
            pre_searches, window_search_rows = None, pd.DataFrame()
        parts = [
            creates,
            removes,
            window_events.assign(at=window_events["viewed_at"], kind=VIEW)[["at", "kind", "user_id", "article_id"]],
        ]
        if len(window_search_rows):
            parts.append(
                window_search_rows.assign(at=window_search_rows["searched_at"], kind=SEARCH)[
                    ["at", "kind", "user_id", "query"]
                ]
            )
    timeline = _timeline(parts)
    held = HeldOut(
        mode=mode,
        cut=None if cut_at is None else cut_at.isoformat().replace("+00:00", "Z"),
        events_path=_write(pre_events.reset_index(drop=True), out / "events.parquet"),
        articles_path=_write(pre_articles.reset_index(drop=True), out / "articles.parquet"),
        searches_path=None
        if pre_searches is None
        else _write(pre_searches.reset_index(drop=True), out / "searches.parquet"),
        window_path=_write(timeline, out / WINDOW_FILE),
        pre_views=int(len(pre_events)),
        window_views=int(len(window_events)),
        window_searches=int(len(window_search_rows)),
        window_creates=int(len(creates)),
        window_removes=int(len(removes)),
    )
    (out / WINDOW_SUMMARY_FILE).write_text(json.dumps(asdict(held), indent=2) + "\n")
    LOG.info(
        "held out %d views, %d searches, %d new and %d removed listings after %s; %d views go to the pipeline",
        held.window_views,
        held.window_searches,
        held.window_creates,
        held.window_removes,
        held.cut or "each user's last view",
        held.pre_views,
    )
    return held
