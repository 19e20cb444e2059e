"""Writing a MODEL_DIR (docs/architecture.md): the serving SavedModel and everything around it.

The SavedModel holds the TFT transform (`transform_features_layer()`, attached to the exported
module so its vocabulary tables are tracked and initialised on load) and the two towers:

  * `serving_default`: raw `features.HISTORY_COLUMNS` and `recent_queries` tf.string `[B, None]`
    right-padded with "" and `example_age_days` float32 `[B]` -> `{"user_vector": [B, d]}`;
  * `article_vectors`: raw `features.ARTICLE_FEATURES`: the label columns and the normalised
    title tf.string `[N]`, the age now (`label_age_days`) float32 `[N]` ->
    `{"article_vector": [N, d]}` (how the corpus vectors are made, so new articles get vectors
    from their content the same way; callers build the inputs with trainer/towers/article_inputs.py).

`write_model_dir` stages the directory under a hidden name, reloads the saved model and computes
the corpus vectors *through the reloaded signature* (so a model that cannot serve never gets
published), writes `manifest.json` last and renames the directory into place.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import tensorflow as tf

from homefeed import atomic, features
from homefeed import config as config_lib
from homefeed.layout import model_dir as layout
from homefeed.layout.model_dir import (  # the SavedModel's interface, shared with trainer/towers/serving_model.py
    ARTICLE_INPUTS,
    ARTICLE_OUTPUT,
    ARTICLE_SIGNATURE,
    HISTORY_INPUTS,
    QUERY_INPUTS,
    SERVING_SIGNATURE,
    USER_INPUTS,
    USER_OUTPUT,
)
from trainer.model import two_tower as model_lib

LOG = logging.getLogger(__name__)

CORPUS_METADATA_COLUMNS = (
    features.ARTICLE_ID,
    features.TITLE,
    *features.ARTICLE_ATTRIBUTES,
    features.CREATED_AT,
    features.VIEW_COUNT,
)
VECTOR_BATCH = 8192


class ServingModule(tf.Module):
    """Raw features in, vectors out: the TFT transform followed by the towers.

    Args:
      model: the trained `TwoTowerModel`.
      transform_layer: `tft.TFTransformOutput(...).transform_features_layer()`.
      attributes: the article attributes the model uses (a subset of ARTICLE_ATTRIBUTES); the
        signature still takes every attribute input, unused ones are ignored.
    """

    def __init__(self, model: model_lib.TwoTowerModel, transform_layer: Any, attributes: Sequence[str]):
        super().__init__(name="candidate_model")
        self.model = model
        # Attribute of the module, so the transform's tables and assets are tracked and exported.
        self.transform_layer = transform_layer
        self._attributes = tuple(attributes)
        self.serve = tf.function(
            self._serve,
            input_signature=[
                *(tf.TensorSpec([None, None], tf.string, name=key) for key in (*HISTORY_INPUTS, *QUERY_INPUTS)),
                tf.TensorSpec([None], tf.float32, name=features.EXAMPLE_AGE),
            ],
        )
        self.article_vectors = tf.function(
            self._article_vectors,
            input_signature=[
                tf.TensorSpec([None], tf.float32 if key == features.LABEL_AGE else tf.string, name=key)
                for key in ARTICLE_INPUTS
            ],
        )

    def _serve(self, *inputs):
        given = dict(zip(USER_INPUTS, inputs))
        # from_dense drops the "" padding, so the transform sees exactly the real history items.
        raw: dict[str, Any] = {features.HISTORY: tf.sparse.from_dense(given[features.HISTORY])}
        if self.model.search_embedding is not None:
            raw[features.RECENT_QUERIES] = tf.sparse.from_dense(given[features.RECENT_QUERIES])
        for attr in self._attributes:
            key = features.history_attribute(attr)
            raw[key] = tf.sparse.from_dense(given[key])
        raw[features.EXAMPLE_AGE] = given[features.EXAMPLE_AGE]
        transformed = self.transform_layer(raw)
        dense = {}
        for key in (features.HISTORY, *(features.history_attribute(a) for a in self._attributes)):
            name = features.transformed_name(key)
            dense[name] = tf.sparse.to_dense(transformed[name], default_value=model_lib.PAD_ID)
        dense[model_lib.AGE_KEY] = transformed[model_lib.AGE_KEY]
        if self.model.search_embedding is not None:
            for key in model_lib.SEARCH_KEYS:
                dense[key] = tf.sparse.to_dense(transformed[key], default_value=model_lib.PAD_ID)
        return {USER_OUTPUT: self.model.user_vectors(dense, training=False)}

    def _article_vectors(self, *inputs):
        given = dict(zip(ARTICLE_INPUTS, inputs))
        raw: dict[str, Any] = {features.LABEL: given[features.LABEL]}
        for attr in self._attributes:
            raw[features.label_attribute(attr)] = given[features.label_attribute(attr)]
        content = None
        if self.model.title_embedding is not None or self.model.age_embedding is not None:
            # One title per article; from_dense drops "" (no title), as the transform's reader does.
            raw[features.LABEL_TITLE] = tf.sparse.from_dense(tf.reshape(given[features.LABEL_TITLE], [-1, 1]))
            raw[features.LABEL_AGE] = given[features.LABEL_AGE]
        transformed = self.transform_layer(raw)
        if self.model.title_embedding is not None or self.model.age_embedding is not None:
            content = {}
            if model_lib.TITLE_KEY in transformed:
                content[model_lib.TITLE_KEY] = tf.sparse.to_dense(
                    transformed[model_lib.TITLE_KEY], default_value=model_lib.PAD_ID
                )
            if model_lib.AGE_BUCKET_KEY in transformed:
                content[model_lib.AGE_BUCKET_KEY] = transformed[model_lib.AGE_BUCKET_KEY]
        vectors = self.model.article_vectors(
            transformed[model_lib.LABEL_KEY],
            {a: transformed[model_lib.label_attribute_key(a)] for a in self._attributes},
            content,
        )
        return {ARTICLE_OUTPUT: vectors}


def corpus_raw_features(corpus: pd.DataFrame, now_ms: float) -> dict[str, np.ndarray]:
    """Raw article features of every corpus row (`features.ARTICLE_FEATURES`, ages at `now_ms`):
    trainer/towers/article_inputs.py, the one maker of these inputs (the live service uses it too)."""
    from trainer.towers import article_inputs

    return article_inputs.corpus_article_features(corpus, now_ms)


def article_vectors_from_saved_model(signature: Any, raw: Mapping[str, np.ndarray]) -> np.ndarray:
    """Calls the `article_vectors` signature over `raw` in batches (trainer/towers/article_inputs.py)."""
    from trainer.towers import article_inputs

    return article_inputs.call_article_signature(signature, raw, VECTOR_BATCH)


def default_version(root: Path) -> str:
    """UTC time as `YYYYmmddTHHMMSSZ`, with `-2`, `-3`... if that name is taken under `root`."""
    base = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    version, n = base, 1
    while (root / version).exists():
        n += 1
        version = f"{base}-{n}"
    return version


def check_new_version(root: Path, version: str) -> None:
    """Raises unless `version` is a usable directory name not yet taken under `root`.

    Raises:
      ValueError: an empty, hidden or path-like name.
      FileExistsError: root/version exists (a model directory is never overwritten).
    """
    if not version or version.startswith(layout.STAGING_PREFIX) or "/" in version or "\\" in version:
        raise ValueError(f"model version {version!r} must be a plain, non-hidden directory name")
    if (root / version).exists():
        raise FileExistsError(
            f"{root / version} already exists; choose another --version (models are never overwritten)"
        )


def _file_table(directory: Path) -> dict[str, dict[str, Any]]:
    table = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        name = path.relative_to(directory).as_posix()
        if name == layout.MANIFEST_FILE:
            continue
        table[name] = {"bytes": path.stat().st_size, "sha256": layout.sha256_file(path)}
    return table


@dataclass
class ModelArtifacts:
    """What `write_model_dir` needs besides the model: facts gathered during training."""

    corpus: pd.DataFrame
    label_counts: Mapping[str, int]  # article id -> label count in the training split
    train_config: config_lib.TrainConfig
    metrics: dict[str, Any]
    extra_config: dict[str, Any]  # transform facts recorded in config.json
    vocab_hash: str
    num_train_examples: int
    as_of_ms: float | None = None  # the `now` corpus ages are measured at (None: article_inputs.corpus_now_ms)


def write_model_dir(
    module: ServingModule,
    artifacts: ModelArtifacts,
    output_root: str | os.PathLike,
    model_version: str | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Writes OUT/<version>/ (docs/architecture.md, MODEL_DIR); returns `(path, manifest)`.

    Raises:
      FileExistsError: OUT/<version> already exists (a model directory is never overwritten).
      RuntimeError: the reloaded SavedModel gives non-finite or mis-shaped vectors.
    """
    root = Path(output_root)
    root.mkdir(parents=True, exist_ok=True)
    version = model_version or default_version(root)
    check_new_version(root, version)
    final = root / version
    started = time.monotonic()
    # Built under a hidden staging sibling, manifest last, then renamed into place (homefeed.atomic).
    with atomic.staged_dir(final, prefix=f"{layout.STAGING_PREFIX}{version}.staging-") as staging:
        saved_model_path = staging / layout.SAVED_MODEL_DIR
        tf.saved_model.save(
            module,
            str(saved_model_path),
            signatures={SERVING_SIGNATURE: module.serve, ARTICLE_SIGNATURE: module.article_vectors},
        )
        loaded = tf.saved_model.load(str(saved_model_path))
        dim = artifacts.train_config.output_dim
        _smoke_test(loaded.signatures[SERVING_SIGNATURE], dim)

        corpus = artifacts.corpus
        from trainer.towers import article_inputs

        now = artifacts.as_of_ms if artifacts.as_of_ms is not None else article_inputs.corpus_now_ms(corpus)
        vectors = article_vectors_from_saved_model(
            loaded.signatures[ARTICLE_SIGNATURE], corpus_raw_features(corpus, now)
        )
        if vectors.shape != (len(corpus), dim) or not np.isfinite(vectors).all():
            raise RuntimeError(f"article vectors are {vectors.shape} or not finite; expected ({len(corpus)}, {dim})")
        np.save(staging / layout.ARTICLE_VECTORS_FILE, vectors)
        # The towers without TensorFlow, written only when proven equal to the reloaded SavedModel.
        from trainer.training import numpy_export

        twin_proof = numpy_export.write_twin(
            staging, module.model, module.transform_layer, loaded, artifacts.extra_config, corpus, now
        )
        (staging / layout.ARTICLE_IDS_FILE).write_text("".join(f"{a}\n" for a in corpus[features.ARTICLE_ID]))
        columns = [c for c in CORPUS_METADATA_COLUMNS if c in corpus.columns]
        corpus[columns].to_parquet(staging / layout.ARTICLES_FILE, index=False)

        in_corpus = set(corpus[features.ARTICLE_ID])
        popular = sorted(
            ((a, int(c)) for a, c in artifacts.label_counts.items() if c > 0 and a in in_corpus),
            key=lambda item: (-item[1], item[0]),
        )[: artifacts.train_config.popular_articles]
        _write_json(
            staging / layout.POPULAR_FILE,
            {
                "source": "label counts of the training split, corpus articles only",
                "articles": [{features.ARTICLE_ID: a, "count": c} for a, c in popular],
            },
        )
        _write_json(
            staging / layout.CONFIG_FILE,
            {"train": config_lib.to_dict(artifacts.train_config), **artifacts.extra_config},
        )
        _write_json(staging / layout.METRICS_FILE, artifacts.metrics)

        files = _file_table(staging)
        manifest = {
            "format_version": layout.FORMAT_VERSION,
            "model_version": version,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            # d: the size of user and article vectors (the index dimension).
            "embedding_dim": dim,
            "vocab_hash": artifacts.vocab_hash,
            "article_vectors_sha256": files[layout.ARTICLE_VECTORS_FILE]["sha256"],
            "num_articles": int(len(corpus)),
            "num_train_examples": int(artifacts.num_train_examples),
            "l2_normalized": artifacts.train_config.l2_normalize,
            "history_length": artifacts.extra_config.get("history_length"),
            # The user tower reads recent_queries (trained with searches; serving/recommend/candidates.py).
            "uses_searches": module.model.search_embedding is not None,
            # The article tower reads title and age (article_vectors takes features.ARTICLE_FEATURES),
            # and the corpus vectors were made with ages at this time (ms since the epoch).
            "uses_article_content": module.model.title_embedding is not None,
            "article_ages_at_ms": now,
            # trainer/towers/numpy_towers.py: the proof that numpy_towers/ equals the SavedModel (None: absent).
            "numpy_towers": twin_proof,
            "signature": {
                "name": SERVING_SIGNATURE,
                "inputs": list(USER_INPUTS),
                "output": USER_OUTPUT,
            },
            "best_epoch": artifacts.metrics.get("best_epoch"),
            "best_validation_recall": artifacts.metrics.get("best_validation_recall"),
            "files": files,
        }
        _write_json(staging / layout.MANIFEST_FILE, manifest)  # last: from here on it is a model
    LOG.info(
        "model %s written to %s (%d article vectors, d=%d) in %.1f s",
        version,
        final,
        len(corpus),
        dim,
        time.monotonic() - started,
    )
    return final, manifest


def _smoke_test(signature: Any, dim: int) -> None:
    """One call with an unknown article and one with an empty history: must give finite `[2, d]`."""
    strings = tf.constant([["__never_seen_article__"], [""]])
    out = signature(
        **dict.fromkeys((*HISTORY_INPUTS, *QUERY_INPUTS), strings),
        **{features.EXAMPLE_AGE: tf.constant([0.0, 0.0])},
    )[USER_OUTPUT].numpy()
    if out.shape != (2, dim) or not np.isfinite(out).all():
        raise RuntimeError(
            f"the exported model gives {out.shape} (finite: {np.isfinite(out).all()}), expected (2, {dim})"
        )


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, (tuple, set)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
