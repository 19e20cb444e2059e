"""Text -> tokens: the one normalisation for search queries and listing titles.

    normalise("Baby  STROLLER!")   -> "baby  stroller!"       Unicode NFKC, then lower case
    words("유모차 Baby-Stroller")   -> ["유모차", "baby", "stroller"]
    ngrams(["a", "b", "c"])         -> ["a", "b", "c", "a b", "b c"]  unigrams, then bigrams

Words are maximal runs of characters that are not separators: punctuation, symbols, spaces,
control and format characters (Unicode categories P*, S*, Z*, Cc, Cf), so Korean, Japanese, Cyrillic... words are kept whole, and
"baby-stroller" and "baby stroller" give the same words. Bigrams join neighbouring words of one
query with a single space (never across two queries); their order carries no meaning to the model
(Covington et al. 2016 embed unordered unigrams and bigrams).

This module is the plain-Python reference and has no TensorFlow; `trainer/model/text_ops.py` builds the
same splitting from TensorFlow ops for `preprocessing_fn`, and tests compare the two. NFKC has no
TensorFlow op (it lives in tensorflow-text, outside the pinned stack), so `normalise` runs where
text enters the system, in Python: the extract writes queries normalised, and the serving encoder
normalises before calling the model (trainer/towers/serving_model.py). Both apply this same function;
it is idempotent, so normalising twice changes nothing.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Sequence
from typing import Final

# The separators, as the RE2 pattern TensorFlow uses (RE2's \s is ASCII-only, hence the
# categories): punctuation, symbols, separators (spaces), control and format characters.
SEPARATOR_PATTERN = r"[\p{P}\p{S}\p{Z}\p{Cc}\p{Cf}]+"
_SEPARATOR_CATEGORIES = ("P", "S", "Z", "Cc", "Cf")
NORMALISATION_FORM: Final = "NFKC"
MAX_TOKENS_PER_QUERY = 32  # words kept per query (bigrams from those): bounds a pasted paragraph


def normalise(text: str) -> str:
    """`text` in Unicode NFKC, lower-cased (full-width letters, ligatures, compatibility forms folded)."""
    return unicodedata.normalize(NORMALISATION_FORM, text).lower()


def _is_separator(ch: str) -> bool:
    return unicodedata.category(ch).startswith(_SEPARATOR_CATEGORIES)


def words(text: str) -> list[str]:
    """The words of `text` after `normalise`, in order, at most MAX_TOKENS_PER_QUERY."""
    out: list[str] = []
    current: list[str] = []
    for ch in normalise(text):
        if _is_separator(ch):
            if current:
                out.append("".join(current))
                current = []
        else:
            current.append(ch)
    if current:
        out.append("".join(current))
    return out[:MAX_TOKENS_PER_QUERY]


def ngrams(query_words: Sequence[str]) -> list[str]:
    """Unigrams, then bigrams (`"w1 w2"`) of one query's words."""
    return [*query_words, *(f"{a} {b}" for a, b in zip(query_words, query_words[1:]))]


def query_tokens(queries: Iterable[str]) -> list[str]:
    """The tokens of a user's recent queries: each query's unigrams then bigrams, query by query."""
    return [token for query in queries for token in ngrams(words(query))]
