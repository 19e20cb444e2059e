"""Typed configuration for every stage, with defaults.

Each stage takes its config object explicitly (no globals, no environment reads here); the CLI and
the Kubeflow components build these objects from their arguments. `to_dict`/`from_dict` make them
JSON-friendly so a model directory can record the exact settings it was built with.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import UTC
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


TIME_SPLIT = "time"
PER_USER_SPLIT = "per-user"
SPLIT_PROTOCOLS = (TIME_SPLIT, PER_USER_SPLIT)  # ExtractConfig.split


@dataclass
class ExtractConfig:
    """The SQL stage: which tables to read and how to window the data."""

    # BigQuery location of the input tables (ignored by the local emulator, which makes its own).
    project: str = "local-project"
    dataset: str = "homefeed"
    events_table: str = "events"
    articles_table: str = "articles"
    # Optional searches table (features.SEARCHES_REQUIRED_COLUMNS); None: no search signal, and
    # exactly the outputs of an extract without it (recent_queries empty everywhere).
    searches_table: str | None = None
    # S: the most recent queries kept per training example and per user snapshot.
    search_length: int = features.SEARCH_LENGTH
    # Cut-off for the data; None means the latest event in the data (never the wall clock).
    as_of: str | None = None
    history_length: int = features.HISTORY_LENGTH
    # Only articles created within this many days of as_of are candidates; None = no age limit.
    max_article_age_days: int | None = None
    # Events older than this many days before as_of are ignored; None = keep all.
    lookback_days: int | None = None
    # BigQuery location (e.g. "EU") to run the queries in; None lets BigQuery pick from the dataset.
    location: str | None = None
    # Events dated more than this many seconds after the run's wall clock cannot have happened
    # yet (a producer's wrong clock, bad data): they are counted and dropped, and as_of never
    # lies beyond the clock either.
    max_clock_skew_s: float = 3600.0
    # How the examples are split into train, validation and test (docs/evaluation.md):
    #   "time"      a global time cut, the replay of a live service: train = views before T_val,
    #               validation = views in [T_val, T_test), test = views in [T_test, as_of], with
    #               T_test = as_of - test_days and T_val = T_test - validation_days;
    #   "per-user"  each user's last view is test and the one before it validation (leave-last-out,
    #               the protocol published MovieLens comparisons use).
    # None: what the input's dataset.json asks for (`candidates import-movielens` writes per-user,
    # `sample-data` time), else "time" (marketplace data, BigQuery tables).
    split: str | None = None
    # The test and validation windows of the time split, in days. One day each: the service is
    # retrained daily, so the test window is the day a published model serves before the next one,
    # and validation the day before it (issue 28).
    test_days: float = 1.0
    validation_days: float = 1.0

    def __post_init__(self) -> None:
        # Table names are checked strictly (and only then put into SQL) by
        # components.extract.schema.TableRef; here only the windowing settings.
        if self.split is not None and self.split not in SPLIT_PROTOCOLS:
            raise ValueError(
                f"split must be one of {SPLIT_PROTOCOLS} or None (the dataset's choice), got {self.split!r}"
            )
        for name in ("test_days", "validation_days"):
            if not (getattr(self, name) > 0):
                raise ValueError(f"{name} must be > 0 days, got {getattr(self, name)}")
        if self.history_length < 1:
            raise ValueError(f"history_length must be >= 1, got {self.history_length}")
        if self.search_length < 1:
            raise ValueError(f"search_length must be >= 1, got {self.search_length}")
        for name in ("max_article_age_days", "lookback_days"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 day or None (no limit), got {value}")
        if not (self.max_clock_skew_s >= 0):
            raise ValueError(f"max_clock_skew_s must be >= 0 seconds, got {self.max_clock_skew_s}")
        self.as_of_datetime()  # fails early on a malformed as_of

    def as_of_datetime(self) -> Any:
        """`as_of` as an aware UTC `datetime` (None when unset). No zone given means UTC.

        Accepts ISO 8601 dates and timestamps: `2024-03-01`, `2024-03-01T12:00:00`,
        `2024-03-01 12:00:00+02:00`, `2024-03-01T12:00:00Z`.
        """
        from datetime import datetime

        if self.as_of is None:
            return None
        try:
            value = datetime.fromisoformat(self.as_of.strip().replace("Z", "+00:00"))
        except (AttributeError, ValueError):
            raise ValueError(
                f"as_of: cannot read {self.as_of!r} as an ISO 8601 date or timestamp "
                "(e.g. 2024-03-01 or 2024-03-01T12:00:00Z)"
            ) from None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


ANALYZE_SPLITS = ("train", "all")  # TransformConfig.analyze_splits


@dataclass
class TransformConfig:
    """The TF Transform job (components/transform) and its preprocessing_fn (trainer/model/preprocessing.py)."""

    # Histories are cut to their most recent `history_length` views (training and serving alike).
    history_length: int = features.HISTORY_LENGTH
    # The article vocabulary keeps ids seen at least this often (history + label, train split) ...
    vocab_frequency_threshold: int = features.VocabularyDefaults.frequency_threshold
    # ... and at most this many of the most frequent ones (None: no cap).
    vocab_top_k: int | None = features.VocabularyDefaults.top_k
    # Unknown values (articles, categories, regions) hash into this many ids >= vocabulary size.
    num_oov_buckets: int = features.VocabularyDefaults.num_oov_buckets
    # Search tokens (homefeed.tokens: unigrams and bigrams of the recent queries): the most recent
    # `search_length` queries are used; tokens seen fewer than `search_vocab_frequency_threshold`
    # times in the train split hash into `search_oov_buckets` ids instead (typos, rare words).
    search_length: int = features.SEARCH_LENGTH
    search_vocab_frequency_threshold: int = 2
    search_oov_buckets: int = 16
    # Which splits the analysis (vocabularies, statistics) reads: "train" for the held-out model whose
    # validation and test figures are reported; "all" (train, validation and test: every view up to
    # as_of) for the model that is published after them, so the newest listings get ids of their own
    # instead of sharing the OOV rows (pipeline/pipeline.py runs both).
    analyze_splits: str = "train"
    runner: str = "DirectRunner"
    # DirectRunner only; ignored by other runners. With more than one worker the transform turns off
    # Beam's timed data flush, which loses records (components/transform/direct_runner.py).
    direct_num_workers: int = 1
    direct_running_mode: str = "in_memory"
    # Rows per batch fed to TensorFlow: bigger means fewer TF calls (16384 takes 9 % less CPU than 4096
    # at 10^6 examples, 32768 no less; benchmarks/results/transform_issue16.jsonl).
    batch_size: int = 16384
    # Extra Beam pipeline options, passed through unchanged (e.g. --project, --region, --temp_location).
    beam_args: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.history_length < 1:
            raise ValueError(f"history_length must be >= 1, got {self.history_length}")
        if self.vocab_frequency_threshold < 1:
            raise ValueError(f"vocab_frequency_threshold must be >= 1, got {self.vocab_frequency_threshold}")
        if self.vocab_top_k is not None and self.vocab_top_k < 1:
            raise ValueError(f"vocab_top_k must be >= 1 or None, got {self.vocab_top_k}")
        for name in ("search_length", "search_vocab_frequency_threshold", "search_oov_buckets"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        # At least one bucket: an id unseen in training must map somewhere, never crash or alias id 0.
        if self.num_oov_buckets < 1:
            raise ValueError(f"num_oov_buckets must be >= 1, got {self.num_oov_buckets}")
        if self.analyze_splits not in ANALYZE_SPLITS:
            raise ValueError(f"analyze_splits must be one of {ANALYZE_SPLITS}, got {self.analyze_splits!r}")
        if self.direct_num_workers < 0:
            raise ValueError(f"direct_num_workers must be >= 0 (0: one per core), got {self.direct_num_workers}")
        modes = ("in_memory", "multi_threading", "multi_processing")
        if self.direct_running_mode not in modes:
            raise ValueError(f"direct_running_mode must be one of {modes}, got {self.direct_running_mode!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        self.beam_args = list(self.beam_args)


USER_POOLINGS = ("attention", "gru", "mean")  # TrainConfig.user_pooling


@dataclass
class TrainConfig:
    """The two-tower candidate model (trainer/model/two_tower.py) and its training loop (trainer/training/train.py).

    Every field carries a `help` text in its metadata: `candidates train` turns each field into a
    `--flag` with that help, so the CLI, this class and config.json never disagree.
    """

    # --- model --------------------------------------------------------------------------------
    embedding_dim: int = field(default=64, metadata={"help": "size of the article id embedding"})
    attribute_embedding_dim: int = field(
        default=16, metadata={"help": "size of each article attribute (category, region) embedding"}
    )
    tower_units: tuple[int, ...] = field(
        default=(256,), metadata={"help": "hidden ReLU layer sizes of the user tower (empty: linear)"}
    )
    output_dim: int = field(default=64, metadata={"help": "d, the size of user and article vectors"})
    user_pooling: str = field(
        default="attention",
        metadata={
            "help": "how the user tower pools the history's article embeddings besides their mean: "
            "'attention' (SASRec-style self-attention with recency positions, read out at the most "
            "recent view), 'gru' (a GRU from the oldest to the most recent view) or 'mean' (only "
            "the masked means)"
        },
    )
    attention_heads: int = field(default=2, metadata={"help": "attention heads ('attention' pooling)"})
    attention_window: int = field(
        default=20,
        metadata={
            "help": "the self-attention reads the most recent this-many views (its cost grows with it; "
            "the masked means still see the whole history); 0: the whole history"
        },
    )
    attention_blocks: int = field(
        default=1, metadata={"help": "self-attention blocks ('attention' pooling; the last reads out one position)"}
    )
    recent_items: int = field(
        default=5,
        metadata={
            "help": "besides the mean over the whole history, the user tower also pools the most "
            "recent this-many views separately (order-aware context; 0 disables it)"
        },
    )
    dropout: float = field(default=0.2, metadata={"help": "dropout after each hidden user-tower layer"})
    # --- article content (used when the transform produced title tokens and age buckets) -------
    article_content: bool = field(
        default=True,
        metadata={"help": "the article tower reads the title tokens and the age bucket (when the transform made them)"},
    )
    title_embedding_dim: int = field(default=32, metadata={"help": "size of the title token embedding"})
    article_units: int = field(
        default=0,
        metadata={"help": "hidden ReLU layer of the article tower over id, attributes, title and age (0: linear)"},
    )
    id_dropout: float = field(
        default=0.5,
        metadata={
            "help": (
                "share of training labels whose id is replaced by an OOV id, so a listing unseen in training (a new "
                "one) is placed by its title, age, category and region (0: off; used when id_dropout_choices is empty)"
            )
        },
    )
    # Validation splits disagree (MovieLens 100K picks 0; churn, whose validation ranks new listings
    # as served, picks 0.9: benchmarks/results/cold_start.jsonl): try both ends.
    id_dropout_choices: tuple[float, ...] = field(
        default=(0.0, 0.9),
        metadata={
            "help": (
                "id dropout rates to try: one model per rate, the best on validation recall kept (its rate becomes "
                "id_dropout; metrics.json lists each rate's figure); empty: train once with id_dropout"
            )
        },
    )
    max_examples_per_user: int = field(
        default=0,
        metadata={
            "help": "each user's training examples count at most this much in the loss: a user with n > "
            "this many weighs each example cap/n (Covington et al.: heavy users do not dominate; 0: off)"
        },
    )
    search_only_share: float = field(
        default=0.2,
        metadata={
            "help": "share of training examples whose views are hidden from the user tower, so it "
            "also learns users known only by their searches (only when trained with searches)"
        },
    )
    share_embeddings: bool = field(
        default=True,
        metadata={"help": "history items and candidate articles share one id (and attribute) embedding"},
    )
    l2_normalize: bool = field(
        default=True, metadata={"help": "L2-normalise both vectors (score = cosine / temperature)"}
    )
    # 0.1: chosen over 0.05 on validation recall (median of 3 seeds, benchmarks/quality_movielens.py).
    temperature: float = field(default=0.1, metadata={"help": "softmax temperature on the scores"})
    # --- loss ---------------------------------------------------------------------------------
    num_sampled_negatives: int = field(
        default=0,
        metadata={
            "help": "uniformly sampled vocabulary articles added to the in-batch negatives "
            "(mixed negative sampling; 0: in-batch only)"
        },
    )
    logq_correction: bool = field(
        default=True,
        metadata={"help": "subtract log(expected sample count) from each negative's logit (Yi et al. 2019)"},
    )
    remove_accidental_hits: bool = field(
        default=True, metadata={"help": "mask negatives that are the example's own label"}
    )
    # --- optimisation -------------------------------------------------------------------------
    learning_rate: float = field(default=0.003, metadata={"help": "Adam learning rate"})
    batch_size: int = field(default=512, metadata={"help": "examples per step (= in-batch negatives)"})
    epochs: int = field(default=20, metadata={"help": "maximum passes over the training split"})
    early_stopping_patience: int = field(
        # 2: for the default tower and temperature, all three recorded MovieLens seeds keep the same
        # best epoch with 2 as with 3 (benchmarks/results/quality_sweep.jsonl); two other recorded
        # runs (attention window 10, masked means seed 1) improved after two epochs without.
        # Each extra epoch costs ~10% of the training time.
        default=2,
        metadata={
            "help": "stop after this many epochs without a better validation recall; the best epoch's "
            "weights are kept either way (0: never stop early)"
        },
    )
    eval_k: int = field(default=200, metadata={"help": "K of the per-epoch validation recall@K (early stopping)"})
    max_eval_users: int = field(
        default=10_000,
        metadata={"help": "per-epoch validation uses at most this many validation examples (sampled)"},
    )
    refit: bool = field(
        default=False,
        metadata={
            "help": "production mode: after choosing the epoch count on validation, train a fresh "
            "model on every split (everything up to as_of) for that many epochs and export it; "
            "its test figures are then no longer held out (metrics.json `fit` says which)"
        },
    )
    final_epochs: int = field(
        default=0,
        metadata={
            "help": "train only the model to publish: a fresh model on every split (every view up to "
            "as_of, with a transform analysed over all of them) for this many epochs, chosen on "
            "validation by a held-out run with the same settings; nothing is validated (0: the held-out "
            "fit, validated on the validation split)"
        },
    )
    shuffle_buffer: int = field(default=200_000, metadata={"help": "examples in the shuffle buffer"})
    cache_examples: bool = field(
        default=True, metadata={"help": "keep the training records in memory after the first epoch"}
    )
    xla_dense: bool = field(
        default=False,
        metadata={
            "help": (
                "training only: compile the step's dense part (after the embedding lookups, loss included) with "
                "XLA, the lookups' gradients still sparse (trainer/training/dense_step.py; export unchanged): about "
                "20% less CPU a step with lazy Adam at 10^5 articles; off by default because MovieLens test R@50 "
                "is lower with it on every seed (benchmarks/results/quality_xla_dense.jsonl); not with "
                "user_pooling gru"
            )
        },
    )
    # Opt-in: test R@50 is lower on every MovieLens seed (benchmarks/results/quality_lazy_adam.jsonl).
    lazy_adam: bool = field(
        default=False,
        metadata={
            "help": (
                "Adam updates only the embedding rows a batch looked up, and their moments (TF Addons' LazyAdam, "
                "trainer/training/lazy_adam.py), not every row of every table each step (~35% less CPU per step "
                "at 10^5 articles); off by default (Keras's dense Adam) because MovieLens test R@50 is lower with "
                "it (median 0.448 vs 0.461, benchmarks/results/quality_lazy_adam.jsonl)"
            )
        },
    )
    fused_adam: bool = field(
        default=False,
        metadata={
            "help": (
                "compile Adam's update with XLA, one fused pass over each embedding table (~25% less CPU per step "
                "at 10^5 articles, dense Adam); same arithmetic, rounded differently, so results differ slightly "
                "(benchmarks/results/quality_fused_adam.jsonl); with lazy Adam it compiles the lazy update"
            )
        },
    )
    popular_articles: int = field(
        default=1000, metadata={"help": "size of popular_articles.json (the serving fallback)"}
    )
    seed: int = field(default=42, metadata={"help": "seed for initialisation, shuffling, sampling, dropout"})

    def __post_init__(self) -> None:
        self.tower_units = tuple(int(u) for u in self.tower_units)
        positive = (
            "embedding_dim",
            "attribute_embedding_dim",
            "output_dim",
            "batch_size",
            "epochs",
            "eval_k",
            "max_eval_users",
            "shuffle_buffer",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in (
            "recent_items",
            "num_sampled_negatives",
            "early_stopping_patience",
            "popular_articles",
            "attention_window",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"TrainConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.final_epochs < 0:
            raise ValueError(f"TrainConfig.final_epochs must be >= 0, got {self.final_epochs}")
        if self.final_epochs and self.refit:
            raise ValueError("TrainConfig.final_epochs and refit both train on every split: set one")
        if self.user_pooling not in USER_POOLINGS:
            raise ValueError(f"TrainConfig.user_pooling must be one of {USER_POOLINGS}, got {self.user_pooling!r}")
        if self.attention_heads < 1 or self.attention_blocks < 1:
            raise ValueError(
                f"TrainConfig.attention_heads and attention_blocks must be >= 1, got "
                f"{self.attention_heads}, {self.attention_blocks}"
            )
        if any(u < 1 for u in self.tower_units):
            raise ValueError(f"TrainConfig.tower_units must all be >= 1, got {self.tower_units}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"TrainConfig.dropout must be in [0, 1), got {self.dropout}")
        self.id_dropout_choices = tuple(float(r) for r in self.id_dropout_choices)
        if not all(0.0 <= r < 1.0 for r in (self.id_dropout, *self.id_dropout_choices)):
            raise ValueError(
                f"TrainConfig.id_dropout and id_dropout_choices must be in [0, 1), got "
                f"{self.id_dropout}, {self.id_dropout_choices}"
            )
        if self.title_embedding_dim < 1 or self.article_units < 0 or self.max_examples_per_user < 0:
            raise ValueError(
                f"TrainConfig.title_embedding_dim must be >= 1, article_units and max_examples_per_user "
                f">= 0; got {self.title_embedding_dim}, {self.article_units}, {self.max_examples_per_user}"
            )
        if not 0.0 <= self.search_only_share < 1.0:
            raise ValueError(f"TrainConfig.search_only_share must be in [0, 1), got {self.search_only_share}")
        if self.temperature <= 0 or self.learning_rate <= 0:
            raise ValueError(
                f"TrainConfig.temperature and learning_rate must be > 0, got {self.temperature}, {self.learning_rate}"
            )


@dataclass
class EvaluateConfig:
    """Offline evaluation on the test split (trainer/evaluation/evaluate.py)."""

    ks: tuple[int, ...] = field(default=(10, 50, 100, 200), metadata={"help": "cut-offs K of recall@K"})
    ndcg_k: int = field(default=10, metadata={"help": "cut-off of NDCG@K"})
    exclude_seen: bool = field(
        default=True, metadata={"help": "never count an article the user already viewed (every earlier view)"}
    )
    # "examples": each eval example's own age (what the model saw in training); "serving": the
    # serving constant features.SERVING_EXAMPLE_AGE for everyone (what the service sends).
    example_age: str = field(
        default="serving",
        metadata={
            "help": "example age fed to the model: 'serving' (what the service sends, the default: the "
            "recall of what is served) or 'examples' (each view's own age, as in training)"
        },
    )
    max_users: int | None = field(
        default=None, metadata={"help": "evaluate a seeded sample of at most this many test users"}
    )
    batch_size: int = field(default=1024, metadata={"help": "users per SavedModel call and scoring batch"})
    knn_max_users: int = field(
        default=5000,
        metadata={
            "help": "the item-kNN baseline (its cost grows with the users who share views) is "
            "computed on a seeded sample of at most this many test users"
        },
    )
    sample_users: int = field(
        default=25,
        metadata={"help": "users shown on predictions.html (their last views and top candidates; seeded sample)"},
    )
    seed: int = field(default=0, metadata={"help": "seed of the user samples (max_users, sample_users)"})

    def __post_init__(self) -> None:
        self.ks = tuple(sorted({int(k) for k in self.ks}))
        if not self.ks or self.ks[0] < 1 or self.ndcg_k < 1:
            raise ValueError(f"EvaluateConfig.ks and ndcg_k must be >= 1, got {self.ks} and {self.ndcg_k}")
        if self.example_age not in ("examples", "serving"):
            raise ValueError(f"EvaluateConfig.example_age must be 'examples' or 'serving', got {self.example_age!r}")
        if self.max_users is not None and self.max_users < 1:
            raise ValueError(f"EvaluateConfig.max_users must be >= 1 or None, got {self.max_users}")
        if self.batch_size < 1:
            raise ValueError(f"EvaluateConfig.batch_size must be >= 1, got {self.batch_size}")


@dataclass
class IndexConfig:
    """The FAISS index over article vectors (serving/index/faiss_index.py, components/build_index/build.py)."""

    # "auto": exact (flat) below `exact_below` articles, else IVF (at 10^6: recall@200 0.98 in a 15-30 s
    # build, where HNSW takes 420 s for 0.95: docs/benchmarks.md); "flat", "hnsw", "ivf" force a type.
    index_type: str = "auto"
    exact_below: int = 50_000
    hnsw_m: int = 32
    # A deeper build than FAISS's default 40: top-200 searches need a well-connected graph, and a
    # better graph reaches the recall floor with a smaller (faster) efSearch.
    hnsw_ef_construction: int = 200
    # Starting search parameters; with `tune_search` the build raises them to about the smallest
    # value meeting the recall floor (up to the max_* caps) and records it for the service.
    hnsw_ef_search: int = 256
    ivf_nlist: int | None = None  # None: about 4*sqrt(n)
    ivf_nprobe: int = 32
    tune_search: bool = True
    max_ef_search: int = 2048
    max_nprobe: int = 1024
    # An approximate index whose recall@k against exact search on sampled user vectors is below
    # this floor is refused (nothing is written).
    recall_floor: float = 0.98
    recall_sample_size: int = 1000
    k: int = 200
    seed: int = 0


@dataclass
class PublishConfig:
    """The gate in front of publishing a new model + index."""

    # Absolute floor: a model with a lower recall@200 on the test split is never published.
    min_recall_at_200: float = 0.05
    # The new model may be at most this much (absolute) worse than the published one.
    max_regression: float = 0.01

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_recall_at_200 <= 1.0:
            raise ValueError(f"min_recall_at_200 must be in [0, 1], got {self.min_recall_at_200}")
        if not 0.0 <= self.max_regression <= 1.0:
            raise ValueError(f"max_regression must be in [0, 1], got {self.max_regression}")
