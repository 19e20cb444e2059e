"""The single source of truth for feature names, types and sizes.

Imported by the SQL schema checks (components/extract), the transform (trainer/preprocessing.py),
the trainer, the evaluator and the server. Standard library only, so any stage can import it
without pulling in TensorFlow.

Vocabulary of terms used across the project:
  * an *article* is an item a user can open (a listing, a news story, a film);
  * a *view* is one (user, article, time) event;
  * a user's *history* is their earlier views, most recent first, at most HISTORY_LENGTH long;
  * the *label* is the article viewed next, the one the model learns to predict.
"""

from __future__ import annotations

from dataclasses import dataclass

# ---------------------------------------------------------------------------------------------
# Input tables (the data contract a user brings). Extra columns are ignored.
# ---------------------------------------------------------------------------------------------
EVENTS_REQUIRED_COLUMNS: dict[str, str] = {
    "user_id": "STRING",
    "article_id": "STRING",
    "viewed_at": "TIMESTAMP",
}
ARTICLES_REQUIRED_COLUMNS: dict[str, str] = {"article_id": "STRING"}
ARTICLES_OPTIONAL_COLUMNS: dict[str, str] = {
    "title": "STRING",
    "category": "STRING",
    "region": "STRING",
    "created_at": "TIMESTAMP",
    "status": "STRING",
}
ARTICLE_STATUSES = ("active", "sold", "deleted")  # missing status means active
# Optional third table: what users typed into search. Absent: no search signal (empty queries).
SEARCHES_REQUIRED_COLUMNS: dict[str, str] = {
    "user_id": "STRING",
    "query": "STRING",
    "searched_at": "TIMESTAMP",
}
QUERY_MAX_CHARS = 512  # longer queries are cut to this many characters by the SQL

# Article attributes that feed both towers when present. Each one yields
#   * `label_<attr>`   on training examples (the label article's attribute),
#   * `history_<attr>` on examples and user histories (parallel to `history`),
#   * a vocabulary `<attr>_vocab`.
ARTICLE_ATTRIBUTES: tuple[str, ...] = ("category", "region")

# Value used in SQL output when an article has no value for an attribute (unknown article, or the
# articles table lacks the column). Kept as a real string so the vocabularies stay dense.
MISSING_ATTRIBUTE = "__missing__"

# ---------------------------------------------------------------------------------------------
# Training examples, as written by sql/training_examples.sql and read by the transform.
# ---------------------------------------------------------------------------------------------
HISTORY_LENGTH = 50  # default H: the most recent views kept in a history

USER_ID = "user_id"
LABEL = "label"  # the article id viewed next
HISTORY = "history"  # ARRAY<STRING> of article ids, most recent first
EXAMPLE_AGE = "example_age_days"  # as_of - viewed_at, in days (Covington et al. 2016, sec. 3.3)
VIEWED_AT = "viewed_at"
SPLIT = "split"
# The user's most recent queries strictly before the example's viewed_at (serving: before now),
# most recent first, at most SEARCH_LENGTH. Empty when no searches table is given.
RECENT_QUERIES = "recent_queries"
SEARCH_LENGTH = 20  # default S: the most recent queries kept
# Transformed: the queries' unigram and bigram ids (homefeed.tokens), a vocabulary of their own.
SEARCH_TOKENS = "search_tokens"
# At most this many tokens per example reach the model: the first ones, i.e. the most recent
# queries' (a user's 20 queries of one to three words give about 40-100 unigrams and bigrams).
SEARCH_TOKENS_MAX = 64
# The most recent query's tokens alone (same vocabulary): what the user is after right now, which
# the mean over all recent queries dilutes.
LAST_QUERY_TOKENS = "last_query_tokens"
# Each user's views in time order (ties by article id): the last one is TEST (only reported, and
# read by the publish gate; never used for a choice), the one before it VALIDATION (early stopping
# and every tuning choice), all earlier ones TRAIN. A user with two views has only a test example
# (the first view has no history), one with three a validation and a test example.
TRAIN_SPLIT = "train"
VALIDATION_SPLIT = "validation"
TEST_SPLIT = "test"
SPLITS: tuple[str, ...] = (TRAIN_SPLIT, VALIDATION_SPLIT, TEST_SPLIT)


