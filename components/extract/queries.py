"""Running the extract's SQL through the official BigQuery client: table columns, one query file at
a time with only the parameters it uses (results as Arrow, through the Storage Read API where
available), and the check that the engine built the history arrays in window order.
"""

from __future__ import annotations

import logging
import time
import uuid
import warnings
from typing import TYPE_CHECKING, Any

import sql
from components.extract import schema
from homefeed import features

if TYPE_CHECKING:
    import pyarrow as pa
    from google.cloud import bigquery

LOG = logging.getLogger(__name__)


def table_columns(client: bigquery.Client, table: schema.TableRef, what: str) -> dict[str, str]:
    from google.api_core import exceptions

    try:
        fields = client.get_table(table.path).schema
    except exceptions.NotFound:
        raise ValueError(f"{what} table {table.sql} not found") from None
    return {f.name: schema.normalise_type(f.field_type, f.mode) for f in fields}


class QueryRunner:
    """Renders and runs one query file with only the parameters it uses; results as Arrow."""

    def __init__(
        self,
        client: bigquery.Client,
        relations: dict[str, str],
        location: str | None,
        use_storage_api: bool,
        read_client: Any = None,
        staging: tuple[str, str] | None = None,
    ) -> None:
        self.client, self.relations, self.location = client, relations, location
        self.use_storage_api = use_storage_api
        self.read_client, self.staging = read_client, staging

    def run(self, name: str, parameters: dict[str, tuple[str, Any]]) -> pa.Table:
        from google.api_core import exceptions
        from google.cloud import bigquery

        text = sql.render_query(name, self.relations)
        used = sql.query_parameters(text)
        if used - set(parameters):
            raise RuntimeError(f"{name}.sql uses undefined parameters {sorted(used - set(parameters))}")
        job_config = bigquery.QueryJobConfig(
            query_parameters=[
                bigquery.ScalarQueryParameter(key, kind, value)
                for key, (kind, value) in sorted(parameters.items())
                if key in used
            ],
            use_legacy_sql=False,
            labels={"homefeed_stage": "extract", "homefeed_query": name},
        )
        started = time.monotonic()
        try:
            with warnings.catch_warnings():
                # google-cloud-bigquery's own Storage API reader announces a move to pandas-gbq.
                warnings.filterwarnings("ignore", "Retrieving Arrow record batches directly", PendingDeprecationWarning)
                if self.read_client is not None and self.staging is not None:
                    table = self._run_staged(name, text, job_config)
                else:
                    job = self.client.query(text, job_config=job_config, location=self.location)
                    table = job.to_arrow(create_bqstorage_client=self.use_storage_api, progress_bar_type=None)
        except exceptions.GoogleAPICallError as error:
            raise RuntimeError(f"{name}.sql failed: {getattr(error, 'message', error)}") from error
        LOG.info("%s.sql: %d rows in %.1fs", name, table.num_rows, time.monotonic() - started)
        return table

    def _run_staged(self, name: str, text: str, job_config: Any) -> pa.Table:
        """The query's result written to a scratch table, read through the Storage Read API."""
        assert self.staging is not None
        scratch = schema.TableRef(*self.staging, f"_homefeed_extract_{name}_{uuid.uuid4().hex[:8]}")
        self.client.query(
            f"CREATE OR REPLACE TABLE {scratch.sql} AS\n{text}", job_config=job_config, location=self.location
        ).result()
        try:
            return self.client.list_rows(scratch.path).to_arrow(
                bqstorage_client=self.read_client, progress_bar_type=None
            )
        finally:
            self.client.delete_table(scratch.path, not_found_ok=True)


def check_history_order(examples: pa.Table, history_length: int) -> None:
    """Check every history is exactly the views before its label, most recent first.

    `training_examples.sql` returns each example's `position` (1-based view number of the label)
    and `history_positions`; these must be `[position-1, position-2, ...]`, `min(position-1, H)`
    long, and the three history arrays as long as that. Raises RuntimeError otherwise, so an
    engine that ever built analytic ARRAY_AGG out of window order could not write wrong data.
    """
    import numpy as np
    import pyarrow.compute as pc

    if examples.num_rows == 0:
        return
    positions = examples.column("position").to_numpy()
    history_positions = examples.column("history_positions").combine_chunks()
    lengths = pc.fill_null(pc.list_value_length(history_positions), 0).to_numpy()
    problem = None
    if not np.array_equal(lengths, np.minimum(positions - 1, history_length)):
        problem = "a history has the wrong length"
    else:
        for column in (features.HISTORY, *(features.history_attribute(a) for a in features.ARTICLE_ATTRIBUTES)):
            other = pc.fill_null(pc.list_value_length(examples.column(column).combine_chunks()), 0).to_numpy()
            if not np.array_equal(other, lengths):
                problem = f"{column} is not parallel to history"
        values = pc.list_flatten(history_positions).to_numpy()
        step = np.arange(len(values)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        if not np.array_equal(values, np.repeat(positions, lengths) - 1 - step):
            problem = "a history is not in most-recent-first order"
    if problem:
        raise RuntimeError(
            f"training_examples.sql: {problem}; this engine does not build the window's ARRAY_AGG "
            "in window order. Nothing was written."
        )
