"""The SQL stage: run sql/*.sql through the official BigQuery client and write EXTRACT_DIR.

    extract_bigquery(client, out_dir, config)             tables already in BigQuery (or an emulator)
    extract_local(events, articles, out_dir, config)      Parquet/CSV files, through a local emulator

Both end in the same function, so local runs execute the very SQL that runs on BigQuery:

  1. check both tables' columns against the data contract (homefeed.features);
  2. `input_report.sql`: row counts of the inputs and of each cleaning step; refuse empty inputs;
     resolve as_of (the latest valid event unless configured; never the wall clock);
  3. `training_examples.sql`, `user_histories.sql`, `articles.sql`, `listings.sql` with that as_of;
  4. write EXTRACT_DIR (docs/architecture.md) into a staging directory next to it, `_SUCCESS`
     last, then rename it into place: a failed run leaves no half-written output.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from components.extract import output, queries, schema, searches
from components.extract.output import OUTPUT_FILES, ExtractSummary
from components.extract.split import dataset_split, split_protocol
from homefeed import config as config_lib
from homefeed import features
from homefeed.config import ExtractConfig
from homefeed.redact import redact

if TYPE_CHECKING:
    import pyarrow as pa
    from google.cloud import bigquery

LOG = logging.getLogger(__name__)


def extract_local(
    events_path: str | Path,
    articles_path: str | Path,
    out_dir: str | Path,
    config: ExtractConfig | None = None,
    *,
    endpoint: str | None = None,
    searches_path: str | Path | None = None,
) -> ExtractSummary:
    """Load Parquet/CSV `events` and `articles` files into a BigQuery emulator and extract from it.

    `searches_path`: the optional searches file (features.SEARCHES_REQUIRED_COLUMNS), loaded as
    table `config.searches_table` (default name `searches`).

    Starts a throw-away emulator on a free loopback port (or uses the one at `endpoint`), loads the
    files into `config.project`.`config.dataset` (replacing tables of the same names) and runs
    `extract_bigquery` against it. The files are read and checked first, so bad input fails in
    a second, before any emulator starts.
    """
    import dataclasses

    from components.extract import input_files, warehouse

    config = config or ExtractConfig()
    if config.split is None:
        config = dataclasses.replace(config, split=dataset_split(events_path))
    if searches_path is not None and not config.searches_table:
        config = dataclasses.replace(config, searches_table="searches")
    events_ref, articles_ref = table_refs(config)
    searches_ref = searches.table_ref(config) if searches_path is not None else None
    search_rows = input_files.read_input_file(searches_path, "searches") if searches_path is not None else None
    if searches_path is None and config.searches_table:
        raise ValueError(f"searches_table {config.searches_table!r} is set but no searches file was given")
    events = input_files.read_input_file(events_path, "events")
    articles = input_files.read_input_file(articles_path, "articles")
    for what, path, table in (("events", events_path, events), ("articles", articles_path, articles)):
        if table.num_rows == 0:
            raise ValueError(f"{what} file {str(path)!r} has no rows")
    LOG.info(
        "read %d events from %s and %d articles from %s", events.num_rows, events_path, articles.num_rows, articles_path
    )

    def run(client: bigquery.Client, read_client: Any, where: str) -> ExtractSummary:
        input_files.load_table(client, events_ref, events)
        input_files.load_table(client, articles_ref, articles)
        if searches_ref is not None:
            input_files.load_table(client, searches_ref, search_rows)
        return extract_bigquery(client, out_dir, config, use_storage_api=False, read_client=read_client, source=where)

    if endpoint:
        return run(warehouse.emulator_client(endpoint, config.project), None, f"emulator at {endpoint}")
    with warehouse.local_emulator(config.project) as emulator:
        return run(emulator.client(), emulator.read_client(), "local emulator")


def extract_bigquery(
    client: bigquery.Client,
    out_dir: str | Path,
    config: ExtractConfig | None = None,
    *,
    use_storage_api: bool = True,
    read_client: Any = None,
    source: str | None = None,
    now: datetime | None = None,
) -> ExtractSummary:
    """Run the three queries on the tables named in `config` and write EXTRACT_DIR at `out_dir`.

    `client` is any `google.cloud.bigquery.Client` (real BigQuery, or `warehouse.emulator_client`).
    How results are read:
      * real BigQuery: `use_storage_api=True` (default) reads them as Arrow through the Storage
        Read API (the client creates its own read client), else through REST;
      * an emulator: pass `use_storage_api=False`, and its `read_client` (`Emulator.read_client()`)
        when its gRPC port is known. The emulator's Storage Read API reads tables only, not
        anonymous query results, so each result is first written with
        `CREATE OR REPLACE TABLE <dataset>._homefeed_extract_<query>_<id> AS <query>` (the same
        SQL, parameters and all), read as Arrow, and the table dropped. Without a read client
        results come over REST (JSON; fine for small data, ~10x slower for 100k rows).
    `now` is the run's wall clock (default: the system clock): events dated more than
    `config.max_clock_skew_s` after it are counted (`dropped.events_in_future`) and dropped, and a
    configured as_of beyond it is refused.

    Raises ValueError for bad input (missing table or column, wrong type, empty table, nothing
    left after cleaning, an as_of in the future); nothing is written then.
    """
    started = time.monotonic()
    config = config or ExtractConfig()
    not_after = (now or datetime.now(UTC)) + timedelta(seconds=config.max_clock_skew_s)
    configured_as_of = config.as_of_datetime()
    if configured_as_of is not None and configured_as_of > not_after:
        raise ValueError(
            f"as_of {config.as_of} is in the future (this machine's clock says {not_after - timedelta(seconds=config.max_clock_skew_s):%Y-%m-%dT%H:%M:%SZ}, "
            f"allowed skew {config.max_clock_skew_s:g}s): nothing can have been viewed yet"
        )
    out_dir = Path(out_dir)
    output.check_replaceable(out_dir)  # before spending time on queries
    events_ref, articles_ref = table_refs(config)
    relations = {
        "events": schema.events_relation(
            events_ref,
            schema.check_events_columns(
                f"events table {events_ref.sql}", queries.table_columns(client, events_ref, "events")
            ),
        ),
        "articles": schema.articles_relation(
            articles_ref,
            schema.check_articles_columns(
                f"articles table {articles_ref.sql}", queries.table_columns(client, articles_ref, "articles")
            ),
        ),
    }
    searches_ref = searches.table_ref(config)
    if searches_ref is not None:
        relations["searches"] = schema.searches_relation(
            searches_ref,
            schema.check_searches_columns(
                f"searches table {searches_ref.sql}", queries.table_columns(client, searches_ref, "searches")
            ),
        )
    staging = (events_ref.project, events_ref.dataset) if read_client is not None else None
    runner = queries.QueryRunner(client, relations, config.location, use_storage_api, read_client, staging)

    parameters: dict[str, tuple[str, Any]] = {
        "as_of": ("TIMESTAMP", config.as_of_datetime()),
        "history_length": ("INT64", config.history_length),
        "seen_length": ("INT64", features.SEEN_LENGTH),
        "max_article_age_days": ("INT64", config.max_article_age_days),
        "lookback_days": ("INT64", config.lookback_days),
        "not_after": ("TIMESTAMP", not_after),
        **searches.parameters(config),
    }
    report = runner.run("input_report", parameters).to_pylist()[0]
    _refuse_unusable_input(report, events_ref, articles_ref, config)
    as_of = report["as_of"]
    parameters["as_of"] = ("TIMESTAMP", as_of)  # the three outputs share one resolved as_of
    protocol = split_protocol(config, as_of)
    parameters["split"] = ("STRING", protocol["protocol"])
    parameters["test_from"] = ("TIMESTAMP", as_of - timedelta(days=config.test_days))
    parameters["validation_from"] = ("TIMESTAMP", as_of - timedelta(days=config.test_days + config.validation_days))
    LOG.info(
        "as_of %s (%s); %d of %d events used",
        as_of.isoformat(),
        "configured" if config.as_of else "latest event",
        report["events_used"],
        report["events_rows"],
    )

    results = {name: runner.run(name, parameters) for name in OUTPUT_FILES}
    queries.check_history_order(results["training_examples"], config.history_length)
    found = searches.run(runner, parameters) if searches_ref is not None else None
    results = searches.attach(results, found)
    outputs = {name: output.conform(name, table) for name, table in results.items()}
    _refuse_empty_outputs(outputs, report, config)
    _refuse_empty_windows(outputs["training_examples"], protocol, report)
    outputs, warnings = drop_uninformative_created_at(outputs)

    splits = outputs["training_examples"].column(features.SPLIT).to_pylist()
    summary = ExtractSummary(
        as_of=as_of.isoformat(),
        first_viewed_at=report["first_viewed_at"].isoformat() if report["first_viewed_at"] else None,
        not_after=not_after.isoformat(timespec="seconds"),
        rows={
            "training_examples": outputs["training_examples"].num_rows,
            **{split: splits.count(split) for split in features.SPLITS},
            "user_histories": outputs["user_histories"].num_rows,
            "articles": outputs["articles"].num_rows,
            "listings": outputs["listings"].num_rows,
        },
        inputs={
            k: int(report[k])
            for k in (
                "events_rows",
                "articles_rows",
                "events_used",
                "users",
                "articles_viewed",
                "articles_with_removed_at",
            )
        }
        | ({k: found.report[k] for k in searches.INPUT_COUNTS} if found else {}),
        dropped={
            k: int(report[k])
            for k in (
                "events_missing_ids",
                "events_duplicates",
                "events_unknown_article",
                "events_in_future",
                "articles_missing_ids",
                "articles_duplicate_ids",
            )
        }
        | ({k: found.report[k] for k in searches.DROPPED_COUNTS} if found else {}),
        excluded={
            k: int(report[k])
            for k in ("events_after_as_of", "events_before_lookback", "articles_inactive", "articles_too_old")
        }
        | ({k: found.report[k] for k in searches.EXCLUDED_COUNTS} if found else {}),
        source=redact(source or f"bigquery project {client.project}"),  # an endpoint URL may carry credentials
        config=config_lib.to_dict(config),
        split=protocol,
        out_dir=str(out_dir.absolute()),
        warnings=warnings,
    )
    _log_cleaning(summary)
    summary.seconds = round(time.monotonic() - started, 3)
    output.write_extract_dir(out_dir, outputs, summary)
    LOG.info(
        "wrote %s: %d training examples (%s), %d user histories, %d articles",
        out_dir,
        summary.rows["training_examples"],
        ", ".join(f"{summary.rows[s]} {s}" for s in features.SPLITS),
        summary.rows["user_histories"],
        summary.rows["articles"],
    )
    return summary


def drop_uninformative_created_at(outputs: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """`outputs` without `created_at` where it carries no information, and the warning saying so.

    One `created_at` for every listing (an import date, a default) tells nothing about a listing's
    age, while the article tower would learn from the gap between that date and each view: the
    age feature is left out instead (every age unknown: `label_age_days` = features.UNKNOWN_AGE,
    `created_at` NULL in the corpus and the listings, so training, export and evaluation agree).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    listings = outputs["listings"]
    created = listings.column(features.CREATED_AT).drop_null()
    if listings.num_rows < 2 or len(created) < listings.num_rows or len(pc.unique(created)) != 1:
        return outputs, []
    warning = (
        f"every one of the {listings.num_rows} listings has the same created_at ({created[0].as_py().isoformat()}): "
        "it carries no information, so the age feature is left out (every age unknown)"
    )
    LOG.warning("%s", warning)
    out = dict(outputs)
    for name in ("articles", "listings"):
        table = out[name]
        index = table.schema.get_field_index(features.CREATED_AT)
        out[name] = table.set_column(
            index, table.schema.field(index), pa.nulls(table.num_rows, table.schema.field(index).type)
        )
    examples = out["training_examples"]
    index = examples.schema.get_field_index(features.LABEL_AGE)
    out["training_examples"] = examples.set_column(
        index,
        examples.schema.field(index),
        pa.array([features.UNKNOWN_AGE] * examples.num_rows, examples.schema.field(index).type),
    )
    return out, [warning]