def split_of(views_after: int) -> str:
    """The split of a view followed by `views_after` later views of the same user (the rule
    sql/training_examples.sql implements): 0 -> test, 1 -> validation, more -> train."""
    if views_after < 0:
        raise ValueError(f"views_after must be >= 0, got {views_after}")
    return (TEST_SPLIT, VALIDATION_SPLIT)[views_after] if views_after < 2 else TRAIN_SPLIT


def label_attribute(attr: str) -> str:
    """Column holding the label article's value of `attr` (e.g. `label_category`)."""
    return f"label_{attr}"


def history_attribute(attr: str) -> str:
    """Column holding the history articles' values of `attr` (e.g. `history_category`)."""
    return f"history_{attr}"


def vocabulary_name(attr: str) -> str:
    """Name of the TFT vocabulary file for `attr` (`article` for ids, else the attribute)."""
    return f"{attr}_vocab"


ARTICLE_VOCAB = vocabulary_name("article")
SEARCH_TOKEN_VOCAB = vocabulary_name("search_token")

# Raw columns of a training example and their types (BigQuery types; REPEATED for arrays).
EXAMPLE_COLUMNS: dict[str, str] = {
    USER_ID: "STRING",
    LABEL: "STRING",
    **{label_attribute(a): "STRING" for a in ARTICLE_ATTRIBUTES},
    HISTORY: "ARRAY<STRING>",
    **{history_attribute(a): "ARRAY<STRING>" for a in ARTICLE_ATTRIBUTES},
    RECENT_QUERIES: "ARRAY<STRING>",
    EXAMPLE_AGE: "FLOAT64",
    VIEWED_AT: "TIMESTAMP",
    SPLIT: "STRING",
}

# Serving snapshot of each user's latest history (sql/user_histories.sql), read by the online store.
USER_HISTORY_COLUMNS: dict[str, str] = {
    USER_ID: "STRING",
    HISTORY: "ARRAY<STRING>",
    **{history_attribute(a): "ARRAY<STRING>" for a in ARTICLE_ATTRIBUTES},
    "last_viewed_at": "TIMESTAMP",
    RECENT_QUERIES: "ARRAY<STRING>",
}

# Candidate corpus (sql/articles.sql): active articles with their attributes.
CORPUS_COLUMNS: dict[str, str] = {
    "article_id": "STRING",
    "title": "STRING",
    **{a: "STRING" for a in ARTICLE_ATTRIBUTES},
    "created_at": "TIMESTAMP",
    "view_count": "INT64",
}

# Features a *serving* request carries (raw, before the transform): no label, no user id.
SERVING_FEATURES: tuple[str, ...] = (
    HISTORY,
    *(history_attribute(a) for a in ARTICLE_ATTRIBUTES),
    RECENT_QUERIES,
    EXAMPLE_AGE,
)
# At serving time the example is "now": Covington et al. feed age 0 (or slightly negative).
SERVING_EXAMPLE_AGE = 0.0


# ---------------------------------------------------------------------------------------------
# Transformed feature names (outputs of preprocessing_fn, inputs of the model).
# ---------------------------------------------------------------------------------------------
def transformed_name(key: str) -> str:
    """Name of the transformed counterpart of raw feature `key`."""
    return f"{key}_xf"


@dataclass(frozen=True)
class VocabularyDefaults:
    """Defaults for vocabulary building; overridable through TransformConfig."""

    frequency_threshold: int = 1
    top_k: int | None = None  # None: no size cap
    num_oov_buckets: int = 1


# Extract output layout (one directory, written atomically).
TRAINING_EXAMPLES_FILE = "training_examples.parquet"
USER_HISTORIES_FILE = "user_histories.parquet"
CORPUS_FILE = "articles.parquet"
EXTRACT_SUMMARY_FILE = "extract_summary.json"
SUCCESS_MARKER = "_SUCCESS"
