"""The two towers of trainer/model/two_tower.py in NumPy, with the transform in front (trainer/towers/numpy_features.py).

`TwoTowerModel.user_vectors` and `article_vectors` as plain array code, inference only:

  user: masked mean of the history's article embeddings; of its `recent_items` most recent; the
    sequence pooling (`attention`: trainer/model/sequence.py `SelfAttentionPooling`, pre-norm blocks and
    the most recent view as the last block's only query; `gru`: Keras' GRU, reset_after, read
    oldest to newest, masked steps carrying the state; `mean`: none); the masked means of the
    attribute embeddings; of the search tokens' and of the last query's; the z-scored example age;
    ReLU layers, a linear output, L2 normalisation.
  article: id embedding, attribute embeddings, the title tokens' masked mean, the age-bucket
    embedding; an optional ReLU layer, a linear projection, L2 normalisation.

The weights, vocabularies and constants come from `MODEL_DIR/numpy_towers/` (homefeed.layout.model_dir),
written by trainer/training/numpy_export.py only after it proved the twin equal to the SavedModel on real and
hostile inputs. NumPy, the standard library and pyfarmhash only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from homefeed import features
from homefeed.layout import model_dir as layout
from trainer.towers import numpy_features as nf

SPEC_FORMAT = 1
POOLINGS = ("attention", "gru", "mean")
LAYER_NORM_EPSILON = 1e-6  # trainer/model/sequence.py
MASKED_SCORE = -1e9  # Keras' masked softmax adds this to masked positions (float32)


class TwinFilesError(ValueError):
    """`numpy_towers/` is missing, unreadable or inconsistent; the SavedModel must be used instead."""


# -- building blocks --------------------------------------------------------------------------
def masked_mean(embedded: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """`trainer.model.two_tower.masked_mean`: `[B, L, E]`, `[B, L]` -> `[B, E]` (rows without a position: 0)."""
    weights = mask.astype(np.float32)
    total = np.einsum("ble,bl->be", embedded, weights)
    return total / np.maximum(weights.sum(axis=1, keepdims=True), np.float32(1.0))


def layer_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    var = np.square(x - mean).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + np.float32(LAYER_NORM_EPSILON)) * gamma + beta


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """`tf.math.l2_normalize(x, axis=-1)`: `x / sqrt(max(sum(x^2), 1e-12))`."""
    return x / np.sqrt(np.maximum(np.square(x).sum(axis=-1, keepdims=True), np.float32(1e-12)))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.float32(1.0) / (np.float32(1.0) + np.exp(-x))


def _lookup(table: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """`TwoTowerModel._ids` then the embedding: ids clipped into the table (padding -> row 0, masked later).

    `take(mode="clip")` clips in the same C call as the gather (negative ids to row 0): numpy's
    `clip` costs ~10 us of Python wrappers a call, and a request makes one call per feature."""
    return table.take(ids, axis=0, mode="clip")


@dataclass(frozen=True)
class _Weights:
    """The twin's arrays by name (spec `arrays`: name -> `.npy` file), with a clear error for a missing one."""

    arrays: Mapping[str, np.ndarray]

    def __getitem__(self, name: str) -> np.ndarray:
        try:
            return self.arrays[name]
        except KeyError:
            raise TwinFilesError(f"{layout.NUMPY_TOWERS_SPEC_FILE} lists no array {name!r}") from None

    def dense(self, x: np.ndarray, name: str, relu: bool) -> np.ndarray:
        y = x @ self[f"{name}/kernel"] + self[f"{name}/bias"]
        return np.maximum(y, np.float32(0.0)) if relu else y


def _attention_block(w: _Weights, prefix: str, x: np.ndarray, mask: np.ndarray, queries: int | None) -> np.ndarray:
    """trainer/model/sequence.py `_Block` (inference): `x [B, L, E]`, `mask [B, L]` -> `[B, Q, E]`."""
    normed = layer_norm(x, w[f"{prefix}/attention_norm/gamma"], w[f"{prefix}/attention_norm/beta"])
    query_in = normed if queries is None else normed[:, :queries]
    residual = x if queries is None else x[:, :queries]
    q = np.einsum("bte,enh->btnh", query_in, w[f"{prefix}/query/kernel"]) + w[f"{prefix}/query/bias"]
    k = np.einsum("bse,enh->bsnh", normed, w[f"{prefix}/key/kernel"]) + w[f"{prefix}/key/bias"]
    v = np.einsum("bse,enh->bsnh", normed, w[f"{prefix}/value/kernel"]) + w[f"{prefix}/value/bias"]
    q = q * np.float32(1.0 / np.sqrt(float(q.shape[-1])))
    scores = np.einsum("bsnh,btnh->bnts", k, q)
    scores = np.where(mask[:, None, None, :], scores, np.float32(MASKED_SCORE))
    scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
    probs = scores / scores.sum(axis=-1, keepdims=True)
    attended = np.einsum("bnts,bsnh->btnh", probs, v)
    out = np.einsum("btnh,nhe->bte", attended, w[f"{prefix}/output/kernel"]) + w[f"{prefix}/output/bias"]
    h = residual + out
    normed_h = layer_norm(h, w[f"{prefix}/ffn_norm/gamma"], w[f"{prefix}/ffn_norm/beta"])
    return h + w.dense(w.dense(normed_h, f"{prefix}/ffn_in", relu=True), f"{prefix}/ffn_out", relu=False)