def table_refs(config: ExtractConfig) -> tuple[schema.TableRef, schema.TableRef]:
    """The validated events and articles table identifiers named by `config`."""
    return (
        schema.TableRef.parse(config.events_table, config.project, config.dataset),
        schema.TableRef.parse(config.articles_table, config.project, config.dataset),
    )


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------
def _refuse_unusable_input(
    report: dict[str, Any], events: schema.TableRef, articles: schema.TableRef, config: ExtractConfig
) -> None:
    if report["events_rows"] == 0:
        raise ValueError(f"events table {events.sql} is empty")
    if report["articles_rows"] == 0:
        raise ValueError(f"articles table {articles.sql} is empty")
    if report["articles_rows"] == report["articles_missing_ids"]:
        raise ValueError(f"articles table {articles.sql}: column 'article_id' is empty (NULL or '') in every row")
    if report["events_used"] == 0:
        reasons = {
            "with a missing user_id, article_id or viewed_at": report["events_missing_ids"],
            "duplicates": report["events_duplicates"],
            f"with an article_id not in {articles.sql}": report["events_unknown_article"],
            "dated in the future (after the run's clock + max_clock_skew_s)": report["events_in_future"],
            f"after as_of {config.as_of}": report["events_after_as_of"],
            f"older than lookback_days={config.lookback_days}": report["events_before_lookback"],
        }
        why = "; ".join(f"{n} {reason}" for reason, n in reasons.items() if n)
        raise ValueError(f"events table {events.sql}: no usable events among {report['events_rows']} rows ({why})")


