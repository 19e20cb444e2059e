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

from homefeed import lifetime

if TYPE_CHECKING:  # heavy; imported where used
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
        row = con.execute("SELECT installed FROM duckdb_extensions() WHERE extension_name = 'spatial'").fetchone()
    return bool(row and row[0])


def _duckdb_config(home: Path | None) -> dict[str, str | bool | int | float | list[str]]:
    # Never let this helper connection fetch anything either.
    config: dict[str, str | bool | int | float | list[str]] = {
        "autoinstall_known_extensions": "false",
        "autoload_known_extensions": "false",
    }
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
        sys.executable,
        "-m",
        "bqemulator",
        "start",
        "--rest-host",
        "127.0.0.1",
        "--rest-port",
        "0",
        "--grpc-host",
        "127.0.0.1",
        "--grpc-port",
        "0",
        "--ephemeral",
        "--project",
        project,
        "--log-level",
        "info",
        "--log-format",
        "json",
    ]
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
            process.pid,
            endpoint,
            grpc_endpoint,
            time.monotonic() - started,
        )
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
            port = record.get("port")
            if event in ("rest.listen", "grpc.listen") and isinstance(port, int):
                self.ports[event.split(".")[0]].put(port)
            level = str(record.get("level", "")).lower()
            LOG.log(
                logging.WARNING if level in ("warning", "error", "critical") else logging.DEBUG,
                "bqemulator: %s",
                line[:2000],
            )


def _parse_json(line: str) -> dict[str, object]:
    if not line.startswith("{"):
        return {}
    try:
        value = json.loads(line)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _wait_for_port(
    process: subprocess.Popen[str], pump: _OutputPump, which: str, timeout: float, required: bool = True
) -> int | None:
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
