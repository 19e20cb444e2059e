"""The unit the service serves and swaps: one model with the index built from it.

A `ModelPair` is immutable once loaded. The service holds a reference to the current pair; a
request takes that reference once and uses only it, so a reload (which builds a whole new pair,
then replaces the reference in one assignment) never mixes one model's user vector with another
model's index, and in-flight requests finish on the pair they started with.

`load_model_pair` refuses anything that must not serve: any file whose size or sha256 differs from
its record (serving/versions/integrity.py: the model manifest, the index manifest, a published version's
publish.json), an unfinished model (no manifest), a
missing index, an index built for another model version or other article vectors, an index whose
size differs from the article ids, a SavedModel that does not load or answers with the wrong width.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from homefeed import features
from homefeed.layout import index_dir as index_layout
from serving.index import faiss_index
from serving.store import EmbeddedStore
from serving.versions import files as model_files
from serving.versions import integrity
from serving.versions.article_table import ArticleIds, StringColumn, as_article_ids, as_string_column
from serving.versions.files import ModelDirError, read_index_manifest

LOG = logging.getLogger(__name__)


class IndexMismatchError(ModelDirError, index_layout.IndexMismatchError):
    """The index was not built from this model's article vectors; serving it would be wrong."""


@dataclass(frozen=True, eq=False)
class ModelPair:
    """A loaded model + index, ready to answer.

    Attributes:
      version: the model's `model_version` (also the index's).
      model_dir: where it was loaded from.
      encoder: `trainer.towers.serving_model.UserEncoder` over `model_dir/saved_model`, or its NumPy twin
        `NumpyUserEncoder` over `model_dir/numpy_towers` (same interface, `kind` says which).
      index: the FAISS index (`IndexIDMap`; ids are rows of `article_ids`).
      article_ids: row -> article id, and the id -> row lookup (`article_ids.row_of`):
        `serving.versions.article_table.ArticleIds` (a plain list given here is made one).
      titles: row -> title (None for an article without one), or None when the article table
        has no titles: a `serving.versions.article_table.StringColumn` (a list given here is made one).
      popular: the fallback, `(row, view count)` most popular first, corpus articles only.
      histories: the embedded store from `model_dir/user_histories.parquet`, if it has one.
      index_manifest, manifest: the two manifests as read.
      loaded_at: wall-clock time of the load (seconds since the epoch).
    """

    version: str
    model_dir: Path
    encoder: Any
    index: Any
    article_ids: ArticleIds
    titles: StringColumn | None
    popular: list[tuple[int, float]]
    histories: EmbeddedStore | None
    index_manifest: dict[str, Any]
    manifest: dict[str, Any]
    loaded_at: float = field(default_factory=time.time)

    def __post_init__(self):
        object.__setattr__(self, "article_ids", as_article_ids(self.article_ids))
        object.__setattr__(self, "titles", as_string_column(self.titles))

    @property
    def index_type(self) -> str:
        return str(self.index_manifest.get("index_type", "unknown"))

    @property
    def n_articles(self) -> int:
        return len(self.article_ids)

    def describe(self) -> dict[str, Any]:
        """What /readyz and the logs say about this pair."""
        k = self.index_manifest.get("k", 200)
        return {
            "model_version": self.version,
            "model_dir": str(self.model_dir),
            "index_type": self.index_type,
            "n_articles": self.n_articles,
            f"index_recall@{k}": self.index_manifest.get(f"recall@{k}"),
            "search_params": self.index_manifest.get("search_params", {}),
            "histories": self.histories.description if self.histories else None,
            "titles": self.titles is not None,
            "encoder": getattr(self.encoder, "kind", "saved_model"),
        }


def check_index_matches(model_dir: Path, manifest: dict[str, Any], index_manifest: dict[str, Any]) -> None:
    """Raises IndexMismatchError unless the index records this model's version and vectors.

    The rule is the index layout's (`homefeed.layout.index_dir`), the one the publish step applies.
    """
    try:
        index_layout.check_index_matches(model_dir, manifest, index_manifest)
    except index_layout.IndexMismatchError as error:
        raise IndexMismatchError(str(error)) from None


