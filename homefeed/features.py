"""The single source of truth for feature names, types and sizes.

Imported by the SQL schema checks (components/extract), the transform (trainer/model/preprocessing.py),
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
    "article_id": "STRING",  # ARTICLE_ID (defined below with the other article columns)
    "viewed_at": "TIMESTAMP",
}
ARTICLES_REQUIRED_COLUMNS: dict[str, str] = {"article_id": "STRING"}
ARTICLES_OPTIONAL_COLUMNS: dict[str, str] = {
    "title": "STRING",
    "category": "STRING",
    "region": "STRING",
    "created_at": "TIMESTAMP",
    "status": "STRING",
    # When the listing was sold or deleted (null: still up). A listing is live at t exactly when
    # created_at <= t < removed_at; `status` decides only for rows without removed_at.
    "removed_at": "TIMESTAMP",
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

# Column names of the input tables and of the corpus (one spelling for every stage).
ARTICLE_ID = "article_id"
TITLE = "title"
CREATED_AT = "created_at"
REMOVED_AT = "removed_at"
VIEW_COUNT = "view_count"

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
# The label article's content (the article tower's inputs besides id, category and region):
#   * `label_title`: its title, NFKC-normalised text (homefeed.tokens.normalise; the transform's
#     record reader and every article-vector caller apply it), "" when it has none;
#   * `label_age_days`: its age when it was viewed, (viewed_at - created_at) in days; when vectors
#     are made for serving, (now - created_at). UNKNOWN_AGE when created_at is missing.
LABEL_TITLE = f"label_{TITLE}"
LABEL_AGE = "label_age_days"
UNKNOWN_AGE = -1.0
# Transformed: the title's unigram and bigram tokens (the same splitting as search queries),
# hashed into TITLE_HASH_BUCKETS ids (no vocabulary: a new listing's words all get an id) ...
TITLE_TOKENS = "title_tokens"
TITLE_HASH_BUCKETS = 1 << 15
TITLE_TOKENS_MAX = 32
# ... and the age, log-bucketed (`age_bucket`): 0 unknown, then one bucket per doubling of hours.
AGE_BUCKET = "label_age_bucket"
AGE_BUCKETS = 20
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
# The splits (homefeed.config.ExtractConfig.split): TEST is only reported and read by the publish
# gate, never used for a choice; VALIDATION makes every choice (early stopping, id dropout); TRAIN
# is what the model learns from. Under the time split (marketplace data) a global cut decides:
# TRAIN before T_val, VALIDATION in [T_val, T_test), TEST in [T_test, as_of]. Under the per-user
# split each user's last view (time order, ties by article id) is TEST, the one before it
# VALIDATION, all earlier ones TRAIN (`split_of`); a user with two views then has only a test
# example (the first view has no history), one with three a validation and a test example.
TRAIN_SPLIT = "train"
VALIDATION_SPLIT = "validation"
TEST_SPLIT = "test"
SPLITS: tuple[str, ...] = (TRAIN_SPLIT, VALIDATION_SPLIT, TEST_SPLIT)


def split_of(views_after: int) -> str:
    """The per-user split of a view followed by `views_after` later views of the same user (the
    rule sql/training_examples.sql implements for `split = 'per-user'`): 0 -> test, 1 ->
    validation, more -> train."""
    if views_after < 0:
        raise ValueError(f"views_after must be >= 0, got {views_after}")
    return (TEST_SPLIT, VALIDATION_SPLIT)[views_after] if views_after < 2 else TRAIN_SPLIT


def label_attribute(attr: str) -> str:
    """Column holding the label article's value of `attr` (e.g. `label_category`)."""
    return f"label_{attr}"


def history_attribute(attr: str) -> str:
    """Column holding the history articles' values of `attr` (e.g. `history_category`)."""
    return f"history_{attr}"


def age_bucket(age_days: float) -> int:
    """The log bucket of an article age in days (the plain-Python reference of the transform's op):
    0 for an unknown (negative) age, else `1 + floor(log2(1 + hours))`, at most AGE_BUCKETS - 1.
    So 0-1 h -> 1, 1-3 h -> 2, 3-7 h -> 3, ..., about 10 days -> 9, a year -> 14."""
    import math

    if not age_days >= 0:  # negative or NaN: unknown
        return 0
    # log(x) / log(2), not log2: the same float64 operations as the transform's graph.
    return min(AGE_BUCKETS - 1, 1 + int(math.floor(math.log(1.0 + age_days * 24.0) / math.log(2.0))))


