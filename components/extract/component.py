"""Kubeflow component: the SQL stage (a thin wrapper over `components.extract.extract`)."""

from kfp import dsl
from kfp.dsl import Dataset, Metrics, Output

from components.image import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def extract(
    project: str,
    dataset: str,
    events_table: str,
    articles_table: str,
    location: str,
    as_of: str,
    history_length: int,
    max_article_age_days: int,
    lookback_days: int,
    bigquery_endpoint: str,
    local_events: str,
    local_articles: str,
    searches_table: str,
    local_searches: str,
    search_length: int,
    split: str,
    test_days: float,
    validation_days: float,
    examples: Output[Dataset],
    summary: Output[Metrics],
):
    """Runs sql/*.sql and writes EXTRACT_DIR (docs/architecture.md) at `examples.path`.

    Where the tables come from, in order:
      * `local_events` and `local_articles` set (Parquet/CSV paths): an embedded BigQuery emulator
        is started on loopback, the files are loaded into it and the same SQL runs there;
      * `bigquery_endpoint` set: an emulator already running at that URL, tables already loaded;
      * otherwise: BigQuery itself, `project`.`dataset`, with the pod's default credentials.
    The optional searches table: `local_searches` (a file, with the local files) or
    `searches_table` (a table name); both empty: no searches, exactly the extract without them.
    `split`: "time", "per-user", or empty: what the local files' dataset.json asks for, else "time"
    (homefeed.config.ExtractConfig); `test_days` and `validation_days` size the time split's windows.
    Empty strings and zeros mean "not set" (KFP parameters have no None).
    """
    from components import runtime

    stage = runtime.start("extract")
    from components.extract import extract as extracting
    from components.extract import warehouse
    from homefeed.config import ExtractConfig

    config = ExtractConfig(
        project=project,
        dataset=dataset,
        events_table=events_table,
        articles_table=articles_table,
        location=location or None,
        as_of=as_of or None,
        history_length=history_length,
        max_article_age_days=max_article_age_days or None,
        lookback_days=lookback_days or None,
        searches_table=searches_table or ("searches" if local_searches else None),
        search_length=search_length,
        split=split or None,
        test_days=test_days,
        validation_days=validation_days,
    )
    if bool(local_events) != bool(local_articles):
        raise ValueError("set both local_events and local_articles (files for the embedded emulator), or neither")
    if local_searches and not local_events:
        raise ValueError("local_searches goes with local_events and local_articles; for a table use searches_table")
    if local_events:
        result = extracting.extract_local(
            local_events,
            local_articles,
            examples.path,
            config,
            endpoint=bigquery_endpoint or None,
            searches_path=local_searches or None,
        )
    elif bigquery_endpoint:
        client = warehouse.emulator_client(bigquery_endpoint, project)
        result = extracting.extract_bigquery(
            client, examples.path, config, use_storage_api=False, source=f"emulator at {bigquery_endpoint}"
        )
    else:
        from google.cloud import bigquery

        client = bigquery.Client(project=project, location=location or None)
        result = extracting.extract_bigquery(client, examples.path, config)

    for line in result.describe().splitlines():
        stage.log.info("%s", line.strip())
    # The split protocol travels with the examples: evaluate reports under it.
    examples.metadata.update({"as_of": result.as_of, "source": result.source, "split": result.split, **result.rows})
    for name, value in {**result.rows, **result.inputs}.items():
        summary.log_metric(name, value)
    for name, value in result.dropped.items():
        summary.log_metric(f"dropped_{name}", value)
    summary.log_metric("seconds", stage.seconds)
