"""The optional searches table in the extract: recent queries per example and per user.

With `ExtractConfig.searches_table` set, the extract also runs (sql/):
  * `search_report.sql`     counts: rows, blank queries, missing ids, duplicates, cut queries;
  * `example_searches.sql`  each view's latest S queries strictly before it, most recent first;
  * `user_searches.sql`     each user's latest S queries up to as_of (the serving snapshot);
and `attach` adds them to the outputs: `recent_queries` on every training example (a user's first
view becomes an example too when queries came before it) and on every user history (users who
searched but viewed nothing get a row with an empty history). Queries are written normalised
(`homefeed.tokens.normalise`: NFKC, lower case), the form the transform's tokeniser expects.

Without a searches table only `recent_queries` (empty everywhere) is added: the rows, the other
columns and the summary's counts are those of an extract without this feature.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from components.extract import schema
from homefeed import features, tokens
from homefeed.config import ExtractConfig

if TYPE_CHECKING:
    import pyarrow as pa

LOG = logging.getLogger(__name__)

# extract_summary.json keys, by section, filled from search_report.sql (only with a searches table).
INPUT_COUNTS = ("searches_rows", "searches_used", "search_users", "searches_truncated")
DROPPED_COUNTS = ("searches_missing_ids", "searches_empty_query", "searches_duplicates")
EXCLUDED_COUNTS = ("searches_after_as_of",)
LABELS = {
    "searches_missing_ids": "searches with a missing user_id or searched_at",
    "searches_empty_query": "searches with an empty or blank query",
    "searches_duplicates": "duplicate searches (same user, query and searched_at)",
}


@dataclass
class SearchTables:
    """What the three search queries returned."""

    example_queries: pa.Table  # user_id, viewed_at, recent_queries
    user_queries: pa.Table  # user_id, recent_queries, last_searched_at
    report: dict[str, int]


def table_ref(config: ExtractConfig) -> schema.TableRef | None:
    """The validated searches table identifier, or None when the config names none."""
    if not config.searches_table:
        return None
    return schema.TableRef.parse(config.searches_table, config.project, config.dataset)


def parameters(config: ExtractConfig) -> dict[str, tuple[str, Any]]:
    """The query parameters the search queries (and `@include_first_views`) use."""
    return {
        "search_length": ("INT64", config.search_length),
        "query_max_chars": ("INT64", features.QUERY_MAX_CHARS),
        "include_first_views": ("BOOL", bool(config.searches_table)),
    }


def run(runner: Any, params: dict[str, tuple[str, Any]]) -> SearchTables:
    """Runs the three search queries through the extract's query runner."""
    report = runner.run("search_report", params).to_pylist()[0]
    return SearchTables(
        example_queries=runner.run("example_searches", params),
        user_queries=runner.run("user_searches", params),
        report={k: int(report[k] or 0) for k in (*INPUT_COUNTS, *DROPPED_COUNTS, *EXCLUDED_COUNTS)},
    )


def _normalised_lists(values: list[list[str] | None]) -> list[list[str]]:
    cache: dict[str, str] = {}
    out = []
    for queries in values:
        row = []
        for query in queries or []:
            if query not in cache:
                cache[query] = tokens.normalise(query)
            row.append(cache[query])
        out.append(row)
    return out


def _strings() -> pa.DataType:
    import pyarrow as pa

    return pa.list_(pa.string())


def attach(results: dict[str, pa.Table], found: SearchTables | None) -> dict[str, pa.Table]:
    """`results` with `recent_queries` on training examples and user histories (see module doc).

    Expects the raw query results (`position` still on training examples). Returns new tables.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    examples, histories = results["training_examples"], results["user_histories"]
    if found is None:
        empty = pa.array([[]] * examples.num_rows, _strings())
        examples = examples.append_column(features.RECENT_QUERIES, empty)
        histories = histories.append_column(features.RECENT_QUERIES, pa.array([[]] * histories.num_rows, _strings()))
        return {**results, "training_examples": examples, "user_histories": histories}

    by_view = {(row["user_id"], row["viewed_at"]): row["recent_queries"] for row in found.example_queries.to_pylist()}
    keys = zip(examples.column(features.USER_ID).to_pylist(), examples.column(features.VIEWED_AT).to_pylist())
    queries = _normalised_lists([by_view.get(key) for key in keys])
    examples = examples.append_column(features.RECENT_QUERIES, pa.array(queries, _strings()))
    # A first view (position 1) has no history; it is an example only if queries came before it.
    has_queries = pc.greater(pc.list_value_length(examples.column(features.RECENT_QUERIES)), 0)
    examples = examples.filter(pc.or_(pc.greater(examples.column("position"), 1), has_queries))
    for column in (features.HISTORY, *(features.history_attribute(a) for a in features.ARTICLE_ATTRIBUTES)):
        index = examples.column_names.index(column)
        filled = pc.if_else(
            pc.is_null(examples.column(column)), pa.scalar([], _strings()), examples.column(column).cast(_strings())
        )
        examples = examples.set_column(index, column, filled)

    by_user = {row["user_id"]: row["recent_queries"] for row in found.user_queries.to_pylist()}
    users = histories.column(features.USER_ID).to_pylist()
    histories = histories.append_column(
        features.RECENT_QUERIES, pa.array(_normalised_lists([by_user.get(u) for u in users]), _strings())
    )
    searchers = sorted(set(by_user) - set(users))
    if searchers:
        # Users who searched but viewed nothing: an empty history, their queries.
        extra = {
            features.USER_ID: pa.array(searchers, pa.string()),
            **{
                column: pa.array([[]] * len(searchers), _strings())
                for column in (features.HISTORY, *(features.history_attribute(a) for a in features.ARTICLE_ATTRIBUTES))
            },
            "last_viewed_at": pa.nulls(len(searchers), histories.schema.field("last_viewed_at").type),
            features.RECENT_QUERIES: pa.array(_normalised_lists([by_user[u] for u in searchers]), _strings()),
            features.SEEN: pa.array([[]] * len(searchers), _strings()),
        }
        histories = histories.select(list(extra)).cast(pa.schema([(k, v.type) for k, v in extra.items()]))
        histories = pa.concat_tables([histories, pa.table(extra)])
    LOG.info(
        "searches: %d of %d training examples and %d user histories (%d without views) carry queries",
        pc.sum(has_queries).as_py() or 0,
        len(queries),
        len(by_user),
        len(searchers),
    )
    return {**results, "training_examples": examples, "user_histories": histories}
