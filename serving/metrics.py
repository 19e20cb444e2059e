"""Prometheus metrics of the candidate service, on a registry of its own (one per app instance).

Exposed at GET /metrics. With `--workers N` each worker process keeps its own counters; scrape
the pods/processes individually or run one worker per container (the usual Kubernetes layout).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

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
        self.model_info = Info("candidates_model", "The model + index being served", registry=r)
        self.model_loaded = Gauge(
            "candidates_model_loaded_timestamp_seconds", "When the served model was loaded", registry=r
        )
        self.articles = Gauge("candidates_index_articles", "Articles in the served index", registry=r)
        self.reloads = Counter(
            "candidates_model_reloads",
            "Model reload attempts by result (loaded, rejected, unchanged)",
            ["result"],
            registry=r,
        )

    def observe_stage(self, stage: str, seconds: float) -> None:
        self.stage_latency.labels(stage).observe(seconds)
