"""The SQL stage's queries (BigQuery standard SQL), shipped as package data.

    training_examples.sql  one row per view that has an earlier view: label, history, split
    user_histories.sql     each user's latest views: the serving snapshot
    articles.sql           the candidate corpus: the articles live at as_of with their view counts
    listings.sql           every listing up to as_of with its lifetime (created_at, removed_at)
    input_report.sql       row counts of the input and of every cleaning step (for the summary)
    example_searches.sql   optional searches table: each view's recent queries (before the view)
    user_searches.sql      optional searches table: each user's latest queries (serving snapshot)
    search_report.sql      optional searches table: row counts of it and of its cleaning steps

Values reach the queries only as BigQuery query parameters (`@as_of`, `@not_after`, `@history_length`,
`@max_article_age_days`, `@lookback_days`). Table names cannot be query parameters in BigQuery, so
each query reads its inputs through two fixed placeholders, `{{events}}` and `{{articles}}`, which
`render_query` replaces with a relation built by `components.extract.schema` from table names that
passed a strict pattern check (letters, digits, `_`, `-` only). Besides those, only
`{{cleaned_inputs}}` is replaced: with `cleaned_inputs.sql`, the cleaning CTEs every query shares.
No other text is ever substituted.

Comments are removed from the text that is sent (`strip_comments`): bqemulator rewrites every
`@name` into a positional marker, also inside comments, which then no longer match the values.
"""

from __future__ import annotations

import re
from importlib import resources

QUERIES = ("training_examples", "user_histories", "articles", "listings", "input_report")
# Run only when a searches table is given (`searches` is then a placeholder too).
SEARCH_QUERIES = ("example_searches", "user_searches", "search_report")
PLACEHOLDERS = ("events", "articles", "searches")
# Shared fragments, not queries of their own: spliced in where a query says {{cleaned_inputs}}
# or {{cleaned_searches}}.
INCLUDES = ("cleaned_inputs", "cleaned_searches")

_PLACEHOLDER = re.compile(r"\{\{\s*([a-z_]+)\s*\}\}")
_PARAMETER = re.compile(r"@([A-Za-z_][A-Za-z0-9_]*)")
_COMMENT = re.compile(r"--[^\n]*")


def read_query(name: str) -> str:
    """The text of `sql/<name>.sql` (a query or an include), placeholders and all."""
    if name not in QUERIES + SEARCH_QUERIES + INCLUDES:
        raise ValueError(f"unknown query {name!r}; known: {', '.join(QUERIES + SEARCH_QUERIES)}")
    return resources.files(__name__).joinpath(f"{name}.sql").read_text(encoding="utf-8")


def render_query(name: str, relations: dict[str, str]) -> str:
    """`sql/<name>.sql` with `{{events}}` and `{{articles}}` replaced by `relations[...]`.

    `relations` values must come from `components.extract.schema` (validated identifiers only).
    Raises ValueError if a placeholder has no relation, so nothing half-rendered reaches BigQuery.
    """
    if name not in QUERIES + SEARCH_QUERIES:
        raise ValueError(f"unknown query {name!r}; known: {', '.join(QUERIES + SEARCH_QUERIES)}")
    # Comments go first, so a placeholder named in a comment is never substituted.
    text = strip_comments(read_query(name))
    for include in INCLUDES:
        text = text.replace(f"{{{{{include}}}}}", strip_comments(read_query(include)).rstrip("\n"))

    def substitute(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in PLACEHOLDERS or key not in relations:
            raise ValueError(f"{name}.sql: no relation for placeholder {{{{{key}}}}}")
        return relations[key]

    return _PLACEHOLDER.sub(substitute, text)


def strip_comments(text: str) -> str:
    """`text` without `--`, `#` and `/* */` comments; quoted strings and identifiers untouched.

    Blank lines left behind are dropped; line structure is otherwise kept, so error positions
    reported by BigQuery still point near the right place.
    """
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in "'\"`":
            # A quoted string or identifier: copy through its closing quote (backslash escapes).
            j = i + 1
            while j < n and text[j] != ch:
                j += 2 if text[j] == "\\" else 1
            out.append(text[i : j + 1])
            i = j + 1
        elif text.startswith("--", i) or ch == "#":
            end = text.find("\n", i)
            i = n if end < 0 else end
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = n if end < 0 else end + 2
        else:
            out.append(ch)
            i += 1
    lines = (line.rstrip() for line in "".join(out).splitlines())
    return "\n".join(line for line in lines if line) + "\n"


def query_parameters(sql: str) -> set[str]:
    """Names of the `@parameters` a query uses (comments ignored).

    The extract passes only these: BigQuery and the emulator need not agree on unused parameters.
    """
    return set(_PARAMETER.findall(_COMMENT.sub("", sql)))
