"""Holds the model pair being served and replaces it, whole, when a new version is loaded.

Swapping is one attribute assignment of an immutable `ModelPair`, done only after the new pair
loaded and passed every check; a request reads `holder.pair` once and keeps using that object, so
in-flight requests finish on the old pair while new ones get the new pair. A version that fails
to load is logged, counted (`candidates_model_reloads{result="rejected"}`) and remembered, so a
watcher does not retry it every few seconds; the old pair keeps serving.

Triggers: `POST /admin/reload`, SIGHUP, and (for a publish root) a change of `LATEST`, polled.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from serving import model_files, publish
from serving.metrics import ServiceMetrics
from serving.model_pair import ModelPair, load_model_pair

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReloadResult:
    """What a reload did: `result` is "loaded", "unchanged" or "rejected"."""

    result: str
    model_version: str | None
    previous_version: str | None
    message: str

    @property
    def ok(self) -> bool:
        return self.result != "rejected"


class ModelHolder:
    """The current `ModelPair` for a `--model` source (a model directory or a publish root).

    Args:
      source: what `--model` named.
      loader: `model_dir -> ModelPair` (`load_model_pair` with the service's options).
      metrics: where reloads and the model version are recorded.
    """

    def __init__(
        self,
        source: str | os.PathLike,
        loader: Callable[[Path], ModelPair] = load_model_pair,
        metrics: ServiceMetrics | None = None,
    ):
        self.source = Path(source)
        self.pair: ModelPair | None = None
        self.last_error: str | None = None
        self._loader = loader
        self._metrics = metrics
        self._lock = threading.Lock()
        self._latest_seen: str | None = None  # the LATEST text last acted upon (loaded or rejected)

    @property
    def is_publish_root(self) -> bool:
        return model_files.is_publish_root(self.source)

    def reload(self, trigger: str, force: bool = False) -> ReloadResult:
        """Loads what `source` points at now and swaps it in if it is a different, working version.

        Args:
          trigger: why (for the log): "startup", "admin", "SIGHUP", "LATEST changed".
          force: load even when the version is the one already served.
        """
        with self._lock:  # one load at a time; requests never take this lock
            previous = self.pair.version if self.pair else None
            try:
                resolved = model_files.resolve_model_dir(self.source)
                self._latest_seen = resolved.latest
                if (
                    not force
                    and self.pair is not None
                    and resolved.model_dir.resolve() == self.pair.model_dir.resolve()
                    and model_files.read_model_manifest(resolved.model_dir)["model_version"] == previous
                ):
                    return self._record("unchanged", previous, previous, f"model {previous} is already being served")
                started = time.perf_counter()
                pair = self._loader(resolved.model_dir)
            except Exception as error:  # anything that stops a load leaves the old pair serving
                self.last_error = f"{type(error).__name__}: {error}"
                LOG.error(
                    "reload (%s) rejected; %s: %s",
                    trigger, f"still serving {previous}" if previous else "nothing is being served", error,
                    exc_info=not isinstance(error, (ValueError, FileNotFoundError)),
                )
                return self._record("rejected", previous, previous, str(error))
            self.pair = pair  # the swap: atomic for every reader
            self.last_error = None
            # A loaded pair is millions of long-lived objects (ids, titles, histories); moving them
            # out of the collector's reach keeps full GC passes (p99 spikes) short. Unfreezing
            # first lets the previous pair's reference cycles be collected.
            gc.unfreeze()
            gc.collect()
            gc.freeze()
            if self._metrics is not None:
                m = self._metrics
                m.model_info.info({"model_version": pair.version, "index_type": pair.index_type, "model_dir": str(pair.model_dir)})
                m.model_loaded.set(pair.loaded_at)
                m.articles.set(pair.n_articles)
            LOG.info(
                "reload (%s): now serving model %s (was %s), loaded in %.1fs",
                trigger, pair.version, previous, time.perf_counter() - started,
            )
            return self._record("loaded", pair.version, previous, f"now serving model {pair.version}")

    def _record(self, result: str, version: str | None, previous: str | None, message: str) -> ReloadResult:
        if self._metrics is not None:
            self._metrics.reloads.labels(result).inc()
        return ReloadResult(result, version, previous, message)

    def latest_changed(self) -> bool:
        """True when the publish root's LATEST names something not yet acted upon."""
        if not self.is_publish_root:
            return False
        try:
            latest = (self.source / publish.LATEST_FILE).read_text().strip() or None
        except FileNotFoundError:
            return False
        return latest != self._latest_seen

    async def watch(self, interval_s: float) -> None:
        """Polls LATEST every `interval_s` seconds and reloads when it changes (runs until cancelled)."""
        LOG.info("watching %s every %.1fs for new versions", self.source / publish.LATEST_FILE, interval_s)
        while True:
            await asyncio.sleep(interval_s)
            try:
                if self.latest_changed():
                    await asyncio.to_thread(self.reload, "LATEST changed")
            except Exception:  # the watcher must outlive any one failure
                LOG.exception("watching %s failed; will retry", self.source)
