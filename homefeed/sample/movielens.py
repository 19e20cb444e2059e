"""MovieLens 100K (`u.data`, `u.item`, `u.genre`) as the project's `events` and `articles` tables.

Mapping (a film is an article, a rating is a view):

* events: one row per line of `u.data` (`user \\t item \\t rating \\t unix seconds`), whatever the
  rating; `viewed_at` = the rating time (UTC).
* articles: one row per line of `u.item` (`id|title|release date|video release date|url|` then one
  0/1 flag per genre), `title` as given, `created_at` = the release date at 00:00 UTC (null when
  missing), `status` = `active`. There is no region: the column is left out, and the SQL stage
  reads it as `__missing__`.
* category: the film's first flagged genre in `u.genre` order (Action, Adventure, Animation, ...:
  the file's order, which is alphabetical after `unknown`). `unknown` only when no other genre is
  flagged. Many films have several genres; taking the first keeps one category per article and
  the rule is easy to reproduce.
* ids are zero-padded to the same width (at least 4 digits, more if the largest id needs it) so
  that text order is numeric order: user 42 -> "0042", item 7 -> "0007".

Malformed input raises ValueError naming the file and line; a missing file raises
FileNotFoundError naming its path. Nothing is written unless every line parsed.
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from homefeed.sample.marketplace import write_input_tables

LOG = logging.getLogger(__name__)

# The 19 genres of MovieLens 100K, in flag order; used when u.genre is absent.
STANDARD_GENRES: tuple[str, ...] = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
UNKNOWN_GENRE = "unknown"
ITEM_FIXED_FIELDS = 5  # id, title, release date, video release date, IMDb url
RELEASE_DATE_FORMAT = "%d-%b-%Y"  # 01-Jan-1995


def _lines(path: Path, encoding: str):
    """(line number, text) for each non-blank line; blank lines (e.g. a trailing one) are skipped."""
    if not path.is_file():
        raise FileNotFoundError(f"MovieLens file not found: {path}")
    with path.open("r", encoding=encoding, newline="") as handle:
        for number, raw in enumerate(handle, start=1):
            line = raw.rstrip("\r\n")
            if line.strip():
                yield number, line


def _integer(text: str, what: str, path: Path, number: int) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{path}, line {number}: {what} {text!r} is not an integer") from None


def read_genres(path: Path) -> list[str]:
    """Genre names in flag order from `u.genre` (`name|index` lines)."""
    by_index: dict[int, str] = {}
    for number, line in _lines(path, "latin-1"):
        fields = line.split("|")
        if len(fields) != 2:
            raise ValueError(f"{path}, line {number}: expected 'name|index' (2 fields), got {len(fields)}: {line!r}")
        index = _integer(fields[1], "genre index", path, number)
        if index in by_index:
            raise ValueError(f"{path}, line {number}: genre index {index} appears twice")
        by_index[index] = fields[0]
    if sorted(by_index) != list(range(len(by_index))):
        raise ValueError(f"{path}: genre indices must be 0..{len(by_index) - 1}, got {sorted(by_index)}")
    if not by_index:
        raise ValueError(f"{path}: no genres")
    return [by_index[i] for i in range(len(by_index))]


def read_items(path: Path, genres: list[str]) -> pd.DataFrame:
    """Films from `u.item` (latin-1) as integer `item`, `title`, `category`, `created_at`."""
    expected = ITEM_FIXED_FIELDS + len(genres)
    items, titles, categories, released = [], [], [], []
    seen: dict[int, int] = {}
    for number, line in _lines(path, "latin-1"):
        fields = line.split("|")
        if len(fields) != expected:
            raise ValueError(
                f"{path}, line {number}: expected {expected} '|'-separated fields "
                f"(id, title, release date, video release date, url, {len(genres)} genre flags), got {len(fields)}"
            )
        item = _integer(fields[0], "item id", path, number)
        if item in seen:
            raise ValueError(f"{path}, line {number}: item id {item} already on line {seen[item]}")
        seen[item] = number
        flags = fields[ITEM_FIXED_FIELDS:]
        if any(flag not in ("0", "1") for flag in flags):
            raise ValueError(f"{path}, line {number}: genre flags must be 0 or 1, got {'|'.join(flags)!r}")
        flagged = [genre for genre, flag in zip(genres, flags) if flag == "1"]
        named = [genre for genre in flagged if genre != UNKNOWN_GENRE]
        category = named[0] if named else UNKNOWN_GENRE
        date_text = fields[2].strip()
        if date_text:
            try:
                date = datetime.strptime(date_text, RELEASE_DATE_FORMAT).replace(tzinfo=UTC)
            except ValueError:
                raise ValueError(f"{path}, line {number}: release date {date_text!r} is not like 01-Jan-1995") from None
        else:
            date = None
        items.append(item)
        titles.append(fields[1].strip())
        categories.append(category)
        released.append(date)
    return pd.DataFrame(
        {
            "item": np.array(items, dtype=np.int64),
            "title": titles,
            "category": categories,
            "created_at": pd.to_datetime(pd.Series(released, dtype=object), utc=True).astype("datetime64[us, UTC]"),
        }
    )


def read_ratings(path: Path) -> pd.DataFrame:
    """Ratings from `u.data` (tab separated user, item, rating, unix seconds) as integer columns."""
    users, items, stamps = [], [], []
    for number, line in _lines(path, "latin-1"):
        fields = line.split("\t")
        if len(fields) != 4:
            raise ValueError(
                f"{path}, line {number}: expected 4 tab-separated fields (user, item, rating, timestamp), "
                f"got {len(fields)}: {line[:80]!r}"
            )
        users.append(_integer(fields[0], "user id", path, number))
        items.append(_integer(fields[1], "item id", path, number))
        try:
            float(fields[2])
        except ValueError:
            raise ValueError(f"{path}, line {number}: rating {fields[2]!r} is not a number") from None
        stamps.append(_integer(fields[3], "timestamp", path, number))
    return pd.DataFrame(
        {
            "user": np.array(users, dtype=np.int64),
            "item": np.array(items, dtype=np.int64),
            "seconds": np.array(stamps, dtype=np.int64),
        }
    )


def _padded(values: pd.Series, width: int) -> pd.Series:
    return values.map(lambda v: f"{v:0{width}d}").astype("str")


def _width(values: pd.Series) -> int:
    return max(4, len(str(int(values.max())))) if len(values) else 4


def load_movielens(src_dir: str | os.PathLike) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read MovieLens 100K from `src_dir` as `(events, articles)` frames in the input-table schema.

    Returns:
      events: `[n_ratings, 3]` user_id, article_id (str), viewed_at (datetime64[us, UTC]), in file order.
      articles: `[n_films, 6]` article_id, title, category, status (str), created_at
        (datetime64[us, UTC], NaT when the release date is missing), removed_at (always NaT),
        sorted by article_id.

    Raises:
      FileNotFoundError: `src_dir`, `u.data` or `u.item` is missing.
      ValueError: a malformed line (file and line number in the message), a negative id, or a
        rating of a film that `u.item` does not list.
    """
    src = Path(src_dir)
    if not src.is_dir():
        raise FileNotFoundError(f"MovieLens directory not found: {src}")
    genre_path = src / "u.genre"
    genres = read_genres(genre_path) if genre_path.exists() else list(STANDARD_GENRES)
    items = read_items(src / "u.item", genres)
    ratings = read_ratings(src / "u.data")

    for frame, column, path in (
        (ratings, "user", src / "u.data"),
        (ratings, "item", src / "u.data"),
        (items, "item", src / "u.item"),
    ):
        if len(frame) and frame[column].min() < 0:
            raise ValueError(f"{path}: negative {column} id {int(frame[column].min())}")
    unknown = ~ratings["item"].isin(items["item"])
    if unknown.any():
        first = int(np.flatnonzero(unknown.to_numpy())[0])
        raise ValueError(
            f"{src / 'u.data'}: {int(unknown.sum())} rating(s) of items missing from {src / 'u.item'}, "
            f"first: item {int(ratings['item'].iloc[first])}"
        )

    # One width for both id spaces keeps them visually alike; each only needs text = numeric order.
    width = max(_width(ratings["user"]), _width(ratings["item"]), _width(items["item"]))
    events = pd.DataFrame(
        {
            "user_id": _padded(ratings["user"], width),
            "article_id": _padded(ratings["item"], width),
            "viewed_at": pd.to_datetime(ratings["seconds"], unit="s", utc=True).astype("datetime64[us, UTC]"),
        }
    )
    articles = pd.DataFrame(
        {
            "article_id": _padded(items["item"], width),
            "title": items["title"].astype("str"),
            "category": pd.Series(items["category"], dtype="str"),
            "created_at": items["created_at"],
            "status": pd.Series(["active"] * len(items), dtype="str"),
            # Films are never taken down: every one stays a candidate.
            "removed_at": pd.Series(pd.NaT, index=items.index, dtype="datetime64[us, UTC]"),
        }
    )
    articles = articles.sort_values("article_id", ignore_index=True)
    LOG.info("read %d ratings and %d films from %s", len(events), len(articles), src)
    return events, articles


def import_movielens(src_dir: str | os.PathLike, out_dir: str | os.PathLike) -> dict[str, Any]:
    """Convert MovieLens 100K in `src_dir` into `events.parquet` and `articles.parquet` under `out_dir`.

    Returns the summary from `homefeed.sample.marketplace.write_input_tables` (counts, time span, paths).
    Raises as `load_movielens`; nothing is written when the input is malformed.
    """
    events, articles = load_movielens(src_dir)
    source = {
        "importer": "homefeed.sample.movielens",
        "src_dir": str(Path(src_dir).resolve()),
        # Published MovieLens comparisons hold each user's last view out (leave-last-out), not a
        # global time cut: the evaluation protocol this data set is compared under.
        "split": "per-user",
    }
    return write_input_tables(events, articles, out_dir, source=source)
