"""Per-article columns of a served model as flat arrays: ids (with the id -> row lookup), titles,
attributes. No Python object per article: at 10^6 articles a `list[str]` of ids and its `dict`
cost ~130 MB, and reading Python objects writes their reference counts, so forked workers would
each copy the pages; these arrays cost a few tens of MB, built once in the gunicorn master and
shared by its workers (serving/http/workers.py).

* `StringColumn`: row -> str (or None) from one UTF-8 blob and offsets. Columns with `keys` hold
  each value in a fixed-width unicode array (`<U w`, w <= `MAX_KEY_CHARS`); when every value fits
  (`exact`) that array is the column (no blob) and a batch of rows is read in one C call
  (`take`), as fast as indexing a list.
* `ArticleIds`: the ids, row = line of `article_ids.txt` = id in the index. `row_of` looks ids up
  by binary search over the keys in sorted order (`np.searchsorted`, vectorised in `rows`); ids
  longer than the keys (or ending in NUL) are compared in full, so any string works.
* `CodedColumn`: row -> one of a few values (category, region), int32 codes + the sorted values.

Python `str` objects are made only for the rows a request answers with.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, cast

import numpy as np

MAX_KEY_CHARS = 64  # wider ids are kept as prefixes plus the full UTF-8 (the keys grow 4 B per char)


def string_arrays(values: Sequence[str | None], keys: bool = False) -> dict[str, Any]:
    """The arrays of a `StringColumn` holding `values` (None allowed unless `keys`).

    `blob` (the UTF-8 values one after another) and `offsets` (`int64 [n + 1]`), `present` (bool,
    only when some value is None). With `keys`: `keys` (`<U w` in row order), `order` (rows
    sorted by value, ties by row), `sorted_keys` (= keys[order]) and `exact` (every value is its
    key; then there is no blob).
    """
    n = len(values)
    arrays: dict[str, Any] = {}
    exact = False
    missing = any(v is None for v in values)
    if keys:
        if missing:
            raise ValueError(f"keys=True needs a string in every row; row {list(values).index(None)} is None")
        key_values = cast(Sequence[str], values)  # no None, checked above
        width = max(map(len, key_values), default=1)
        exact = width <= MAX_KEY_CHARS and not any(v.endswith("\x00") for v in key_values)
    if not exact:  # the full values (the keys hold them all when exact)
        encoded = [v.encode("utf-8") if v is not None else b"" for v in values]
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.fromiter(map(len, encoded), dtype=np.int64, count=n), out=offsets[1:])
        arrays.update(blob=b"".join(encoded), offsets=offsets)
        del encoded
    if missing:
        arrays["present"] = np.fromiter((v is not None for v in values), dtype=bool, count=n)
    if keys:
        key_array = np.array(values, dtype=f"<U{max(1, min(width, MAX_KEY_CHARS))}")  # truncates longer values
        if exact:
            order = np.argsort(key_array, kind="stable")
        else:  # by the full value: the prefixes are then in order too
            order = np.array(sorted(range(n), key=lambda row: key_values[row]), dtype=np.int64)
        arrays.update(
            keys=key_array, order=order.astype(np.int64), sorted_keys=key_array[order], exact=np.array([exact])
        )
    return arrays


class StringColumn(Sequence):
    """row -> value (str, or None where `present` is False) over the arrays of `string_arrays`."""

    def __init__(self, arrays: dict[str, Any]):
        self._blob = arrays.get("blob")
        self._offsets = arrays.get("offsets")
        self._present = arrays.get("present")
        self._keys = arrays.get("keys")
        self._exact = self._keys is not None and bool(arrays["exact"][0])
        if self._keys is not None and self._exact:
            self._n = int(self._keys.shape[0])
        elif self._blob is not None and self._offsets is not None:
            self._n = int(self._offsets.shape[0]) - 1
        else:
            raise ValueError(f"a string column needs exact `keys` or `blob` and `offsets`; it has {sorted(arrays)}")

    @classmethod
    def from_values(cls, values: Sequence[str | None]) -> StringColumn:
        return cls(string_arrays(values))

    def __len__(self) -> int:
        return self._n

    def _value(self, row: int) -> str | None:
        if self._present is not None and not self._present[row]:
            return None
        if self._exact:
            assert self._keys is not None  # _exact means keys are there
            return str(self._keys[row])
        assert self._blob is not None and self._offsets is not None  # __init__ checks them unless _exact
        return str(self._blob[self._offsets[row] : self._offsets[row + 1]], "utf-8")

    def __getitem__(self, row):
        if isinstance(row, slice):
            return self.take(range(*row.indices(self._n)))
        row = int(row)
        if row < 0:
            row += self._n
        if not 0 <= row < self._n:
            raise IndexError(f"row {row} is outside the {self._n} articles")
        return self._value(row)

    def __iter__(self) -> Iterator[str | None]:
        for start in range(0, self._n, 65536):
            yield from self.take(np.arange(start, min(start + 65536, self._n)))

    def take(self, rows: Iterable[int] | np.ndarray) -> list[str | None]:
        """The values of `rows` (valid row numbers), in order: one call for a whole answer."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if self._exact:
            assert self._keys is not None  # _exact means keys are there
            values = self._keys[rows].tolist()
        else:
            blob = self._blob
            assert blob is not None and self._offsets is not None  # __init__ checks them unless _exact
            starts, ends = self._offsets[rows].tolist(), self._offsets[rows + 1].tolist()
            values = [str(blob[a:b], "utf-8") for a, b in zip(starts, ends)]
        if self._present is not None:
            present = self._present[rows].tolist()
            values = [v if p else None for v, p in zip(values, present)]
        return values


