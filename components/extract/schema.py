"""Input-table checks and the relations the SQL reads, both driven by `homefeed.features`.

Two jobs:
  * `TableRef` turns a configured table name into a fully qualified BigQuery identifier, after a
    strict pattern check. BigQuery query parameters can carry values but not identifiers, so table
    names are the one thing that has to be put into the SQL text; the pattern admits only letters,
    digits, `_` and `-` (plus the dots between parts and `:` of a domain-scoped project), so no
    quote, backquote, space or comment can reach the query.
  * `check_columns` compares a table's columns with the data contract (required columns present,
    known columns of the right type) and says exactly which table and column is wrong;
    `events_relation` / `articles_relation` then build the fixed-shape relation each query reads,
    with NULL standing in for optional article columns the table does not have.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from homefeed import features

# GCP project ids are 6-30 lower-case letters, digits and hyphens starting with a letter; older
# domain-scoped ones look like "example.com:my-project". Emulators accept shorter names, so only
# the character set is enforced (that is what keeps the SQL safe).
_PROJECT = re.compile(r"^(?:[a-z0-9][a-z0-9.-]{0,61}[a-z0-9]:)?[a-z][a-z0-9-]{0,62}$")
# Datasets: letters, digits and underscores, at most 1024.
_DATASET = re.compile(r"^[A-Za-z0-9_]{1,1024}$")
# Tables: BigQuery also allows some Unicode and spaces; we accept the portable ASCII subset only.
_TABLE = re.compile(r"^[A-Za-z0-9_-]{1,1024}$")

# BigQuery reports legacy type names through the API (INTEGER, FLOAT, BOOLEAN, RECORD).
_TYPE_ALIASES = {"INTEGER": "INT64", "FLOAT": "FLOAT64", "BOOLEAN": "BOOL", "RECORD": "STRUCT"}
# Types accepted where the contract says TIMESTAMP: DATE and DATETIME are read as UTC.
_TIMESTAMP_LIKE = ("TIMESTAMP", "DATETIME", "DATE")


@dataclass(frozen=True)
class TableRef:
    """A validated `project.dataset.table` identifier."""

    project: str
    dataset: str
    table: str

    def __post_init__(self) -> None:
        for part, pattern, rule in (
            ("project", _PROJECT, "lower-case letters, digits and hyphens, starting with a letter"),
            ("dataset", _DATASET, "letters, digits and underscores"),
            ("table", _TABLE, "letters, digits, underscores and hyphens"),
        ):
            value = getattr(self, part)
            if not isinstance(value, str) or not pattern.fullmatch(value):
                raise ValueError(f"invalid BigQuery {part} name {value!r}: expected {rule}")

    @classmethod
    def parse(cls, name: str, project: str, dataset: str) -> TableRef:
        """`table`, `dataset.table` or `project.dataset.table`; missing parts from the defaults."""
        parts = name.split(".") if isinstance(name, str) else [name]
        if len(parts) == 1:
            return cls(project, dataset, parts[0])
        if len(parts) == 2:
            return cls(project, parts[0], parts[1])
        if len(parts) == 3:
            return cls(parts[0], parts[1], parts[2])
        raise ValueError(f"invalid BigQuery table name {name!r}: expected [[project.]dataset.]table")

    @property
    def path(self) -> str:
        """`project.dataset.table`, as the client API takes it."""
        return f"{self.project}.{self.dataset}.{self.table}"

    @property
    def sql(self) -> str:
        """The identifier quoted for SQL text (safe: the parts passed the patterns above)."""
        return f"`{self.path}`"

    def __str__(self) -> str:
        return self.path


def normalise_type(field_type: str, mode: str | None = None) -> str:
    """A BigQuery schema type in standard-SQL spelling; REPEATED fields become `ARRAY<...>`."""
    base = _TYPE_ALIASES.get(field_type.upper(), field_type.upper())
    return f"ARRAY<{base}>" if (mode or "").upper() == "REPEATED" else base


def check_columns(
    label: str,
    columns: Mapping[str, str],
    required: Mapping[str, str],
    optional: Mapping[str, str] | None = None,
) -> dict[str, tuple[str, str]]:
    """Check a table's columns against the contract; return the contract columns it has.

    `label` names the table in messages (e.g. "events table `p.d.events`"). `columns` maps the
    table's column names to standard-SQL types (see `normalise_type`). Names are matched
    case-insensitively, as BigQuery does. Returns {contract name: (actual name, actual type)}.
    Raises ValueError naming the table and column for a missing required column or a wrong type.
    """
    by_lower = {name.lower(): (name, kind) for name, kind in columns.items()}
    found: dict[str, tuple[str, str]] = {}
    for name, expected in {**required, **(optional or {})}.items():
        if name.lower() not in by_lower:
            if name in required:
                raise ValueError(
                    f"{label}: missing required column '{name}' ({expected}); it has {sorted(columns) or 'no columns'}"
                )
            continue
        actual_name, actual = by_lower[name.lower()]
        accepted = _TIMESTAMP_LIKE if expected == "TIMESTAMP" else (expected,)
        if actual not in accepted:
            hint = " (ids must be strings, e.g. CAST(id AS STRING))" if name.endswith("_id") else ""
            raise ValueError(f"{label}: column '{actual_name}' has type {actual}, expected {expected}{hint}")
        found[name] = (actual_name, actual)
    return found


def _projection(found: Mapping[str, tuple[str, str]], contract: Mapping[str, str]) -> str:
    items = []
    for name, expected in contract.items():
        if name not in found:
            items.append(f"CAST(NULL AS {expected}) AS {name}")
            continue
        actual_name, actual = found[name]
        # Column names are from the contract (matched case-insensitively), never free text.
        column = f"`{actual_name}`"
        items.append(f"CAST({column} AS {expected}) AS {name}" if actual != expected else f"{column} AS {name}")
    return ", ".join(items)


def events_relation(table: TableRef, found: Mapping[str, tuple[str, str]]) -> str:
    """`(SELECT user_id, article_id, viewed_at FROM `p.d.t`)` for the events placeholder."""
    return f"(SELECT {_projection(found, features.EVENTS_REQUIRED_COLUMNS)} FROM {table.sql})"


def articles_relation(table: TableRef, found: Mapping[str, tuple[str, str]]) -> str:
    """The articles placeholder: every contract column, NULL where the table lacks it."""
    contract = {**features.ARTICLES_REQUIRED_COLUMNS, **features.ARTICLES_OPTIONAL_COLUMNS}
    return f"(SELECT {_projection(found, contract)} FROM {table.sql})"


def check_events_columns(label: str, columns: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """`check_columns` for the events table."""
    return check_columns(label, columns, features.EVENTS_REQUIRED_COLUMNS)


def check_articles_columns(label: str, columns: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """`check_columns` for the articles table (optional columns may be absent)."""
    return check_columns(label, columns, features.ARTICLES_REQUIRED_COLUMNS, features.ARTICLES_OPTIONAL_COLUMNS)


def searches_relation(table: TableRef, found: Mapping[str, tuple[str, str]]) -> str:
    """`(SELECT user_id, query, searched_at FROM `p.d.t`)` for the searches placeholder."""
    return f"(SELECT {_projection(found, features.SEARCHES_REQUIRED_COLUMNS)} FROM {table.sql})"


def check_searches_columns(label: str, columns: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """`check_columns` for the optional searches table."""
    return check_columns(label, columns, features.SEARCHES_REQUIRED_COLUMNS)
