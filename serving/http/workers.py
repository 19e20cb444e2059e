"""Several worker processes behind one port: gunicorn with uvicorn workers, the model loaded before fork.

`candidates serve --workers N` runs gunicorn (`Service`, programmatically); the same setup runs as

    CANDIDATES_MODEL=/srv/publish gunicorn -c python:serving.http.gunicorn_conf \\
        -b 0.0.0.0:8080 -w 2 'serving.http.app:create_app_from_environment(preload=True)'

What the processes share and how they stay one service:

  * `preload_app`: the gunicorn master builds the app and loads the model pair (index memory-mapped,
    per-article arrays, the embedded history store, the live corpus' attribute and region arrays)
    before it forks; every worker reads the same pages (copy-on-write, `gc.freeze` keeps the
    collector from touching them), so one more worker costs only what it allocates itself. A model
    without NumPy towers is the exception: TensorFlow's thread pools do not survive fork, so each
    worker loads that SavedModel itself (`serving.http.startup.preload_model`);
  * a model reload reaches every worker because gunicorn replaces them: SIGHUP to the master reloads
    the pair in the master (`on_reload`), forks new workers from it and stops the old ones
    gracefully. `POST /admin/reload` (or SIGHUP) on a worker loads the version there first, to
    answer for it, then sends SIGHUP to the master; a change of a publish root's LATEST is seen by
    a thread of the master (`watch_latest`), which sends SIGHUP to its own process;
  * `/metrics` adds up the counters of every worker: prometheus_client's multiprocess mode
    (PROMETHEUS_MULTIPROC_DIR, made and emptied at start-up; a dead worker's live gauges go with
    `mark_process_dead`);
  * no worker outlives the master: each asks the kernel to kill it when its parent dies (SIGKILL
    of the master included); SIGTERM stops the workers gracefully (gunicorn's own);
  * live writes (POST /v1/events, /v1/articles writes) need a shared store: with the embedded store
    each worker would keep its own copy and answers would silently diverge, so with several
    workers and no `--redis-url` the write endpoints answer 503 with the reason
    (`live_writes_refusal`). Reads are unaffected.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

from gunicorn.app.base import BaseApplication
from uvicorn_worker import UvicornWorker

from homefeed.layout.publish_root import LATEST_FILE
from serving.http.auth import WRITE_METHODS, WRITE_PREFIXES
from serving.http.server import JsonHttpProtocol
from serving.http.settings import ServiceSettings

LOG = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
MULTIPROC_DIR_PREFIX = "candidates-metrics-"
GRACEFUL_TIMEOUT_S = 10  # in-flight requests finish before an old worker stops (reload, SIGTERM)


class CandidateWorker(UvicornWorker):
    """uvicorn in a gunicorn worker, with the service's HTTP edges (serving/http/server.py)."""

    CONFIG_KWARGS: ClassVar[dict[str, Any]] = {"loop": "auto", "http": JsonHttpProtocol, "access_log": False}


class AccessLogWorker(CandidateWorker):
    """`CandidateWorker` that logs every request (`candidates serve --access-log`)."""

    CONFIG_KWARGS: ClassVar[dict[str, Any]] = {**CandidateWorker.CONFIG_KWARGS, "access_log": True}


def limit_openmp_threads(settings: ServiceSettings) -> None:
    """OMP_NUM_THREADS = `faiss_threads` (unless set), before FAISS loads OpenMP: a worker forked from
    a master that used OpenMP otherwise searches on a default-sized team from its request threads
    (measured: FAISS search 11 ms instead of 1 ms per request, 2 workers, 10^6 articles)."""
    if settings.faiss_threads > 0:
        os.environ.setdefault("OMP_NUM_THREADS", str(settings.faiss_threads))


def gunicorn_options(settings: ServiceSettings) -> dict[str, Any]:
    """gunicorn settings for the service: its workers, preload, limits and the hooks below."""
    JsonHttpProtocol.header_timeout_s = settings.header_timeout_s
    JsonHttpProtocol.max_header_bytes = settings.max_header_bytes
    return {
        "bind": [f"{settings.host}:{settings.port}"],
        "workers": settings.workers,
        "worker_class": f"{__name__}.{'AccessLogWorker' if settings.access_log else 'CandidateWorker'}",
        "preload_app": True,
        "keepalive": max(1, math.ceil(settings.keep_alive_s)),  # whole seconds (uvicorn's timeout_keep_alive)
        "graceful_timeout": GRACEFUL_TIMEOUT_S,
        "timeout": 60,  # a worker silent this long (its event loop stuck) is killed and replaced
        "on_starting": on_starting,
        "when_ready": when_ready,
        "post_fork": post_fork,
        "child_exit": child_exit,
        "on_reload": on_reload,
    }