def age_days(created_at_ms: float | None, now_ms: float) -> float:
    """`(now - created_at)` in days, UNKNOWN_AGE when `created_at_ms` is None; never negative
    (a listing dated in the future is treated as brand new)."""
    if created_at_ms is None:
        return UNKNOWN_AGE
    return max(0.0, (now_ms - created_at_ms) / 86_400_000.0)


def vocabulary_name(attr: str) -> str:
    """Name of the TFT vocabulary file for `attr` (`article` for ids, else the attribute)."""
    return f"{attr}_vocab"


ARTICLE_VOCAB = vocabulary_name("article")
SEARCH_TOKEN_VOCAB = vocabulary_name("search_token")

# The parallel sequence columns of a history (ids, then one per attribute) and the label columns
# (id, then one per attribute): every stage takes these tuples, never spells the names.
HISTORY_COLUMNS: tuple[str, ...] = (HISTORY, *(history_attribute(a) for a in ARTICLE_ATTRIBUTES))
LABEL_COLUMNS: tuple[str, ...] = (LABEL, *(label_attribute(a) for a in ARTICLE_ATTRIBUTES))
# The label's content columns (optional in files written by other tools: a missing title is "",
# a missing age UNKNOWN_AGE).
LABEL_CONTENT_COLUMNS: tuple[str, ...] = (LABEL_TITLE, LABEL_AGE)

# Raw columns of a training example and their types (BigQuery types; REPEATED for arrays).
EXAMPLE_COLUMNS: dict[str, str] = {
    USER_ID: "STRING",
    **dict.fromkeys(LABEL_COLUMNS, "STRING"),
    LABEL_TITLE: "STRING",
    LABEL_AGE: "FLOAT64",
    **dict.fromkeys(HISTORY_COLUMNS, "ARRAY<STRING>"),
    RECENT_QUERIES: "ARRAY<STRING>",
    EXAMPLE_AGE: "FLOAT64",
    VIEWED_AT: "TIMESTAMP",
    SPLIT: "STRING",
}

# Serving snapshot of each user's latest history (sql/user_histories.sql), read by the online store.
# `seen`: every article the user viewed, most recent first, at most SEEN_LENGTH (the service's
# "already viewed" filter, the same set evaluation excludes).
SEEN = "seen"
SEEN_LENGTH = 1000
USER_HISTORY_COLUMNS: dict[str, str] = {
    USER_ID: "STRING",
    **dict.fromkeys(HISTORY_COLUMNS, "ARRAY<STRING>"),
    "last_viewed_at": "TIMESTAMP",
    RECENT_QUERIES: "ARRAY<STRING>",
    SEEN: "ARRAY<STRING>",
}

# Candidate corpus (sql/articles.sql): the articles live at as_of with their attributes.
CORPUS_COLUMNS: dict[str, str] = {
    ARTICLE_ID: "STRING",
    TITLE: "STRING",
    **dict.fromkeys(ARTICLE_ATTRIBUTES, "STRING"),
    CREATED_AT: "TIMESTAMP",
    VIEW_COUNT: "INT64",
}
# Every listing that existed up to as_of (sql/listings.sql), whatever its status, with its lifetime:
# what the evaluation's corpus at a view's time is built from (trainer/evaluation/served_corpus.py).
# removed_at is the input's removed_at; a sold or deleted row without one gets as_of (gone by then
# at the latest); null: still up at as_of.
LISTINGS_COLUMNS: dict[str, str] = {
    ARTICLE_ID: "STRING",
    TITLE: "STRING",
    **dict.fromkeys(ARTICLE_ATTRIBUTES, "STRING"),
    CREATED_AT: "TIMESTAMP",
    REMOVED_AT: "TIMESTAMP",
}
# What the article tower reads of a corpus row (raw): id, attributes, title, created_at.
CORPUS_ARTICLE_COLUMNS: tuple[str, ...] = (ARTICLE_ID, *ARTICLE_ATTRIBUTES, TITLE, CREATED_AT)

# Features a *serving* request carries (raw, before the transform): no label, no user id.
SERVING_FEATURES: tuple[str, ...] = (*HISTORY_COLUMNS, RECENT_QUERIES, EXAMPLE_AGE)
# Features an *article vector* request carries (raw): the label columns and the label's content,
# with the age measured at serving time (now - created_at).
ARTICLE_FEATURES: tuple[str, ...] = (*LABEL_COLUMNS, *LABEL_CONTENT_COLUMNS)
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
    # Several buckets: unseen article ids (new listings) spread over them instead of sharing one
    # row, and training's id dropout (TrainConfig.id_dropout) trains every one of them.
    num_oov_buckets: int = 8
