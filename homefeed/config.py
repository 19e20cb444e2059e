"""Typed configuration for every stage, with defaults.

Each stage takes its config object explicitly (no globals, no environment reads here); the CLI and
the Kubeflow components build these objects from their arguments. `to_dict`/`from_dict` make them
JSON-friendly so a model directory can record the exact settings it was built with.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, TypeVar

from homefeed import features

T = TypeVar("T")


def to_dict(config: Any) -> dict[str, Any]:
    """A config dataclass as a plain JSON-serialisable dict."""
    return dataclasses.asdict(config)


def from_dict(cls: type[T], values: dict[str, Any]) -> T:
    """Build `cls` from `values`, refusing unknown keys so typos do not pass silently."""
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} setting(s) {unknown}; known: {sorted(known)}")
    return cls(**values)


@dataclass
class ExtractConfig:
    """The SQL stage: which tables to read and how to window the data."""

    # BigQuery location of the input tables (ignored by the local emulator, which makes its own).
    project: str = "local-project"
    dataset: str = "homefeed"
    events_table: str = "events"
    articles_table: str = "articles"
    # Cut-off for the data; None means the latest event in the data (never the wall clock).
    as_of: str | None = None
    history_length: int = features.HISTORY_LENGTH
    # Only articles created within this many days of as_of are candidates; None = no age limit.
    max_article_age_days: int | None = None
    # Events older than this many days before as_of are ignored; None = keep all.
    lookback_days: int | None = None


@dataclass
class TransformConfig:
    """The TF Transform job."""

    history_length: int = features.HISTORY_LENGTH
    vocab_frequency_threshold: int = features.VocabularyDefaults.frequency_threshold
    vocab_top_k: int | None = features.VocabularyDefaults.top_k
    num_oov_buckets: int = features.VocabularyDefaults.num_oov_buckets
    runner: str = "DirectRunner"
    # Extra Beam pipeline options, passed through unchanged (e.g. --project, --region, --temp_location).
    beam_args: list[str] = field(default_factory=list)


@dataclass
class TrainConfig:
    """The two-tower candidate model and its training loop."""

    embedding_dim: int = 64
    tower_units: tuple[int, ...] = (128,)
    output_dim: int = 64
    temperature: float = 0.05
    learning_rate: float = 0.003
    batch_size: int = 512
    epochs: int = 20
    early_stopping_patience: int = 3
    logq_correction: bool = True
    l2_normalize: bool = True
    seed: int = 42


@dataclass
class EvaluateConfig:
    """Offline evaluation on the eval split."""

    ks: tuple[int, ...] = (10, 50, 100, 200)
    ndcg_k: int = 10
    exclude_seen: bool = True


@dataclass
class IndexConfig:
    """The FAISS index over article vectors."""

    # "auto" picks exact search for small corpora and HNSW for large ones.
    index_type: str = "auto"
    exact_below: int = 50_000
    hnsw_m: int = 32
    hnsw_ef_construction: int = 80
    hnsw_ef_search: int = 256
    ivf_nlist: int | None = None  # None: about 4*sqrt(n)
    ivf_nprobe: int = 32
    recall_floor: float = 0.95
    recall_sample_size: int = 1000
    k: int = 200


@dataclass
class PublishConfig:
    """The gate in front of publishing a new model + index."""

    min_recall_at_200: float = 0.05
    # The new model may be at most this much (absolute) worse than the published one.
    max_regression: float = 0.01
