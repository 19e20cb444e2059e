"""Holds the model pair being served and replaces it, whole, when a new version is loaded.

Swapping is one attribute assignment of an immutable `ModelPair`, done only after the new pair
loaded and passed every check; a request reads `holder.pair` once and keeps using that object, so
in-flight requests finish on the old pair while new ones get the new pair. A version that fails
to load is logged, counted (`candidates_model_reloads{result="rejected"}`) and remembered, so a
watcher does not retry it every few seconds; the old pair keeps serving.

Triggers: `POST /admin/reload`, SIGHUP, and (for a publish root) a change of `LATEST`, polled.

Reloads never hold up requests: they run on one dedicated, lower-priority thread (`reload_async`;
the hashing of every file and the loading happen there, hashlib and TensorFlow release the GIL),
one at a time (a second one asked for meanwhile is answered "busy"), and at most one load per
`min_interval_s` ("rate_limited" with the seconds to wait), so repeated `?force=true` cannot
keep the machine loading models. `last_error` always describes the latest attempt: a later
"loaded" or "unchanged" clears it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from homefeed.layout import publish_root as publish_layout
from serving.metrics import ServiceMetrics
from serving.versions import files as model_files
from serving.versions.pair import ModelPair, load_model_pair

LOG = logging.getLogger(__name__)


RELOAD_NICENESS = 10  # the reload thread yields the CPU to request threads


@dataclass(frozen=True)
class ReloadResult:
    """What a reload did: `result` is "loaded", "unchanged", "rejected", "busy" or "rate_limited"."""

    result: str
    model_version: str | None
    previous_version: str | None
    message: str
    trigger: str = ""
    retry_after_s: float | None = None  # for "busy" and "rate_limited"
    at: float = 0.0  # wall-clock time of the answer

    @property
    def ok(self) -> bool:
        return self.result in ("loaded", "unchanged")

    @property
    def deferred(self) -> bool:
        """Not attempted now (busy or rate-limited): nothing changed, try again later."""
        return self.result in ("busy", "rate_limited")


def _lower_priority() -> None:
    """Thread initializer: a higher nice value for this thread only (Linux threads have their own)."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), RELOAD_NICENESS)