def attention_pooling(w: _Weights, blocks: int, window: int, embedded: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """`SelfAttentionPooling` (inference): `[B, H, E]`, `[B, H]` -> `[B, E]`."""
    embedded, mask = embedded[:, :window], mask[:, :window]
    weights = mask.astype(np.float32)[..., None]
    x = (embedded + w["attention/position_embedding"][None, :window]) * weights
    for i in range(blocks - 1):
        x = _attention_block(w, f"attention/block_{i}", x, mask, None) * weights
    out = _attention_block(w, f"attention/block_{blocks - 1}", x, mask, 1)[:, 0]
    out = layer_norm(out, w["attention/output_norm/gamma"], w["attention/output_norm/beta"])
    return out * mask.any(axis=1, keepdims=True).astype(np.float32)


def gru_pooling(w: _Weights, embedded: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """`GRUPooling` (Keras GRU, reset_after, sigmoid/tanh, go_backwards): `[B, H, E]` -> `[B, units]`."""
    kernel, recurrent, bias = w["gru/kernel"], w["gru/recurrent_kernel"], w["gru/bias"]
    units = recurrent.shape[0]
    inputs = embedded @ kernel + bias[0]
    state = np.zeros((embedded.shape[0], units), np.float32)
    for t in reversed(range(embedded.shape[1])):
        rec = state @ recurrent + bias[1]
        x = inputs[:, t]
        z = _sigmoid(x[:, :units] + rec[:, :units])
        r = _sigmoid(x[:, units : 2 * units] + rec[:, units : 2 * units])
        candidate = np.tanh(x[:, 2 * units :] + r * rec[:, 2 * units :])
        new = z * state + (np.float32(1.0) - z) * candidate
        state = np.where(mask[:, t, None], new, state)
    return state * mask.any(axis=1, keepdims=True).astype(np.float32)


# -- the towers -------------------------------------------------------------------------------
class NumpyTowers:
    """Both towers of one model directory, transform included (see module docstring).

    Raises:
      TwinFilesError: `numpy_towers/` is missing or inconsistent (message names the file).
    """

    def __init__(self, model_dir: str | Path):
        self.model_dir = Path(model_dir)
        directory = self.model_dir / layout.NUMPY_TOWERS_DIR
        spec_path = directory / layout.NUMPY_TOWERS_SPEC_FILE
        if not spec_path.is_file():
            raise TwinFilesError(f"{self.model_dir} has no {layout.NUMPY_TOWERS_DIR}/{layout.NUMPY_TOWERS_SPEC_FILE}")
        try:
            spec = json.loads(spec_path.read_text())
            # Memory-mapped: the page cache holds one copy for every worker process.
            # (Viewed as plain arrays: np.memmap's own indexing costs more than the math at batch 1.)
            arrays = {
                name: np.load(directory / file, mmap_mode="r", allow_pickle=False).view(np.ndarray)
                for name, file in spec["arrays"].items()
            }
        except (OSError, ValueError, KeyError) as error:
            raise TwinFilesError(f"{directory}: cannot read the twin's files: {error}") from error
        if spec.get("format") != SPEC_FORMAT:
            raise TwinFilesError(f"{spec_path}: format {spec.get('format')!r} is not {SPEC_FORMAT}")
        self.spec: dict[str, Any] = spec
        self.w = _Weights(arrays)
        user, article = spec["user"], spec["article"]
        if user["pooling"] not in POOLINGS:
            raise TwinFilesError(f"{spec_path}: pooling {user['pooling']!r} is not one of {POOLINGS}")
        self.attributes: tuple[str, ...] = tuple(spec["attributes"])
        self.history_length = int(spec["history_length"])
        self.search_length = int(spec["search_length"])
        self.dim = int(spec["dim"])
        self.uses_searches = bool(user["searches"])
        self.vocabularies = {
            name: nf.Vocabulary.from_file(directory / entry["file"], entry["oov_buckets"])
            for name, entry in spec["vocabularies"].items()
        }
        for name, entry in spec["vocabularies"].items():
            if self.vocabularies[name].size != entry["size"]:
                raise TwinFilesError(
                    f"{directory / entry['file']} holds {self.vocabularies[name].size} values, the spec says {entry['size']}"
                )
        self._user, self._article = user, article
        nf.separators()  # built here, not in the first request
        self._age_mean, self._age_std = float(spec["example_age"]["mean"]), float(spec["example_age"]["std"])

    # -- user tower ---------------------------------------------------------------------------
    def user_vectors(self, padded: Mapping[str, np.ndarray], example_age_days: np.ndarray) -> np.ndarray:
        """`float32 [B, dim]` from `trainer.towers.serving_model.pad_histories` output and ages `[B]`."""
        w, spec, H = self.w, self._user, self.history_length
        history = nf.history_ids(padded[features.HISTORY], self.vocabularies[features.ARTICLE_VOCAB], H)
        mask = history >= 0
        embedded = _lookup(w["user/history_embedding"], history)
        parts = [masked_mean(embedded, mask)]
        if spec["recent_items"]:
            parts.append(masked_mean(embedded, mask & (np.arange(H)[None, :] < spec["recent_items"])))
        if spec["pooling"] == "attention":
            parts.append(attention_pooling(w, spec["attention_blocks"], spec["attention_window"], embedded, mask))
        elif spec["pooling"] == "gru":
            parts.append(gru_pooling(w, embedded, mask))
        for attr in self.attributes:
            key = features.history_attribute(attr)
            values = nf.history_ids(padded[key], self.vocabularies[features.vocabulary_name(attr)], H)
            parts.append(masked_mean(_lookup(w[f"user/{attr}_embedding"], values), mask & (values >= 0)))
        if spec["searches"]:
            table = w["user/search_embedding"]
            queries = padded.get(features.RECENT_QUERIES)
            if queries is None:
                queries = np.full((len(history), 1), "", dtype=object)
            for ids in nf.search_token_ids(queries, self.vocabularies[features.SEARCH_TOKEN_VOCAB], self.search_length):
                parts.append(masked_mean(_lookup(table, ids), ids >= 0))
        ages = nf.z_score(example_age_days, self._age_mean, self._age_std)
        parts.append(ages.reshape(-1, 1))
        x = np.concatenate(parts, axis=1).astype(np.float32)
        for i in range(spec["hidden_layers"]):
            x = w.dense(x, f"user/hidden_{i}", relu=True)
        x = w.dense(x, "user/output", relu=False)
        return (l2_normalize(x) if spec["l2_normalize"] else x).astype(np.float32)

    # -- article tower ------------------------------------------------------------------------
    def article_vectors(self, raw: Mapping[str, np.ndarray]) -> np.ndarray:
        """`float32 [N, dim]` from `trainer.towers.article_inputs.raw_article_features` output."""
        w, spec = self.w, self._article
        labels = raw[features.LABEL]
        n = len(labels)
        if n == 0:
            return np.zeros((0, self.dim), np.float32)
        parts = [_lookup(w["article/article_embedding"], self.vocabularies[features.ARTICLE_VOCAB].ids(labels))]
        for attr in self.attributes:
            values = raw.get(features.label_attribute(attr))
            if values is None:
                values = np.full(n, features.MISSING_ATTRIBUTE, dtype=object)
            ids = self.vocabularies[features.vocabulary_name(attr)].ids(values)
            parts.append(_lookup(w[f"article/{attr}_embedding"], ids))
        if spec["title"]:
            titles = raw.get(features.LABEL_TITLE)
            title_ids = nf.title_token_ids([""] * n if titles is None else list(titles))
            parts.append(masked_mean(_lookup(w["article/title_embedding"], title_ids), title_ids >= 0))
        if spec["age"]:
            ages = raw.get(features.LABEL_AGE)
            buckets = nf.age_buckets(
                np.full(n, features.UNKNOWN_AGE, np.float32) if ages is None else np.asarray(ages, np.float32)
            )
            parts.append(_lookup(w["article/age_embedding"], buckets))
        x = np.concatenate(parts, axis=1).astype(np.float32)
        if spec["hidden"]:
            x = w.dense(x, "article/hidden", relu=True)
        x = w.dense(x, "article/output", relu=False)
        return (l2_normalize(x) if spec["l2_normalize"] else x).astype(np.float32)


def has_twin(manifest: Mapping[str, Any]) -> bool:
    """Whether a model directory's manifest lists the twin's spec (so its hash is checked on load)."""
    return f"{layout.NUMPY_TOWERS_DIR}/{layout.NUMPY_TOWERS_SPEC_FILE}" in (manifest.get("files") or {})