def load_model_pair(
    model_dir: str | os.PathLike,
    history_length: int = features.HISTORY_LENGTH,
    load_histories: bool = True,
    encoder: str = "auto",
) -> ModelPair:
    """Loads and checks a model directory with its index; warms both up.

    Args:
      model_dir: a finished model directory with `index/` (see docs/architecture.md).
      history_length: histories are cut to this many most recent views before encoding.
      load_histories: also load `model_dir/user_histories.parquet` into an embedded store when the
        directory has one (the service skips this when it reads histories elsewhere).
      encoder: `auto` (the NumPy towers when the model has them, else the SavedModel), `numpy`
        (refuse a model without them) or `saved_model` (trainer.towers.serving_model.load_user_encoder).

    Raises:
      ModelDirError (IndexMismatchError for a foreign index), FileNotFoundError, or whatever the
      SavedModel load raises: the pair must not serve.
    """

    from trainer.towers.serving_model import load_user_encoder

    started = time.perf_counter()
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"model directory {model_dir} does not exist")
    integrity.verify_records(
        model_dir, (model_files.MANIFEST_FILE, f"{model_files.INDEX_DIR}/{model_files.INDEX_MANIFEST_FILE}")
    )
    manifest = model_files.read_model_manifest(model_dir)
    version = manifest["model_version"]
    index_dir = model_dir / model_files.INDEX_DIR
    index_manifest = read_index_manifest(index_dir)
    check_index_matches(model_dir, manifest, index_manifest)
    # Every byte that will be served is checked against the records before anything is loaded.
    report = integrity.verify_version(model_dir, manifest, index_dir, index_manifest)
    LOG.info("model %s: %s", version, report.describe())
    if model_files.HISTORIES_FILE in report.unverified and load_histories:
        LOG.warning(
            "model %s: %s is not covered by any record (copied in by hand?): it is served unverified",
            version,
            model_files.HISTORIES_FILE,
        )
    article_ids = model_files.load_article_ids(model_dir)
    index_path = index_layout.index_file(model_dir, index_manifest)
    if not index_path.exists():
        raise ModelDirError(f"{index_path} is missing although {model_files.INDEX_MANIFEST_FILE} exists")
    index = faiss_index.read_index(index_path)  # memory-mapped: shared by worker processes
    if index.ntotal != len(article_ids):
        raise IndexMismatchError(
            f"{index_path} holds {index.ntotal} vectors but {model_dir / model_files.ARTICLE_IDS_FILE} "
            f"lists {len(article_ids)} articles"
        )
    faiss_index.set_search_params(index, faiss_index.SearchParams(**index_manifest.get("search_params", {})))

    # The NumPy twin when the model has one (its files were just checked against their hashes).
    user_encoder = load_user_encoder(model_dir, history_length=history_length, encoder=encoder)
    LOG.info(
        "model %s: user and article towers run on %s",
        version,
        "NumPy (numpy_towers/, no TensorFlow)" if user_encoder.kind == "numpy" else "the TensorFlow SavedModel",
    )
    if user_encoder.dim != index.d:
        raise IndexMismatchError(
            f"model {version} makes {user_encoder.dim}-d user vectors but the index holds {index.d}-d vectors"
        )
    titles = model_files.read_titles(model_dir, article_ids)
    popular_ids = model_files.read_popular(model_dir, article_ids)
    popular_rows = article_ids.rows([a for a, _ in popular_ids]).tolist()
    popular = [(row, count) for row, (_, count) in zip(popular_rows, popular_ids)]
    histories = None
    if load_histories and (model_dir / model_files.HISTORIES_FILE).exists():
        histories = EmbeddedStore.from_parquet(model_dir / model_files.HISTORIES_FILE)

    # Warm-up: the first SavedModel call initialises tables and kernels (tens of ms); do it here,
    # not in the first request, and fail the load if the model cannot answer.
    probe = user_encoder.encode([{features.HISTORY: article_ids[:3]}])
    if probe.shape != (1, index.d) or not np.isfinite(probe).all():
        raise ModelDirError(f"model {version} answered a probe history with {probe.shape} / non-finite values")
    faiss_index.search(index, probe, 1)

    pair = ModelPair(
        version=version,
        model_dir=model_dir,
        encoder=user_encoder,
        index=index,
        article_ids=article_ids,
        titles=titles,
        popular=popular,
        histories=histories,
        index_manifest=index_manifest,
        manifest=manifest,
    )
    LOG.info(
        "loaded model %s from %s: %s index over %d articles in %.1fs",
        version,
        model_dir,
        pair.index_type,
        pair.n_articles,
        time.perf_counter() - started,
    )
    return pair