def _refuse_empty_outputs(outputs: dict[str, pa.Table], report: dict[str, Any], config: ExtractConfig) -> None:
    if outputs["training_examples"].num_rows == 0:
        raise ValueError(
            f"no training examples: none of the {report['users']} users has two or more views up to "
            "as_of (a training example needs an earlier view as its history)"
        )
    if outputs["articles"].num_rows == 0:
        raise ValueError(
            f"the candidate corpus is empty: of {report['articles_rows']} articles, "
            f"{report['articles_inactive']} are not active and {report['articles_too_old']} are older "
            f"than max_article_age_days={config.max_article_age_days}"
        )


def _refuse_empty_windows(examples: pa.Table, protocol: dict[str, Any], report: dict[str, Any]) -> None:
    """A time split whose train, validation or test window holds no example cannot be trained,
    chosen on or evaluated: say which window, its bounds and how many views the data has."""
    if protocol["protocol"] != config_lib.TIME_SPLIT:
        return
    splits = examples.column(features.SPLIT).to_pylist()
    first = report["first_viewed_at"].isoformat() if report["first_viewed_at"] else "?"
    windows = {
        features.TRAIN_SPLIT: f"[{first}, {protocol['validation_from']})",
        features.VALIDATION_SPLIT: f"[{protocol['validation_from']}, {protocol['test_from']})",
        features.TEST_SPLIT: f"[{protocol['test_from']}, {protocol['test_to']}]",
    }
    for split, window in windows.items():
        if split not in splits:
            counts = ", ".join(f"{splits.count(s)} {s}" for s in features.SPLITS)
            raise ValueError(
                f"the time split's {split} window {window} holds no example (a view with an earlier view of the "
                f"same user): the data has {report['events_used']} views from {first} to as_of {protocol['test_to']} "
                f"and {len(splits)} examples ({counts}); move the windows with --test-days and --validation-days, "
                "or use --split per-user"
            )


def _log_cleaning(summary: ExtractSummary) -> None:
    labels = {
        "events_missing_ids": "events with a missing user_id, article_id or viewed_at",
        "events_duplicates": "duplicate events (same user, article and viewed_at)",
        "events_unknown_article": "events whose article_id is not in the articles table",
        "events_in_future": f"events dated after {summary.not_after} (the run's clock + the allowed clock skew)",
        "articles_missing_ids": "articles with a missing article_id",
        "articles_duplicate_ids": "duplicate article rows (kept the most recently created)",
    }
    labels.update(searches.LABELS)
    for key, count in summary.dropped.items():
        if count:
            LOG.warning("dropped %d %s", count, labels[key])
    if summary.inputs.get("searches_truncated"):
        LOG.info(
            "cut %d queries longer than %d characters", summary.inputs["searches_truncated"], features.QUERY_MAX_CHARS
        )
    for key, count in summary.excluded.items():
        if count:
            LOG.info("excluded %d %s", count, key.replace("_", " "))
