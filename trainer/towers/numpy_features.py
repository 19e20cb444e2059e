"""The serving part of the TF Transform (trainer/model/preprocessing.py) in NumPy: raw rows -> model ids.

The NumPy twin of the towers (trainer/towers/numpy_towers.py) starts from the same raw inputs as the
SavedModel's signatures and needs what the exported transform does with them:

  * vocabulary lookups (`Vocabulary`): a known value gets its line number in the TFT vocabulary
    file, an unknown one `size + Fingerprint64(value) % oov_buckets`, which is what TFT's
    `StaticVocabularyTable` computes (FarmHash's Fingerprint64, `pyfarmhash`; with no OOV buckets,
    -1, TFT's default value);
  * histories cut to their first H columns with "" as padding, positions kept (`history_ids`);
  * search tokens (`query_tokens`: trainer/model/text_ops.py's lower-case and split, with the separator
    classes of `homefeed.tokens`) of the first `search_length` queries, and of the first query
    alone, at most SEARCH_TOKENS_MAX;
  * title tokens hashed into TITLE_HASH_BUCKETS and the age bucket (`features.age_bucket`);
  * the example age's z-score with the training split's mean and deviation.

Ids come out dense and right-padded with PAD_ID (-1), the layout `TwoTowerModel` reads after
`tf.sparse.to_dense`. NumPy, the standard library and pyfarmhash only: no TensorFlow.
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import farmhash
import numpy as np

from homefeed import features, tokens

PAD_ID = -1  # trainer.model.two_tower.PAD_ID (not imported: that module imports TensorFlow)


def fingerprint_bucket(value: str, buckets: int) -> int:
    """`tf.strings.to_hash_bucket_fast(value, buckets)`: Fingerprint64 of the UTF-8 bytes mod `buckets`."""
    return farmhash.fingerprint64(value) % buckets


class Vocabulary:
    """A TFT text vocabulary with hashed OOV buckets, as `tft.apply_vocabulary` applies it.

    Args:
      values: the vocabulary, id order (the file's lines).
      oov_buckets: ids `len(values) .. len(values) + oov_buckets - 1` for unknown values (0: -1).
    """

    def __init__(self, values: Sequence[str], oov_buckets: int):
        self.size = len(values)
        self.oov_buckets = int(oov_buckets)
        self._ids = {value: i for i, value in enumerate(values)}
        if len(self._ids) != self.size:
            raise ValueError(f"vocabulary has {self.size - len(self._ids)} duplicate value(s)")

    @classmethod
    def from_file(cls, path: str | Path, oov_buckets: int) -> Vocabulary:
        """Reads a TFT text vocabulary file: one UTF-8 value per line (TFT leaves out values with
        line breaks, so splitting on "\\n" is exact)."""
        data = Path(path).read_bytes().decode("utf-8")
        lines = data.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        return cls(lines, oov_buckets)

    def values(self) -> list[str]:
        """The vocabulary in id order."""
        return list(self._ids)

    def lookup(self, value: str) -> int:
        found = self._ids.get(value)
        if found is not None:
            return found
        if self.oov_buckets < 1:
            return PAD_ID
        return self.size + fingerprint_bucket(value, self.oov_buckets)

    def ids(self, values: Sequence[str] | np.ndarray) -> np.ndarray:
        """int64 `[len(values)]` ids of dense values, a list or 1-D array ("" is a value, as in a dense column)."""
        return np.fromiter((self.lookup(v) for v in values), dtype=np.int64, count=len(values))


def history_ids(column: np.ndarray, vocabulary: Vocabulary, width: int) -> np.ndarray:
    """`[B, W]` strings right-padded with "" -> int64 `[B, width]`: the first `width` columns' ids,
    "" (dropped by `tf.sparse.from_dense` in the signature) and missing columns PAD_ID."""
    out = np.full((column.shape[0], width), PAD_ID, dtype=np.int64)
    kept = column[:, :width]
    lookup = vocabulary.lookup
    ids = [PAD_ID if value == "" else lookup(value) for value in kept.ravel().tolist()]
    out[:, : kept.shape[1]] = np.asarray(ids, dtype=np.int64).reshape(kept.shape)
    return out


@functools.lru_cache(maxsize=1)
def separators() -> re.Pattern:
    """`homefeed.tokens.SEPARATOR_PATTERN` as a Python regex: a class of every code point of the
    separator categories (Python's `re` has no `\\p{..}`), built once per process (~0.5 s)."""
    points = [c for c in range(sys.maxunicode + 1) if tokens._is_separator(chr(c))]
    ranges, start, previous = [], points[0], points[0]
    for c in points[1:]:
        if c != previous + 1:
            ranges.append((start, previous))
            start = c
        previous = c
    ranges.append((start, previous))
    return re.compile("[" + "".join(f"\\U{a:08x}" if a == b else f"\\U{a:08x}-\\U{b:08x}" for a, b in ranges) + "]+")


@functools.lru_cache(maxsize=1 << 16)
def query_tokens(query: str) -> tuple[str, ...]:
    """One (normalised) query's unigrams then bigrams: trainer/model/text_ops.py's graph (lower-case, split
    on separators, at most MAX_TOKENS_PER_QUERY words) with a compiled regex, cached per query.
    Equal to `homefeed.tokens.ngrams(words(query))` on normalised text (tests/trainer/test_numpy_towers.py)."""
    query_words = [w for w in separators().split(query.lower()) if w][: tokens.MAX_TOKENS_PER_QUERY]
    return tuple(tokens.ngrams(query_words))


def _tokens_of(queries: Sequence[str]) -> list[str]:
    return [token for query in queries for token in query_tokens(query)]


def _fill(rows: Sequence[Sequence[int]], width: int) -> np.ndarray:
    out = np.full((len(rows), width), PAD_ID, dtype=np.int64)
    for i, ids in enumerate(rows):
        out[i, : len(ids)] = ids[:width]
    return out


def search_token_ids(queries: np.ndarray, vocabulary: Vocabulary, search_length: int) -> tuple[np.ndarray, np.ndarray]:
    """`recent_queries [B, Q]` (normalised, right-padded with "") -> (`search_tokens_xf`,
    `last_query_tokens_xf`), int64 `[B, SEARCH_TOKENS_MAX]` right-padded with PAD_ID.

    The transform's `search_token_ids`: the first `search_length` columns' unigrams and bigrams,
    query by query, cut to SEARCH_TOKENS_MAX; and the first column's alone.
    """
    recent, last = [], []
    for row in queries:
        given = [q for q in row[:search_length] if q != ""]
        recent.append([vocabulary.lookup(t) for t in _tokens_of(given)[: features.SEARCH_TOKENS_MAX]])
        first = [row[0]] if len(row) and row[0] != "" else []
        last.append([vocabulary.lookup(t) for t in _tokens_of(first)[: features.SEARCH_TOKENS_MAX]])
    return _fill(recent, features.SEARCH_TOKENS_MAX), _fill(last, features.SEARCH_TOKENS_MAX)


def title_token_ids(titles: Sequence[str]) -> np.ndarray:
    """Normalised titles ("" none) -> int64 `[N, TITLE_TOKENS_MAX]`: hashed unigram and bigram ids."""
    rows = [
        [
            fingerprint_bucket(t, features.TITLE_HASH_BUCKETS)
            for t in _tokens_of([title] if title else [])[: features.TITLE_TOKENS_MAX]
        ]
        for title in titles
    ]
    return _fill(rows, features.TITLE_TOKENS_MAX)


def age_buckets(age_days: np.ndarray) -> np.ndarray:
    """float `[N]` days -> int64 `[N]`: `features.age_bucket` of each (the float32 input widened)."""
    return np.fromiter((features.age_bucket(float(a)) for a in age_days), dtype=np.int64, count=len(age_days))


def z_score(values: np.ndarray, mean: float, std: float) -> np.ndarray:
    """`tft.scale_to_z_score` with the training split's `mean` and `std`, float32."""
    return ((np.asarray(values, np.float32) - np.float32(mean)) / np.float32(std)).astype(np.float32)
