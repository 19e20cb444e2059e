"""EXTRACT_DIR as the extract writes and reads it: the output tables' Arrow schemas, the atomic
write (homefeed.atomic: staged beside it, fsynced, renamed into place, `_SUCCESS` last) and the
read back. File names and the completeness check are the layout's (homefeed/layout/extract_dir.py).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from homefeed import atomic, features
from homefeed.layout import extract_dir as layout
from homefeed.layout.extract_dir import OUTPUT_FILES, check_extract_dir

if TYPE_CHECKING:
    import pyarrow as pa


__all__ = [
    "OUTPUT_COLUMNS",
    "OUTPUT_FILES",
    "Extract",
    "ExtractSummary",
    "check_extract_dir",
    "output_schema",
    "read_extract",
    "write_extract_dir",
]


@dataclass
class ExtractSummary:
    """What an extract did; written as `extract_summary.json`.

    rows: output row counts (`training_examples`, `train`, `validation`, `test`, `user_histories`, `articles`).
    inputs: input row counts (`events_rows`, `articles_rows`, `events_used`, `users`, ...).
    dropped: rows removed as bad data, by reason (missing ids, duplicates, unknown article ids).
    excluded: valid rows left out by the settings (after as_of, outside the lookback, inactive or
        too old for the corpus).
    """

    as_of: str
    first_viewed_at: str | None
    not_after: str  # the run's wall clock + max_clock_skew_s: later events were dropped as future
    rows: dict[str, int]
    inputs: dict[str, int]
    dropped: dict[str, int]
    excluded: dict[str, int]
    source: str
    config: dict[str, Any]
    out_dir: str = ""
    seconds: float = 0.0
    # How the examples are split (components/extract/split.py): `{"protocol": "time", "validation_from",
    # "test_from", "test_to"}` or `{"protocol": "per-user"}`; the evaluation reports under it.
    split: dict[str, Any] = field(default_factory=dict)
    # Data problems that did not stop the extract but change what it wrote (e.g. a created_at
    # without information, left out).
    warnings: list[str] = field(default_factory=list)
    created_at: str = field(default_factory=lambda: datetime.now().astimezone().isoformat(timespec="seconds"))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """A few lines for people: what was read, dropped and written."""
        rows, inputs = self.rows, self.inputs
        dropped = ", ".join(f"{k} {v}" for k, v in self.dropped.items() if v) or "none"
        excluded = ", ".join(f"{k} {v}" for k, v in self.excluded.items() if v) or "none"
        return "\n".join(
            [
                f"extract written to {self.out_dir} in {self.seconds:.1f}s (source: {self.source})",
                f"  as_of               {self.as_of}",
                f"  events              {inputs['events_rows']} read, {inputs['events_used']} used "
                f"({inputs['users']} users, {inputs['articles_viewed']} articles viewed)",
                f"  articles            {inputs['articles_rows']} read",
                *(
                    [
                        f"  searches            {inputs['searches_rows']} read, {inputs['searches_used']} used "
                        f"({inputs['search_users']} users, {inputs['searches_truncated']} cut to "
                        f"{features.QUERY_MAX_CHARS} characters)"
                    ]
                    if "searches_rows" in inputs
                    else []
                ),
                f"  dropped             {dropped}",
                f"  excluded            {excluded}",
                *([f"  split               {_describe_split(self.split)}"] if self.split else []),
                f"  training_examples   {rows['training_examples']} ("
                + ", ".join(f"{rows[s]} {s}" for s in features.SPLITS)
                + ")",
                f"  user_histories      {rows['user_histories']}",
                f"  articles (corpus)   {rows['articles']}",
                *(f"  warning             {w}" for w in self.warnings),
                *([f"  listings (lifetimes) {rows['listings']}"] if "listings" in rows else []),
            ]
        )


def _describe_split(split: dict[str, Any]) -> str:
    if split.get("protocol") != "time":
        return f"{split.get('protocol')} (each user's last view test, the one before validation)"
    return (
        f"time: train before {split['validation_from']}, validation from it, "
        f"test from {split['test_from']} to {split['test_to']}"
    )


# ---------------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------------


OUTPUT_COLUMNS = {
    "training_examples": features.EXAMPLE_COLUMNS,
    "user_histories": features.USER_HISTORY_COLUMNS,
    "articles": features.CORPUS_COLUMNS,
    "listings": features.LISTINGS_COLUMNS,
}
# Output rows are sorted (BigQuery returns them in no particular order) so files are reproducible.
_SORT_KEYS = {
    "training_examples": [features.USER_ID, features.VIEWED_AT, features.LABEL],
    "user_histories": [features.USER_ID],
    "articles": ["article_id"],
    "listings": ["article_id"],
}


def _arrow_type(kind: str) -> pa.DataType:
    import pyarrow as pa

    scalar = {
        "STRING": pa.string(),
        "INT64": pa.int64(),
        "FLOAT64": pa.float64(),
        "TIMESTAMP": pa.timestamp("us", tz="UTC"),
    }
    if kind.startswith("ARRAY<") and kind.endswith(">"):
        return pa.list_(scalar[kind[6:-1]])
    return scalar[kind]


def output_schema(name: str) -> pa.Schema:
    """The Arrow schema of an output file (`training_examples`, `user_histories`, `articles`, `listings`)."""
    import pyarrow as pa

    return pa.schema([pa.field(column, _arrow_type(kind)) for column, kind in OUTPUT_COLUMNS[name].items()])


def conform(name: str, table: pa.Table) -> pa.Table:
    """Columns in contract order and types (lists as list<string>, timestamps us UTC), sorted."""
    import pyarrow as pa

    target = output_schema(name)
    missing = [f.name for f in target if f.name not in table.column_names]
    if missing:
        raise RuntimeError(f"{name}.sql returned no column(s) {missing}")
    if table.num_rows == 0:
        return target.empty_table()
    arrays = []
    for target_field in target:
        column = table.column(target_field.name)
        if pa.types.is_list(target_field.type):
            # BigQuery cannot return NULL arrays (they come back empty); normalise anyway.
            column = column.cast(pa.list_(pa.field("item", pa.string())))
        arrays.append(column.cast(target_field.type))
    conformed = pa.Table.from_arrays(arrays, schema=target)
    return conformed.sort_by([(key, "ascending") for key in _SORT_KEYS[name]])


def check_replaceable(out_dir: Path) -> None:
    """Refuse to replace anything that is not an (old) extract directory."""
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise ValueError(f"output {out_dir} exists and is not a directory")
    strangers = sorted(p.name for p in out_dir.iterdir() if p.name not in layout.KNOWN_FILES)
    if strangers:
        raise ValueError(
            f"output {out_dir} exists and holds other files ({', '.join(strangers[:5])}); "
            "refusing to replace it: choose a new or empty directory, or an earlier extract"
        )


def write_extract_dir(out_dir: str | Path, outputs: dict[str, pa.Table], summary: ExtractSummary) -> Path:
    """Write the Parquet files (OUTPUT_FILES), `extract_summary.json` and `_SUCCESS` (last) atomically.

    Everything goes to a staging directory beside `out_dir`, which then replaces `out_dir` by
    rename; an earlier extract there is removed only after the new one is in place.
    """
    import pyarrow.parquet as pq

    out_dir = Path(out_dir).absolute()
    check_replaceable(out_dir)
    with atomic.staged_dir(out_dir, replace=True) as staging:
        for name, filename in layout.OUTPUT_FILES.items():
            pq.write_table(outputs[name], staging / filename)
        summary_path = staging / layout.SUMMARY_FILE
        summary_path.write_text(json.dumps(summary.to_dict(), indent=2, sort_keys=True) + "\n")
        (staging / layout.SUCCESS_MARKER).write_text(summary.created_at + "\n")
    return out_dir


@dataclass
class Extract:
    """A finished EXTRACT_DIR, read back: its tables and the summary (`listings` None in an extract
    made before it was written)."""

    path: Path
    training_examples: pa.Table
    user_histories: pa.Table
    articles: pa.Table
    summary: dict[str, Any]
    listings: pa.Table | None = None


def read_extract(path: str | Path) -> Extract:
    """Read a finished EXTRACT_DIR (checked with `check_extract_dir`) into Arrow tables."""
    import pyarrow.parquet as pq

    path = check_extract_dir(path)
    tables = {
        name: pq.read_table(path / filename)
        for name, filename in layout.OUTPUT_FILES.items()
        if (path / filename).exists()
    }
    summary = json.loads((path / layout.SUMMARY_FILE).read_text())
    return Extract(path=path, summary=summary, **tables)
