"""Several worker processes behind one port (`candidates serve --workers N`): what they share.

uvicorn starts N processes that accept on one socket; a request reaches one of them. So that
they behave as one service:

  * the index is memory-mapped (`serving.index.faiss_index.read_index`): one copy in the page cache for all
    workers, not one each;
  * `POST /admin/reload` reaches every worker: the worker that took it reloads, and if that
    succeeded announces it on the `ReloadBus`, a small file in a directory `serve` creates for its
    workers (`CANDIDATES_RELOAD_BUS`); every worker polls it (`follow`, every 0.5 s) and reloads
    too, with the same `force`. A worker that is busy or rate-limited tries again at the next poll;
  * live writes (POST /v1/events, /v1/articles writes) need a shared store: with the embedded
    store each worker would keep its own copy and answers would silently diverge, so with
    several workers and no `--redis-url` the write endpoints answer 503 with the reason
    (`live_writes_refusal`). Reads are unaffected.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
from pathlib import Path

from serving.http.auth import WRITE_METHODS, WRITE_PREFIXES

LOG = logging.getLogger(__name__)

BUS_FILE = "reload.json"
FOLLOW_INTERVAL_S = 0.5


class ReloadBus:
    """Reload announcements shared by the worker processes of one `serve`, through a file.

    The file holds `{"generation": int, "force": bool}`; each announcement increments the
    generation (under an exclusive lock, written to a temporary file and renamed into place).
    """

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise FileNotFoundError(f"reload bus directory {self.directory} does not exist (set by `candidates serve`)")
        self.path = self.directory / BUS_FILE
        self.seen = self.read()[0]  # a worker starting now has already loaded what LATEST names

    def read(self) -> tuple[int, bool]:
        """`(generation, force)` of the latest announcement; `(0, False)` before the first."""
        try:
            record = json.loads(self.path.read_text())
            return int(record["generation"]), bool(record["force"])
        except (OSError, ValueError, KeyError, TypeError):
            return 0, False

    def announce(self, force: bool) -> int:
        """Tells the other workers to reload (this one already did); returns the new generation."""
        with open(self.directory / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            generation = self.read()[0] + 1
            staging = self.directory / f".{BUS_FILE}.{os.getpid()}"
            staging.write_text(json.dumps({"generation": generation, "force": force}))
            staging.replace(self.path)
        self.seen = generation
        LOG.info("reload announced to the other workers (generation %d)", generation)
        return generation

    async def follow(self, holder, interval_s: float = FOLLOW_INTERVAL_S) -> None:
        """Reloads `holder` whenever another worker announces a reload; runs until cancelled."""
        while True:
            await asyncio.sleep(interval_s)
            generation, force = self.read()
            if generation <= self.seen:
                continue
            with contextlib.suppress(Exception):  # the holder logs and records its own failures
                result = await holder.reload_async("admin (another worker)", force, wait=False)
                if result.deferred:  # busy or rate-limited: the next poll tries again
                    continue
                LOG.info("reload announced by another worker: %s", result.result)
            self.seen = generation


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