class ModelHolder:
    """The current `ModelPair` for a `--model` source (a model directory or a publish root).

    Args:
      source: what `--model` named.
      loader: `model_dir -> ModelPair` (`load_model_pair` with the service's options).
      metrics: where reloads and the model version are recorded.
      min_interval_s: at most one load per this many seconds (the first load is never limited).
    """

    def __init__(
        self,
        source: str | os.PathLike,
        loader: Callable[[Path], ModelPair] = load_model_pair,
        metrics: ServiceMetrics | None = None,
        min_interval_s: float = 0.0,
    ):
        self.source = Path(source)
        self.pair: ModelPair | None = None
        self.last_error: str | None = None
        self.last_reload: ReloadResult | None = None
        self.min_interval_s = min_interval_s
        self._loader = loader
        self._metrics = metrics
        self._lock = threading.Lock()
        self._latest_seen: str | None = None  # the LATEST text last acted upon (loaded or rejected)
        self._last_load: float | None = None  # monotonic time the last load began
        # Called with a newly loaded pair on the reload thread, before the swap: what requests of the
        # new pair need is built there (serving/live/state.py: the live listings' vectors).
        self.prepare: Callable[[ModelPair], None] | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="model-reload", initializer=_lower_priority)

    @property
    def is_publish_root(self) -> bool:
        return model_files.is_publish_root(self.source)

    async def reload_async(self, trigger: str, force: bool = False, wait: bool = True) -> ReloadResult:
        """`reload` on the dedicated reload thread; the event loop (and every request) keeps going."""
        if not wait and self._lock.locked():
            previous = self.pair.version if self.pair else None
            return self._record("busy", previous, previous, "a reload is already running", trigger, retry_after_s=1.0)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(self.reload, trigger, force, wait))

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def reload(self, trigger: str, force: bool = False, wait: bool = True) -> ReloadResult:
        """Loads what `source` points at now and swaps it in if it is a different, working version.

        Args:
          trigger: why (for the log): "startup", "admin", "SIGHUP", "LATEST changed".
          force: load even when the version is the one already served.
          wait: wait for a reload in progress to finish (else answer "busy" at once).
        """
        if not self._lock.acquire(blocking=wait):  # one load at a time; requests never take this lock
            previous = self.pair.version if self.pair else None
            return self._record("busy", previous, previous, "a reload is already running", trigger, retry_after_s=1.0)
        try:
            return self._reload_locked(trigger, force)
        finally:
            self._lock.release()

    def _reload_locked(self, trigger: str, force: bool) -> ReloadResult:
        previous = self.pair.version if self.pair else None
        try:
            resolved = model_files.resolve_model_dir(self.source)
            if (
                not force
                and self.pair is not None
                and resolved.model_dir.resolve() == self.pair.model_dir.resolve()
                and model_files.read_model_manifest(resolved.model_dir)["model_version"] == previous
            ):
                self._latest_seen = resolved.latest
                self.last_error = None  # what LATEST names is what is served: nothing is wrong now
                return self._record(
                    "unchanged", previous, previous, f"model {previous} is already being served", trigger
                )
            now = time.monotonic()
            if self._last_load is not None and now - self._last_load < self.min_interval_s:
                wait_s = self.min_interval_s - (now - self._last_load)
                LOG.info("reload (%s) deferred: the last load began %.1fs ago", trigger, now - self._last_load)
                return self._record(
                    "rate_limited",
                    previous,
                    previous,
                    f"at most one load per {self.min_interval_s:g}s; try again in {wait_s:.1f}s",
                    trigger,
                    retry_after_s=wait_s,
                )
            self._latest_seen = resolved.latest
            if trigger != "startup":  # the clock starts with the first reload, not the start-up load
                self._last_load = now
            started = time.perf_counter()
            pair = self._loader(resolved.model_dir)
        except Exception as error:  # anything that stops a load leaves the old pair serving
            self.last_error = f"{type(error).__name__}: {error}"
            LOG.error(
                "reload (%s) rejected; %s: %s",
                trigger,
                f"still serving {previous}" if previous else "nothing is being served",
                error,
                exc_info=not isinstance(error, (ValueError, FileNotFoundError)),
            )
            return self._record("rejected", previous, previous, str(error), trigger)
        if self.prepare is not None and self.pair is not None:
            try:
                self.prepare(pair)
            except Exception:  # the model is fine; its first requests build what is missing
                LOG.exception("preparing model %s for requests failed; swapping it in anyway", pair.version)
        self.pair = pair  # the swap: atomic for every reader
        self.last_error = None
        # A loaded pair holds many long-lived objects (histories; ids and titles are arrays); moving them
        # out of the collector's reach keeps full GC passes (p99 spikes) short. Unfreezing
        # first lets the previous pair's reference cycles be collected.
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        if self._metrics is not None:
            self._metrics.serving(pair.version, pair.index_type, pair.loaded_at, pair.n_articles)  # no paths in labels
        LOG.info(
            "reload (%s): now serving model %s (was %s), loaded in %.1fs",
            trigger,
            pair.version,
            previous,
            time.perf_counter() - started,
        )
        return self._record("loaded", pair.version, previous, f"now serving model {pair.version}", trigger)

    def _record(
        self,
        result: str,
        version: str | None,
        previous: str | None,
        message: str,
        trigger: str = "",
        retry_after_s: float | None = None,
    ) -> ReloadResult:
        if self._metrics is not None:
            self._metrics.reloads.labels(result).inc()
        outcome = ReloadResult(result, version, previous, message, trigger, retry_after_s, time.time())
        if not outcome.deferred:
            self.last_reload = outcome
        return outcome

    def latest_changed(self) -> bool:
        """True when the publish root's LATEST names something not yet acted upon."""
        if not self.is_publish_root:
            return False
        try:
            latest = (self.source / publish_layout.LATEST_FILE).read_text().strip() or None
        except FileNotFoundError:
            return False
        return latest != self._latest_seen

    async def watch(self, interval_s: float) -> None:
        """Polls LATEST every `interval_s` seconds and reloads when it changes (runs until cancelled)."""
        LOG.info("watching %s every %.1fs for new versions", self.source / publish_layout.LATEST_FILE, interval_s)
        while True:
            await asyncio.sleep(interval_s)
            try:
                if self.latest_changed():
                    await self.reload_async("LATEST changed", wait=False)
            except Exception:  # the watcher must outlive any one failure
                LOG.exception("watching %s failed; will retry", self.source)