class Service(BaseApplication):
    """gunicorn running the candidate service with `settings` (`candidates serve --workers N`)."""

    def __init__(self, settings: ServiceSettings):
        self.settings = settings
        self.options = gunicorn_options(settings)
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        from serving.http.app import create_app

        return create_app(self.settings, preload=True)


def run(settings: ServiceSettings) -> None:
    """Serves with `settings.workers` processes until SIGTERM/SIGINT (gunicorn's master loop)."""
    made = not os.environ.get(MULTIPROC_ENV)
    directory = prepare_multiprocess_metrics()
    try:
        Service(settings).run()
    finally:
        if made:
            shutil.rmtree(directory, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Metrics of every worker: prometheus_client's multiprocess mode.
# ---------------------------------------------------------------------------------------------
def prepare_multiprocess_metrics() -> Path:
    """Sets PROMETHEUS_MULTIPROC_DIR (a new directory unless given) and empties it; before
    prometheus_client is imported, which reads the variable once."""
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        directory = Path(given)
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.db"):  # counters of an earlier run must not be added in
            stale.unlink()
    else:
        from homefeed import lifetime

        # Named for this process: the next start removes what a killed master left.
        lifetime.remove_stale_dirs(tempfile.gettempdir(), MULTIPROC_DIR_PREFIX)
        directory = lifetime.owned_dir(tempfile.gettempdir(), MULTIPROC_DIR_PREFIX)
        os.environ[MULTIPROC_ENV] = str(directory)
    return directory


# ---------------------------------------------------------------------------------------------
# gunicorn server hooks (master process unless said otherwise).
# ---------------------------------------------------------------------------------------------
def on_starting(server) -> None:
    if not os.environ.get(MULTIPROC_ENV):
        raise RuntimeError(f"{MULTIPROC_ENV} is not set: use serving.http.gunicorn_conf as the gunicorn config")


def when_ready(server) -> None:
    """Starts the master's LATEST watcher (a publish root, unless --no-watch)."""
    from serving.versions.files import is_publish_root

    settings = server.app.wsgi().state.settings
    if settings.watch_latest and is_publish_root(settings.model):
        threading.Thread(
            target=watch_latest,
            args=(Path(settings.model), settings.watch_interval_s),
            name="latest-watcher",
            daemon=True,
        ).start()


def _read_latest(root: Path) -> str | None:
    try:
        return (root / LATEST_FILE).read_text().strip() or None
    except OSError:
        return None


def watch_latest(root: Path, interval_s: float) -> None:
    """Sends SIGHUP to this (the master) process whenever the publish root's LATEST changes; a
    version that fails to load is not retried until LATEST changes again."""
    LOG.info("watching %s every %.1fs for new versions", root / LATEST_FILE, interval_s)
    seen = _read_latest(root)
    while True:
        time.sleep(interval_s)
        try:
            latest = _read_latest(root)
            if latest is not None and latest != seen:
                seen = latest
                LOG.info("LATEST changed: reloading every worker")
                os.kill(os.getpid(), signal.SIGHUP)
        except Exception:  # the watcher must outlive any one failure
            LOG.exception("watching %s failed; will retry", root)


def post_fork(server, worker) -> None:
    """In the new worker: dies with the master, even when the master is SIGKILLed; knows how many
    workers there are (gunicorn's -w may differ from CANDIDATES_WORKERS)."""
    from homefeed.lifetime import die_with_parent

    die_with_parent(server.pid)
    app = server.app.wsgi()
    if app.state.settings.workers != server.cfg.workers:
        app.state.settings = app.state.settings.model_copy(update={"workers": server.cfg.workers})


def child_exit(server, worker) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_reload(server) -> None:
    """SIGHUP: the master loads what --model points at now; the new workers fork from it. A version
    that does not load leaves the master's pair (and so the new workers') as it was."""
    app = server.app.wsgi()
    from serving.http.startup import preload_model

    preload_model(app, "SIGHUP (every worker)")


def signal_master(master_pid: int) -> None:
    """Asks the gunicorn master to reload every worker (from a worker)."""
    if os.getppid() == master_pid:
        os.kill(master_pid, signal.SIGHUP)
    else:
        LOG.error("the gunicorn master %d is gone; this worker cannot pass the reload on", master_pid)


def live_writes_refusal(method: str, path: str, settings) -> str | None:
    """Why a live write must be refused in this process, or None: several workers, no shared store."""
    if settings.workers <= 1 or settings.redis_url or method not in WRITE_METHODS:
        return None
    if not path.startswith(WRITE_PREFIXES):
        return None
    return (
        f"live writes need --redis-url when the service runs {settings.workers} worker processes: each would "
        "keep its own embedded store and answers would differ by worker; serve with --redis-url, or --workers 1"
    )
