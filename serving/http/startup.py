"""What the service loads at start: threads, the history store and the model (in the gunicorn master before fork)."""

from __future__ import annotations

import functools
import logging
import os

from fastapi import FastAPI

from serving.http.settings import ServiceSettings
from serving.store import EmbeddedStore, HistoryStore, RedisStore, StoreUnavailableError
from serving.versions.holder import ModelHolder
from serving.versions.pair import load_model_pair

LOG = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# Lifespan: settings -> threads -> history store -> first model load -> watcher / SIGHUP.
# ---------------------------------------------------------------------------------------------
def configure_threads(settings: ServiceSettings) -> None:
    """Sizes the FAISS and TensorFlow thread pools; TensorFlow's when (and only if) a SavedModel is
    loaded: a worker serving NumPy towers never imports it (trainer.towers.serving_model)."""
    if settings.faiss_threads > 0:
        import faiss

        faiss.omp_set_num_threads(settings.faiss_threads)
    if settings.tf_threads > 0:
        from threadpoolctl import threadpool_limits

        from trainer.towers.serving_model import set_tf_threads

        set_tf_threads(settings.tf_threads)
        # NumPy's BLAS runs the NumPy towers' matmuls: threads of its own only spin against each
        # other on these small matrices (16 x 353 @ 353 x 256: 26 ms with 2 threads on 2 busy cores, 0.06 ms with 1).
        threadpool_limits(limits=settings.tf_threads, user_api="blas")


def open_store(settings: ServiceSettings) -> HistoryStore | None:
    """Redis, or an explicit snapshot, or None (then each pair's own user_histories.parquet)."""
    if settings.redis_url:
        store = RedisStore(settings.redis_url, settings.redis_prefix, settings.redis_timeout_s)
        try:
            store.ping()
            LOG.info("user histories from %s", store.description)
        except StoreUnavailableError as error:
            LOG.error("%s; serving the popular fallback until it answers", error)
        return store
    if settings.histories:
        return EmbeddedStore.from_parquet(settings.histories)
    return None


def model_loader(settings: ServiceSettings, store: HistoryStore | None):
    """`model_dir -> ModelPair` with the service's options (the pair's own histories without a store)."""
    return functools.partial(
        load_model_pair,
        history_length=settings.history_length,
        load_histories=store is None,
        encoder=settings.encoder,
    )


def warm_live_arrays(pair) -> None:
    """Builds the pair's live-corpus arrays (attributes, region-sorted vectors) now: in the gunicorn
    master they are then shared by every worker instead of built by each on its first request."""
    from serving.live.model import pair_corpus, region_index

    try:
        pair_corpus(pair)
        region_index(pair)
    except Exception:  # a worker builds them on first use instead, as a single process does
        LOG.exception("could not prepare the live corpus arrays of model %s before forking", pair.version)


def needs_tensorflow(settings: ServiceSettings) -> bool:
    """Whether the version --model points at now would serve through its SavedModel (no NumPy twin,
    or `--encoder saved_model`). TensorFlow's thread pools do not survive fork, so such a model is
    never loaded in a process that forks."""
    if settings.encoder == "saved_model":
        return True
    if settings.model is None:  # nothing to load: the caller refuses it
        return False
    from serving.versions import files as model_files
    from trainer.towers.numpy_towers import has_twin

    try:
        manifest = model_files.read_model_manifest(model_files.resolve_model_dir(settings.model).model_dir)
    except Exception:  # unreadable: the load says why, in the process that tries it
        return False
    return not has_twin(manifest)


def preload_model(app: FastAPI, trigger: str = "startup") -> None:
    """In the gunicorn master, before it forks (serving/http/workers.py): loads the pair every worker
    serves, or on a reload the version --model points at now. A version that does not load leaves
    the master's pair as it was (the first one must load). A model served through TensorFlow is
    not loaded here (TensorFlow does not survive fork): each worker then loads its own.

    Raises:
      RuntimeError: the first load failed (nothing to serve).
    """
    settings: ServiceSettings = app.state.settings
    if settings.model is None:
        raise ValueError("no model to serve: set --model (CANDIDATES_MODEL) to a model directory or publish root")
    app.state.master_pid = os.getpid()
    if needs_tensorflow(settings):
        LOG.warning(
            "model at %s has no NumPy towers: each worker loads its own SavedModel (not shared; TensorFlow "
            "must not be loaded before fork)",
            settings.model,
        )
        app.state.holder = None
        return
    holder: ModelHolder | None = app.state.holder
    if holder is None:
        configure_threads(settings)
        if app.state.store is None and not settings.redis_url:  # each worker opens its own Redis connections
            app.state.store = open_store(settings)
        holder = ModelHolder(
            settings.model, model_loader(settings, app.state.store), app.state.metrics, settings.reload_min_interval_s
        )
        trigger = "startup"
    limit, holder.min_interval_s = holder.min_interval_s, 0.0  # the worker that asked applied the limit
    try:
        result = holder.reload(trigger, force=trigger != "startup")
    finally:
        holder.min_interval_s = limit
    if holder.pair is None:
        raise RuntimeError(f"cannot serve {settings.model}: {result.message}")
    app.state.holder = holder
    if result.result == "loaded":
        warm_live_arrays(holder.pair)


def reload_every_worker(app: FastAPI) -> None:
    """After this worker loaded a new version: gunicorn's master loads it too and replaces its workers."""
    if app.state.master_pid is not None:
        from serving.http.workers import signal_master

        signal_master(app.state.master_pid)
