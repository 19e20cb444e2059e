"""The local BigQuery: start and stop a bqemulator on a free loopback port, and make clients.

The extract stage talks to BigQuery only through the official `google.cloud.bigquery.Client`.
Locally that client talks to a bqemulator (BigQuery's REST API over DuckDB) started here:

    with local_emulator() as emulator:
        client = emulator.client()
        ...

Why a subprocess rather than an in-process server:
  * bqemulator configures the *root* logger and structlog when it starts (`logging.basicConfig(...,
    force=True)`); in-process it would take over the CLI's log format;
  * its DuckDB holds the loaded tables in memory; a separate process gives that memory back on exit
    and can be killed if it hangs;
  * it asks the kernel for free ports itself (`--rest-port 0 --grpc-port 0`), and we read the
    ports it got from its start-up log lines, so there is no race between choosing and binding.

Results are best read through the emulator's gRPC Storage Read API (`Emulator.read_client()`),
as Arrow; its REST API sends every row as JSON (about 10x slower at 100k rows).

No network: bqemulator's DuckDB runs `INSTALL spatial; LOAD spatial` on start (GEOGRAPHY support)
and, unless disabled, `INSTALL avro`. Either would try to download from extensions.duckdb.org when
the extension is not installed yet. We install the spatial extension from the file shipped in the
PyPI package `duckdb-extension-spatial` into DuckDB's extension directory before the first start
(`INSTALL '<file>'`, after which `INSTALL spatial` is a no-op), and switch the avro extension off
(`BQEMU_ENABLE_FORMAT_EXTENSIONS=false`; we load Parquet and CSV only).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from components.extract import schema
from homefeed import features, lifetime

if TYPE_CHECKING:  # heavy; imported where used
    import pyarrow as pa
    from google.cloud import bigquery, bigquery_storage_v1

LOG = logging.getLogger(__name__)

DEFAULT_EMULATOR_PROJECT = "local-project"
STARTUP_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class Emulator:
    """A running emulator: its REST endpoint, its gRPC endpoint and the project it answers for."""

    endpoint: str  # REST, e.g. "http://127.0.0.1:43121"
    project: str = DEFAULT_EMULATOR_PROJECT
    grpc_endpoint: str | None = None  # Storage Read/Write API, e.g. "127.0.0.1:40871"

    def client(self) -> bigquery.Client:
        """An official BigQuery client pointed at this emulator (anonymous credentials)."""
        return emulator_client(self.endpoint, self.project)

    def read_client(self) -> bigquery_storage_v1.BigQueryReadClient | None:
        """An official BigQuery Storage Read API client for this emulator (None: no gRPC port)."""
        if self.grpc_endpoint is None:
            return None
        return emulator_read_client(self.grpc_endpoint)


def emulator_client(endpoint: str, project: str = DEFAULT_EMULATOR_PROJECT) -> bigquery.Client:
    """A `bigquery.Client` for an emulator at `endpoint` (e.g. `http://127.0.0.1:9050`).

    `client_options.api_endpoint` sends every REST call (queries, load jobs, tabledata) there;
    anonymous credentials mean google-auth never looks for, or refreshes, real credentials.
    """
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    if not endpoint.startswith(("http://", "https://")):
        endpoint = f"http://{endpoint}"
    return bigquery.Client(
        project=project,
        credentials=AnonymousCredentials(),
        client_options=ClientOptions(api_endpoint=endpoint.rstrip("/")),
    )


def emulator_read_client(grpc_endpoint: str) -> bigquery_storage_v1.BigQueryReadClient:
    """A Storage Read API client for an emulator's gRPC endpoint (`host:port`, plaintext).

    Reading query results as Arrow through the Storage Read API is what production does too;
    over the emulator's REST API every row would go through JSON, 10x slower. The receive limit
    is lifted because the emulator sends up to 65,536 rows per message regardless of their size.
    """
    import grpc
    from google.cloud import bigquery_storage_v1
    from google.cloud.bigquery_storage_v1.services.big_query_read.transports import BigQueryReadGrpcTransport

    channel = grpc.insecure_channel(grpc_endpoint, options=[("grpc.max_receive_message_length", -1)])
    return bigquery_storage_v1.BigQueryReadClient(transport=BigQueryReadGrpcTransport(channel=channel))


# ---------------------------------------------------------------------------------------------
# DuckDB spatial extension, installed from the PyPI wheel (never downloaded)
# ---------------------------------------------------------------------------------------------
def spatial_extension_file() -> Path:
    """The spatial extension binary shipped by `duckdb-extension-spatial` for this DuckDB version."""
    import duckdb
    import duckdb_extension_spatial

    version = duckdb.__version__
    package_dir = Path(duckdb_extension_spatial.__file__).parent
    path = package_dir / "extensions" / f"v{version}" / "spatial.duckdb_extension"
    if not path.is_file():
        raise FileNotFoundError(
            f"DuckDB spatial extension for duckdb {version} not found at {path}; install "
            f"duckdb-extension-spatial=={version} (the same version as duckdb)"
        )
    return path


def _spatial_installed(home: Path | None) -> bool:
    import duckdb

    with contextlib.closing(duckdb.connect(":memory:", config=_duckdb_config(home))) as con:
        row = con.execute(
            "SELECT installed FROM duckdb_extensions() WHERE extension_name = 'spatial'"
        ).fetchone()
    return bool(row and row[0])


def _duckdb_config(home: Path | None) -> dict[str, str]:
    # Never let this helper connection fetch anything either.
    config = {"autoinstall_known_extensions": "false", "autoload_known_extensions": "false"}
    if home is not None:
        config["home_directory"] = str(home)
    return config


def ensure_spatial_extension(home: Path | None = None) -> Path | None:
    """Make sure DuckDB under `home` (None: the user's home) has the spatial extension installed.

    Returns the home directory the emulator must run with (None: the user's own). When the user's
    home is not writable (some containers), falls back to a private directory under the temp dir.
    """
    import duckdb

    if _spatial_installed(home):
        return home
    source = spatial_extension_file()
    try:
        with contextlib.closing(duckdb.connect(":memory:", config=_duckdb_config(home))) as con:
            con.execute(f"INSTALL '{_sql_literal(str(source))}'")
        LOG.info("installed the DuckDB spatial extension from %s", source)
        return home
    except (duckdb.Error, OSError) as error:
        if home is not None:
            raise
        fallback = Path(tempfile.gettempdir()) / f"homefeed-duckdb-{os.getuid()}"
        LOG.warning("cannot install the DuckDB spatial extension under ~ (%s); using %s", error, fallback)
        fallback.mkdir(parents=True, exist_ok=True)
        return ensure_spatial_extension(fallback)


def _sql_literal(text: str) -> str:
    return text.replace("'", "''")


# ---------------------------------------------------------------------------------------------
# The emulator process
# ---------------------------------------------------------------------------------------------
EMULATOR_WORKDIR_PREFIX = "homefeed-bqemu-"


@contextlib.contextmanager
def local_emulator(
    project: str = DEFAULT_EMULATOR_PROJECT,
    *,
    startup_timeout: float = STARTUP_TIMEOUT_S,
    duckdb_home: Path | None = None,
) -> Iterator[Emulator]:
    """Run a throw-away, in-memory bqemulator on loopback for the duration of the `with` block.

    Yields an `Emulator` (endpoint + project). The process is stopped (SIGTERM, then SIGKILL) on
    exit, also on errors and Ctrl-C; its data is gone afterwards.
    """
    home = ensure_spatial_extension(duckdb_home)
    # Scratch space named for this process; those of killed runs are removed first.
    lifetime.remove_stale_dirs(tempfile.gettempdir(), EMULATOR_WORKDIR_PREFIX)
    workdir = lifetime.owned_dir(tempfile.gettempdir(), EMULATOR_WORKDIR_PREFIX)
    env = _emulator_env(home, workdir)
    command = [
        sys.executable, "-m", "bqemulator", "start",
        "--rest-host", "127.0.0.1", "--rest-port", "0",
        "--grpc-host", "127.0.0.1", "--grpc-port", "0",
        "--ephemeral", "--project", project,
        "--log-level", "info", "--log-format", "json",
    ]  # fmt: skip
    started = time.monotonic()
    process = subprocess.Popen(
        lifetime.dies_with_parent(command),  # killed by the kernel if extract dies, even by SIGKILL
        cwd=workdir,  # bqemulator reads ./.bqemu.toml: run where there is none
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
    )
    pump = _OutputPump(process)
    try:
        port = _wait_for_port(process, pump, "rest", startup_timeout)
        endpoint = f"http://127.0.0.1:{port}"
        _wait_healthy(endpoint, process, deadline=started + startup_timeout)
        # The gRPC server starts right after REST; without it results come over REST (slower).
        grpc_port = _wait_for_port(process, pump, "grpc", 10.0, required=False)
        grpc_endpoint = f"127.0.0.1:{grpc_port}" if grpc_port else None
        LOG.info(
            "BigQuery emulator (bqemulator, pid %d) ready at %s (gRPC %s) in %.1fs",
            process.pid, endpoint, grpc_endpoint, time.monotonic() - started,
        )  # fmt: skip
        yield Emulator(endpoint=endpoint, project=project, grpc_endpoint=grpc_endpoint)
    finally:
        _stop(process, pump)
        shutil.rmtree(workdir, ignore_errors=True)


def _emulator_env(home: Path | None, workdir: Path) -> dict[str, str]:
    # Start from our environment minus any BQEMU_* settings a user may have exported for another
    # emulator, then pin what matters here.
    env = {k: v for k, v in os.environ.items() if not k.startswith("BQEMU_")}
    env.pop("BIGQUERY_EMULATOR_HOST", None)
    if home is not None:
        env["HOME"] = str(home)  # DuckDB's extension directory is ~/.duckdb/extensions
    env.update(
        {
            "BQEMU_ENABLE_FORMAT_EXTENSIONS": "false",  # no `INSTALL avro` (a download)
            "BQEMU_TRACING_ENABLED": "false",
            "BQEMU_METRICS_ENABLED": "false",
            # Also the gRPC send limit: Storage Read responses carry up to 65,536 rows each.
            "BQEMU_WRITE_API_MAX_REQUEST_BYTES": str(1024 * 1024 * 1024),
            "BQEMU_QUERY_CACHE_TTL_SECONDS": "0",  # every run sees freshly loaded tables
            "BQEMU_UPLOAD_STAGING_DIR": str(workdir / "uploads"),
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


class _OutputPump:
    """Drains the emulator's stdout on a thread (so it never blocks on a full pipe).

    Lines go to our DEBUG log (warnings and errors to WARNING); the REST port, once announced,
    goes to `ports`.
    """

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.ports: dict[str, queue.Queue[int]] = {"rest": queue.Queue(), "grpc": queue.Queue()}
        self.tail: list[str] = []
        self._thread = threading.Thread(target=self._run, args=(process,), daemon=True)
        self._thread.start()

    def join(self) -> None:
        """Wait for the pipe to reach end-of-file (the process has exited)."""
        self._thread.join(timeout=5)

    def _run(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            line = line.rstrip()
            if not line:
                continue
            self.tail = (self.tail + [line])[-30:]
            record = _parse_json(line)
            event = str(record.get("event", ""))
            if event in ("rest.listen", "grpc.listen") and isinstance(record.get("port"), int):
                self.ports[event.split(".")[0]].put(record["port"])
            level = str(record.get("level", "")).lower()
            LOG.log(logging.WARNING if level in ("warning", "error", "critical") else logging.DEBUG,
                    "bqemulator: %s", line[:2000])  # fmt: skip


def _parse_json(line: str) -> dict[str, object]:
    if not line.startswith("{"):
        return {}
    try:
        value = json.loads(line)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _wait_for_port(process: subprocess.Popen[str], pump: _OutputPump, which: str, timeout: float,
                   required: bool = True) -> int | None:  # fmt: skip
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return pump.ports[which].get(timeout=0.1)
        except queue.Empty:
            if process.poll() is not None:
                raise RuntimeError(
                    f"the BigQuery emulator exited during start-up (status {process.returncode}):\n"
                    + "\n".join(pump.tail[-15:])
                ) from None
    if not required:
        return None
    raise TimeoutError(f"the BigQuery emulator did not start within {timeout:.0f}s")


def _wait_healthy(endpoint: str, process: subprocess.Popen[str], deadline: float) -> None:
    while True:
        try:
            with urllib.request.urlopen(f"{endpoint}/healthz", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if process.poll() is not None:
            raise RuntimeError(f"the BigQuery emulator exited during start-up (status {process.returncode})")
        if time.monotonic() > deadline:
            raise TimeoutError(f"the BigQuery emulator at {endpoint} did not become healthy")
        time.sleep(0.05)


def _stop(process: subprocess.Popen[str], pump: _OutputPump) -> None:
    if process.poll() is None:
        process.terminate()  # bqemulator shuts down cleanly on SIGTERM
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            LOG.warning("the BigQuery emulator (pid %d) ignored SIGTERM; killing it", process.pid)
            process.kill()
            process.wait(timeout=STOP_TIMEOUT_S)
    pump.join()
    LOG.debug("BigQuery emulator (pid %d) stopped, status %s", process.pid, process.returncode)


# ---------------------------------------------------------------------------------------------
# Loading local Parquet / CSV files into the warehouse
# ---------------------------------------------------------------------------------------------
CONTRACTS: dict[str, dict[str, str]] = {
    "events": dict(features.EVENTS_REQUIRED_COLUMNS),
    "articles": {**features.ARTICLES_REQUIRED_COLUMNS, **features.ARTICLES_OPTIONAL_COLUMNS},
    "searches": dict(features.SEARCHES_REQUIRED_COLUMNS),
}
_REQUIRED = {
    "events": features.EVENTS_REQUIRED_COLUMNS,
    "articles": features.ARTICLES_REQUIRED_COLUMNS,
    "searches": features.SEARCHES_REQUIRED_COLUMNS,
}


def read_input_file(path: str | Path, table: str) -> pa.Table:
    """Read the `events`, `articles` or `searches` table from a Parquet file (or directory) or a CSV file.

    Keeps only the contract's columns (extra ones are ignored), renamed to their contract spelling,
    and returns them typed for loading: strings stay strings (CSV ids are never turned into
    numbers, so `0042` stays `0042`), timestamps become `timestamp[us, UTC]` (values without a zone
    are taken as UTC). Raises FileNotFoundError for a missing file and ValueError naming the file
    and column for a missing required column, a wrong type or an unreadable timestamp.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{table} file not found: {path}")
    contract = CONTRACTS[table]
    label = f"{table} file {str(path)!r}"
    fmt = _file_format(path, label)
    if fmt == "csv":
        data = _read_csv(path, contract, label)
    else:
        try:
            data = pq.read_table(path)
        except (pa.ArrowInvalid, OSError) as error:
            raise ValueError(f"{label}: not a readable Parquet file ({error})") from None
    data = _decode_dictionaries(data)
    columns = {field.name: _bigquery_type(field.type) for field in data.schema}
    found = schema.check_columns(label, columns, _REQUIRED[table], contract)
    arrays, names = [], []
    for name, (actual_name, _kind) in found.items():
        column = data.column(actual_name)
        if pa.types.is_timestamp(column.type):
            if column.type.tz is None:
                column = column.cast(pa.timestamp(column.type.unit, tz="UTC"))
            column = column.cast(pa.timestamp("us", tz="UTC"), safe=False)  # BigQuery keeps microseconds
        elif pa.types.is_large_string(column.type):
            column = column.cast(pa.string())
        arrays.append(column)
        names.append(name)
    return pa.table(arrays, names=names)


def _file_format(path: Path, label: str) -> str:
    name = path.name.lower()
    if path.is_dir() or name.endswith((".parquet", ".pq", ".parq")):
        return "parquet"
    if name.endswith((".csv", ".csv.gz", ".csv.bz2")):
        return "csv"
    raise ValueError(f"{label}: unknown file type; expected .parquet (or a directory of them) or .csv")


def _read_csv(path: Path, contract: dict[str, str], label: str) -> pa.Table:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    try:
        with pacsv.open_csv(path) as reader:  # reads the header and one block, for the names
            names = reader.schema.names
    except (pa.ArrowInvalid, OSError) as error:
        raise ValueError(f"{label}: not a readable CSV file ({error})") from None
    wanted = {name.lower() for name in contract}
    as_text = {name: pa.string() for name in names if name.lower() in wanted}
    try:
        data = pacsv.read_csv(
            path,
            convert_options=pacsv.ConvertOptions(
                column_types=as_text, include_columns=list(as_text), strings_can_be_null=True
            ),
        )
    except (pa.ArrowInvalid, OSError) as error:
        raise ValueError(f"{label}: not a readable CSV file ({error})") from None
    for name in data.column_names:
        if contract.get(name.lower()) == "TIMESTAMP":
            index = data.column_names.index(name)
            data = data.set_column(index, name, _parse_timestamps(data.column(name), f"{label}: column '{name}'"))
    return data


def _parse_timestamps(column: pa.ChunkedArray, label: str) -> pa.Array:
    import pandas as pd
    import pyarrow as pa

    text = column.to_pandas()
    parsed = pd.to_datetime(text, utc=True, format="ISO8601", errors="coerce")
    bad = parsed.isna() & text.notna() & (text.str.strip() != "")
    if bad.any():
        row = int(bad.idxmax())
        raise ValueError(
            f"{label}: cannot read {text[row]!r} (data row {row + 1}) as a timestamp; expected ISO 8601 "
            "such as 2024-03-01T12:00:00Z or 2024-03-01"
        )
    return pa.array(parsed.dt.as_unit("us"), type=pa.timestamp("us", tz="UTC"))


def _decode_dictionaries(data: pa.Table) -> pa.Table:
    """pandas categoricals arrive as dictionary columns; BigQuery wants their values."""
    import pyarrow as pa

    for index, field in enumerate(data.schema):
        if pa.types.is_dictionary(field.type):
            data = data.set_column(index, field.name, data.column(index).cast(field.type.value_type))
    return data


def _bigquery_type(arrow_type: pa.DataType) -> str:
    import pyarrow as pa

    checks = (
        (pa.types.is_string, "STRING"), (pa.types.is_large_string, "STRING"),
        (pa.types.is_timestamp, "TIMESTAMP"), (pa.types.is_date, "DATE"),
        (pa.types.is_integer, "INT64"), (pa.types.is_floating, "FLOAT64"),
        (pa.types.is_boolean, "BOOL"), (pa.types.is_binary, "BYTES"),
        (pa.types.is_decimal, "NUMERIC"), (pa.types.is_null, "NULL (an all-empty column)"),
    )  # fmt: skip
    for check, name in checks:
        if check(arrow_type):
            return name
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
        return f"ARRAY<{_bigquery_type(arrow_type.value_type)}>"
    return str(arrow_type).upper()


def load_table(client: bigquery.Client, table: schema.TableRef, data: pa.Table) -> int:
    """Replace `table` with `data` (from `read_input_file`) through a Parquet load job; rows loaded.

    The dataset is created if missing. The job carries an explicit schema in the same column order
    as the file (bqemulator inserts Parquet columns by position).
    """
    import io

    import pyarrow.parquet as pq
    from google.cloud import bigquery

    fields = []
    for f in data.schema:
        kind = _bigquery_type(f.type)
        if kind not in ("STRING", "TIMESTAMP", "DATE", "INT64", "FLOAT64", "BOOL", "BYTES", "NUMERIC"):
            raise ValueError(f"cannot load column '{f.name}' of type {f.type} into {table}")
        fields.append(bigquery.SchemaField(f.name, kind))
    client.create_dataset(bigquery.Dataset(f"{table.project}.{table.dataset}"), exists_ok=True)
    client.delete_table(table.path, not_found_ok=True)  # a fresh schema, not the last run's
    buffer = io.BytesIO()
    pq.write_table(data, buffer)
    buffer.seek(0)
    job = client.load_table_from_file(
        buffer,
        table.path,
        job_config=bigquery.LoadJobConfig(
            source_format=bigquery.SourceFormat.PARQUET,
            schema=fields,
            write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE,
            create_disposition=bigquery.CreateDisposition.CREATE_IF_NEEDED,
        ),
    )
    job.result()
    LOG.info("loaded %d rows into %s", data.num_rows, table)
    return data.num_rows
