"""Prometheus metrics of the candidate service, on a registry of its own (one per app instance).

Exposed at GET /metrics. With `--workers N` (gunicorn, serving/http/workers.py) prometheus_client
runs in multiprocess mode: each process writes its values to files under PROMETHEUS_MULTIPROC_DIR
and /metrics adds up every worker's counters and histograms; gauges say how they combine
(`multiprocess_mode`: the model gauges are the largest value among live processes, which is what
every worker serves once a reload has replaced them all).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# The stages of one candidate request, each timed (serving/recommend/candidates.py).
STAGES = ("store", "encode", "search", "filter")

# Latency buckets around the 10 ms budget: fine below it, coarse above.
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.003,
    0.004,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)
STAGE_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.05, 0.25)


class ServiceMetrics:
    """The service's counters, histograms and model-version info."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._served: set[tuple[str, str]] = set()
        self.requests = Counter(
            "candidates_http_requests", "HTTP requests by endpoint and status code", ["endpoint", "status"], registry=r
        )
        self.latency = Histogram(
            "candidates_http_request_duration_seconds",
            "Time from request start to the last response byte, by endpoint",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.stage_latency = Histogram(
            "candidates_stage_duration_seconds",
            f"Time per stage of a candidate request ({', '.join(STAGES)}, serialize)",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=r,
        )
        self.candidates_returned = Histogram(
            "candidates_returned", "Candidates per answer", buckets=(0, 1, 10, 50, 100, 200, 500, 1000), registry=r
        )
        self.fallbacks = Counter(
            "candidates_fallbacks",
            "Answers served from the popular-article fallback, by reason",
            ["reason"],
            registry=r,
        )
        # An Info metric has no multiprocess form: the usual `_info` gauge, 1 for the version served.
        self.model_info = Gauge(
            "candidates_model_info",
            "The model + index being served (1), by index type and version",
            ["index_type", "model_version"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.model_loaded = Gauge(
            "candidates_model_loaded_timestamp_seconds",
            "When the served model was loaded",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.articles = Gauge(
            "candidates_index_articles", "Articles in the served index", registry=r, multiprocess_mode="livemax"
        )
        self.reloads = Counter(
            "candidates_model_reloads",
            "Model reload attempts by result (loaded, rejected, unchanged)",
            ["result"],
            registry=r,
        )

    def serving(self, version: str, index_type: str, loaded_at: float, articles: int) -> None:
        """Records the pair now served (the previous version's info goes to 0)."""
        for labels in list(self._served):
            self.model_info.labels(*labels).set(0)
        self._served = {(index_type, version)}
        self.model_info.labels(index_type, version).set(1)
        self.model_loaded.set(loaded_at)
        self.articles.set(articles)

    def observe_stage(self, stage: str, seconds: float) -> None:
        self.stage_latency.labels(stage).observe(seconds)


class LiveMetrics:
    """Counters of the live endpoints, on the app's registry (see serving/metrics.py)."""

    def __init__(self, registry):
        from prometheus_client import Counter, Gauge

        self.events = Counter(
            "candidates_live_events",
            "Live view events by outcome (applied, duplicate, rejected)",
            ["result"],
            registry=registry,
        )
        self.article_changes = Counter(
            "candidates_live_article_changes",
            "Listing changes stored, by the status they set",
            ["status"],
            registry=registry,
        )
        self.records = Gauge(
            "candidates_live_records",
            "Live listing records this replica holds",
            registry=registry,
            multiprocess_mode="livemax",  # gunicorn workers (serving/http/workers.py) share one store
        )
