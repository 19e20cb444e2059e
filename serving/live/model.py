"""What the live feed needs to know about a served model: attributes, regions, as_of, article tower.

* `pair_corpus(pair)`: each row's attributes and region code and the model's as_of, read once from
  the model directory and cached per loaded `ModelPair`;
* `region_index(pair)`: its `filtered_search.RegionIndex` (built on first use);
* `embed_articles(pair, records)`: vectors for listings from the article tower the model was
  trained with: the served encoder's (`trainer.towers.serving_model`: the NumPy twin when the model has
  one, else the SavedModel's `article_vectors` signature).
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from homefeed import features
from homefeed.layout import extract_dir as extract_layout
from serving.live.articles import ArticleRecord
from serving.versions.article_table import CodedColumn, RowLookup, coded_arrays

LOG = logging.getLogger(__name__)


@dataclass(eq=False)
class PairCorpus:
    """Per served model: each row's attributes, the region codes and the model's as_of."""

    row_of: RowLookup  # article id -> row (serving/versions/article_table.py; used like a dict)
    attributes: dict[str, CodedColumn]  # attr -> value per row
    region_names: list[str]
    region_code: dict[str, int]
    region_codes: np.ndarray
    as_of_ms: int | None
    region_index: Any = None  # filtered_search.RegionIndex, built on first use
    lock: threading.Lock = field(default_factory=threading.Lock)


_PAIR_CORPORA: weakref.WeakKeyDictionary[Any, PairCorpus] = weakref.WeakKeyDictionary()
_PAIR_LOCK = threading.Lock()


def model_as_of_ms(pair) -> int | None:
    """When the model's data was cut: its snapshot's as_of, else its newest `created_at`."""
    from serving.store import snapshot_as_of_ms

    histories = pair.model_dir / extract_layout.USER_HISTORIES_FILE
    if histories.exists():
        as_of = snapshot_as_of_ms(histories)
        if as_of is not None:
            return as_of
    try:
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        path = pair.model_dir / extract_layout.CORPUS_FILE
        if "created_at" in pq.read_schema(path).names:
            newest = pc.max(pq.read_table(path, columns=["created_at"]).column(0)).as_py()
            if newest is not None and hasattr(newest, "timestamp"):
                return int(newest.timestamp() * 1000)
    except Exception:
        LOG.debug("no created_at in %s", pair.model_dir, exc_info=True)
    return None


def pair_corpus(pair) -> PairCorpus:
    """The `PairCorpus` of a loaded `ModelPair` (read once from its `articles.parquet`, then cached)."""
    corpus = _PAIR_CORPORA.get(pair)
    if corpus is not None:
        return corpus
    with _PAIR_LOCK:
        corpus = _PAIR_CORPORA.get(pair)
        if corpus is None:
            corpus = _load_pair_corpus(pair)
            _PAIR_CORPORA[pair] = corpus
    return corpus


def _load_pair_corpus(pair) -> PairCorpus:
    """Each row's attributes from the model's `articles.parquet` as coded columns, built once per
    version (serving/versions/article_table.py; before gunicorn forks, so its workers share them)."""
    ids = pair.article_ids

    def build() -> dict:
        import pyarrow.parquet as pq

        path = pair.model_dir / extract_layout.CORPUS_FILE
        names = pq.read_schema(path).names if path.exists() else []
        wanted = [a for a in features.ARTICLE_ATTRIBUTES if a in names] if "article_id" in names else []
        table = pq.read_table(path, columns=["article_id", *wanted]).to_pydict() if wanted else {}
        rows = ids.rows(table["article_id"]) if wanted else np.zeros(0, dtype=np.int64)
        arrays = {}
        for a in features.ARTICLE_ATTRIBUTES:
            coded = coded_arrays(len(ids), rows, table.get(a, ()), features.MISSING_ATTRIBUTE)
            arrays[f"{a}_codes"], arrays[f"{a}_names"] = coded["codes"], coded["names"]
        return arrays

    arrays = build()
    attributes = {
        a: CodedColumn({"codes": arrays[f"{a}_codes"], "names": arrays[f"{a}_names"]})
        for a in features.ARTICLE_ATTRIBUTES
    }
    regions = attributes["region"]
    code = {name: i for i, name in enumerate(regions.names)}
    return PairCorpus(ids.row_of, attributes, regions.names, code, regions.codes, model_as_of_ms(pair))


def region_index(pair):
    """The pair's `filtered_search.RegionIndex` (built on the first filtered request)."""
    corpus = pair_corpus(pair)
    if corpus.region_index is None:
        with corpus.lock:
            if corpus.region_index is None:
                from serving.index.filtered import RegionIndex, region_arrays
                from serving.versions.files import ARTICLE_VECTORS_FILE

                vectors = np.load(pair.model_dir / ARTICLE_VECTORS_FILE, mmap_mode="r")
                arrays = region_arrays(vectors, corpus.region_codes)
                corpus.region_index = RegionIndex(pair.index, vectors, corpus.region_codes, arrays=arrays)
    return corpus.region_index


def embed_articles(pair, records: Sequence[ArticleRecord], now_ms: float | None = None) -> np.ndarray:
    """Vectors of `records` from the served encoder's article tower, ages at `now_ms` (default: the wall
    clock): `float32 [len(records), d]`. The inputs are made as the pipeline's export makes them
    (serving.live.articles.article_features); a model exported before the content inputs existed
    gets only the ones it takes."""
    from serving.live.articles import article_features
    from trainer.towers.article_inputs import now_ms as wall_clock_ms

    if not records:
        return np.zeros((0, pair.index.d), dtype=np.float32)
    raw = article_features(records, wall_clock_ms() if now_ms is None else now_ms)
    tower = getattr(pair.encoder, "article_vectors", None)
    if tower is None:
        raise ValueError(f"model {pair.version} has no 'article_vectors' tower: cannot embed new listings")
    vectors = tower(raw)
    if vectors.shape != (len(records), pair.index.d) or not np.isfinite(vectors).all():
        raise ValueError(f"model {pair.version}'s article tower answered {vectors.shape} / non-finite values")
    return vectors