class ArticleIds(StringColumn):
    """The article ids in row order, with the id -> row lookup (`row_of`, `rows`)."""

    def __init__(self, arrays: dict[str, Any]):
        super().__init__(arrays)
        self._order = arrays["order"]
        self._sorted = arrays["sorted_keys"]
        self._width = int(self._sorted.dtype.itemsize // 4)

    @property
    def row_of(self) -> RowLookup:
        """`article_id -> row`, used like the dict it replaces."""
        return RowLookup(self)

    @classmethod
    def from_values(cls, values: Sequence[str | None]) -> ArticleIds:
        """The ids `values`; a None among them raises ValueError (an article always has an id)."""
        return cls(string_arrays(list(values), keys=True))

    def __contains__(self, article_id: object) -> bool:
        return isinstance(article_id, str) and self.row(article_id) is not None

    def row(self, article_id: str) -> int | None:
        """The row of `article_id`, None when the model has no such article."""
        if self._exact and isinstance(article_id, str):  # one id (a live write's lookups): no array set-up
            if not (self._n and self._fits_keys(article_id)):
                return None  # every id fits the keys here: one that does not is not one
            i = int(self._sorted.searchsorted(article_id))
            return int(self._order[i]) if i < self._n and self._sorted[i] == article_id else None
        row = int(self.rows([article_id])[0])
        return row if row >= 0 else None

    def _id(self, row: int) -> str:
        value = self._value(row)
        assert value is not None  # string_arrays(keys=True) refuses None
        return value

    def _fits_keys(self, article_id: str) -> bool:
        """Whether `article_id` can be compared as a fixed-width key: not empty, at most the key
        width, no NUL at the end (numpy drops trailing NULs from its strings)."""
        return 0 < len(article_id) <= self._width and article_id[-1] != "\x00"

    def rows(self, article_ids: Iterable[str]) -> np.ndarray:
        """`int64 [m]`: the row of each id, -1 for ids the model does not have."""
        ids = [a for a in article_ids]
        if not ids or not self._n:
            return np.full(len(ids), -1, dtype=np.int64)
        ids = [a if isinstance(a, str) else "" for a in ids]  # not a str: no row
        queries = np.array(ids, dtype=self._sorted.dtype)  # truncated to the key width
        found = np.minimum(np.searchsorted(self._sorted, queries), self._n - 1)
        if self._exact:
            usable = np.fromiter((self._fits_keys(a) for a in ids), dtype=bool, count=len(ids))
            hit = (self._sorted[found] == queries) & usable
            return np.where(hit, self._order[found], -1).astype(np.int64)
        ends = np.searchsorted(self._sorted, queries, side="right")
        return np.array([self._full_match(a, int(lo), int(hi)) for a, lo, hi in zip(ids, found, ends)], dtype=np.int64)

    def _full_match(self, article_id: str, lo: int, hi: int) -> int:
        """Among sorted positions [lo, hi) (same key prefix, in full-value order), the row whose id
        is `article_id` (first of equals), else -1."""
        if hi - lo > 8:
            lo = bisect.bisect_left(range(lo, hi), article_id, key=lambda i: self._id(int(self._order[i]))) + lo
            hi = min(hi, lo + 1)
        for i in range(lo, hi):
            row = int(self._order[i])
            if self._value(row) == article_id:
                return row
        return -1

    def duplicates(self, limit: int = 3) -> list[tuple[str, list[int]]]:
        """Up to `limit` ids listed more than once, with their rows (an intact model has none)."""
        if self._n < 2:
            return []
        same = np.flatnonzero(self._sorted[1:] == self._sorted[:-1])  # equal keys, next to each other
        if not self._exact:  # equal prefixes: compare in full
            in_full = [
                i for i in same.tolist() if self._value(int(self._order[i])) == self._value(int(self._order[i + 1]))
            ]
            same = np.asarray(in_full, dtype=np.int64)
        found: dict[str, list[int]] = {}
        for i in same.tolist():
            article_id = self._id(int(self._order[i]))
            rows = found.setdefault(article_id, [int(self._order[i])])
            rows.append(int(self._order[i + 1]))
            if len(found) > limit:
                break
        return [(a, sorted(set(rows))) for a, rows in list(found.items())[:limit]]


class RowLookup:
    """`article_id -> row` in the shape of the dict it replaces: `get`, `in`, `[]`, plus `rows`."""

    def __init__(self, ids: ArticleIds):
        self._ids = ids

    def get(self, article_id: str, default: int | None = None) -> int | None:
        row = self._ids.row(article_id)
        return default if row is None else row

    def __contains__(self, article_id: object) -> bool:
        return article_id in self._ids

    def __getitem__(self, article_id: str) -> int:
        row = self._ids.row(article_id)
        if row is None:
            raise KeyError(article_id)
        return row

    def __len__(self) -> int:
        return len(self._ids)

    def rows(self, article_ids: Iterable[str]) -> np.ndarray:
        return self._ids.rows(article_ids)


def as_article_ids(ids: Sequence[str]) -> ArticleIds:
    return ids if isinstance(ids, ArticleIds) else ArticleIds.from_values(list(ids))


def as_string_column(values: Sequence[str | None] | None) -> StringColumn | None:
    if values is None or isinstance(values, StringColumn):
        return values
    return StringColumn.from_values(list(values))


def coded_arrays(n: int, rows: np.ndarray, values: Sequence[Any], missing: str) -> dict[str, Any]:
    """The arrays of a `CodedColumn` of `n` rows: `values[i]` (made a str) at `rows[i]`; rows not
    given, or given None, hold `missing`. A row given twice keeps its last value."""
    raw = np.full(n, -1, dtype=np.int64)
    code_of: dict[str, int] = {}
    for row, value in zip(np.asarray(rows).tolist(), values):
        if row >= 0:
            raw[row] = -1 if value is None else code_of.setdefault(str(value), len(code_of))
    if (raw < 0).any():
        code_of.setdefault(missing, len(code_of))
        raw[raw < 0] = code_of[missing]
    name_of = {code: name for name, code in code_of.items()}
    names = sorted(name_of[code] for code in np.unique(raw).tolist())  # values some row holds
    remap = np.zeros(max(len(code_of), 1), dtype=np.int32)
    for new, name in enumerate(names):
        remap[code_of[name]] = new
    return {"codes": remap[raw] if n else np.zeros(0, np.int32), "names": np.array(names or [missing], dtype=str)}


class CodedColumn(Sequence):
    """row -> one of `names` (sorted), from `codes` (`int32 [n]`)."""

    def __init__(self, arrays: dict[str, Any]):
        self.codes = arrays["codes"]
        self.names: list[str] = [str(name) for name in np.asarray(arrays["names"]).tolist()]

    def __len__(self) -> int:
        return int(self.codes.shape[0])

    def __getitem__(self, row):
        if isinstance(row, slice):
            return [self.names[c] for c in self.codes[row].tolist()]
        return self.names[self.codes[row]]

    def take(self, rows) -> list[str]:
        names = self.names
        return [names[c] for c in self.codes[np.asarray(rows, dtype=np.int64)].tolist()]
