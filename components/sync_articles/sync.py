"""Listings from a file or a BigQuery table, sent to a running service (`candidates sync-articles`)."""

from __future__ import annotations

import logging
from typing import Any

from homefeed import features

LOG = logging.getLogger(__name__)

BATCH = 1000
COLUMNS = ("article_id", "title", "category", "region", "status", "created_at")


def _rows(frame, since: str | None) -> list[dict[str, Any]]:
    import pandas as pd

    if "article_id" not in frame.columns:
        raise ValueError(f"the articles have no article_id column (columns: {list(frame.columns)})")
    if since is not None:
        if "created_at" not in frame.columns:
            raise ValueError("--since needs a created_at column")
        cutoff = pd.Timestamp(since)
        cutoff = cutoff.tz_localize("UTC") if cutoff.tzinfo is None else cutoff
        created = pd.to_datetime(frame["created_at"], utc=True)
        frame = frame[created >= cutoff]
    rows = []
    for record in frame[[c for c in COLUMNS if c in frame.columns]].to_dict("records"):
        row: dict[str, Any] = {"article_id": str(record["article_id"])}
        for name in ("title", "category", "region", "status"):
            value = record.get(name)
            if value is not None and not (isinstance(value, float) and value != value):
                row[name] = str(value)
        created = record.get("created_at")
        if created is not None and not pd.isna(created):
            stamp = pd.Timestamp(created)
            row["created_at"] = (stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp).isoformat()
        rows.append(row)
    return rows


def read_articles_file(path: str, since: str | None = None) -> list[dict[str, Any]]:
    """Rows of a Parquet or CSV articles file as PUT bodies (with `article_id`)."""
    import pandas as pd

    frame = pd.read_csv(path) if str(path).endswith(".csv") else pd.read_parquet(path)
    return _rows(frame, since)


def read_articles_table(
    project: str, dataset: str, table: str, since: str | None, endpoint: str | None
) -> list[dict[str, Any]]:
    """Rows of a BigQuery articles table (the official client; `endpoint` for the emulator)."""
    from google.cloud import bigquery

    if endpoint:
        from components.extract.warehouse import emulator_client

        client = emulator_client(endpoint, project)
    else:
        client = bigquery.Client(project=project)
    wanted = [c for c in COLUMNS if c == "article_id" or c in features.ARTICLES_OPTIONAL_COLUMNS]
    schema = {f.name for f in client.get_table(f"{project}.{dataset}.{table}").schema}
    query = f"SELECT {', '.join(c for c in wanted if c in schema)} FROM `{project}.{dataset}.{table}`"
    # Through Arrow: `to_dataframe` needs the optional db-dtypes package, which is not installed.
    frame = client.query(query).to_arrow(create_bqstorage_client=False).to_pandas()
    return _rows(frame, since)


def send_articles(
    service: str, rows: list[dict[str, Any]], token: str | None = None, timeout_s: float = 60.0
) -> dict[str, Any]:
    """POSTs `rows` to `service`/v1/articles in batches; `{"accepted", "rejected": [{index, reason}]}`."""
    import httpx

    from serving.query import ServiceError

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    accepted, rejected = 0, []
    with httpx.Client(base_url=service.rstrip("/"), timeout=timeout_s, headers=headers) as client:
        for start in range(0, len(rows), BATCH):
            batch = rows[start : start + BATCH]
            try:
                response = client.post("/v1/articles", json={"articles": batch})
            except httpx.HTTPError as error:
                raise ServiceError(f"cannot reach the service at {service}: {error}") from None
            body = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
            if response.status_code not in (200, 422):
                message = body.get("error", {}).get("message") if isinstance(body, dict) else response.text[:200]
                raise ServiceError(f"the service refused the listings ({response.status_code}): {message}")
            accepted += body.get("accepted", 0)
            rejected += [{**r, "index": r["index"] + start} for r in body.get("rejected", [])]
            LOG.info("sent %d of %d listings", min(start + BATCH, len(rows)), len(rows))
    return {"accepted": accepted, "rejected": rejected}
