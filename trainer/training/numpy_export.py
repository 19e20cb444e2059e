"""Writing `MODEL_DIR/numpy_towers/` (trainer/towers/numpy_towers.py), only once it is proven equal to the SavedModel.

`write_twin` runs inside the export's staging directory, after the SavedModel is saved and
reloaded: it writes the towers' weights (one `.npy` each, shared tables once), the vocabularies the
served transform uses (copied from the SavedModel's own assets) and `spec.json` (parts, sizes, the
example age's z-score constants, read back from the transform), then loads the twin from those
files and calls it and the reloaded signatures on the same inputs: rows built from the corpus's
real ids, attributes and titles and the search vocabulary's tokens, plus hostile rows (unknown
ids, empty rows, searches only, unicode queries, histories longer than H, missing attributes,
unknown and missing ages). Above `TOLERANCE` max abs difference, or on any error, the directory
is removed again and the reason logged: the model still serves through the SavedModel.
"""

from __future__ import annotations

import functools
import logging
import math
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import tensorflow as tf

from homefeed import atomic, features
from homefeed.layout import model_dir as layout
from trainer.towers import numpy_towers

LOG = logging.getLogger(__name__)

TOLERANCE = 1e-4  # max abs difference allowed between twin and SavedModel vectors
PROOF_USERS = 160
PROOF_ARTICLES = 400
_AGE_PROBES = (0.0, 1000.0)


class TwinMismatchError(RuntimeError):
    """The twin's vectors differ from the SavedModel's by more than `TOLERANCE`."""


def _user_arrays(model: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The user tower's weights by twin name (Keras variables) and its spec part."""
    arrays: dict[str, Any] = {"user/history_embedding": model.history_embedding.embeddings}
    for attr in model.attributes:
        arrays[f"user/{attr}_embedding"] = model.history_attribute_embeddings[attr].embeddings
    if model.search_embedding is not None:
        arrays["user/search_embedding"] = model.search_embedding.embeddings
    dense = [layer for layer in model.user_layers if hasattr(layer, "kernel")]
    for i, layer in enumerate(dense):
        expected = "linear" if i == len(dense) - 1 else "relu"
        if layer.activation.__name__ != expected or not layer.use_bias:
            raise ValueError(
                f"user layer {layer.name} is {layer.activation.__name__} (bias {layer.use_bias}), the twin has {expected}"
            )
        name = "user/output" if i == len(dense) - 1 else f"user/hidden_{i}"
        arrays[f"{name}/kernel"], arrays[f"{name}/bias"] = layer.kernel, layer.bias
    spec: dict[str, Any] = {
        "pooling": model.config.user_pooling,
        "recent_items": int(model.config.recent_items),
        "hidden_layers": len(dense) - 1,
        "searches": model.search_embedding is not None,
        "l2_normalize": bool(model.config.l2_normalize),
    }
    pooling = model.sequence_pooling
    if model.config.user_pooling == "attention":
        spec["attention_window"] = int(pooling.history_length)
        spec["attention_blocks"] = len(pooling.blocks)
        arrays["attention/position_embedding"] = pooling.positions.embeddings
        arrays["attention/output_norm/gamma"] = pooling.output_norm.gamma
        arrays["attention/output_norm/beta"] = pooling.output_norm.beta
        for i, block in enumerate(pooling.blocks):
            prefix = f"attention/block_{i}"
            for norm in ("attention_norm", "ffn_norm"):
                arrays[f"{prefix}/{norm}/gamma"] = getattr(block, norm).gamma
                arrays[f"{prefix}/{norm}/beta"] = getattr(block, norm).beta
            for layer in ("ffn_in", "ffn_out"):
                arrays[f"{prefix}/{layer}/kernel"] = getattr(block, layer).kernel
                arrays[f"{prefix}/{layer}/bias"] = getattr(block, layer).bias
            for variable in block.attention.weights:  # .../attention/{query,key,value,attention_output}/{kernel,bias}
                part, kind = variable.path.split("/")[-2:]
                arrays[f"{prefix}/{'output' if part == 'attention_output' else part}/{kind}"] = variable
    elif model.config.user_pooling == "gru":
        cell = pooling.gru.cell
        if not (
            cell.reset_after
            and cell.use_bias
            and cell.activation.__name__ == "tanh"
            and cell.recurrent_activation.__name__ == "sigmoid"
        ):
            raise ValueError("the GRU is not the reset_after/tanh/sigmoid cell the twin implements")
        arrays["gru/kernel"], arrays["gru/recurrent_kernel"], arrays["gru/bias"] = (
            cell.kernel,
            cell.recurrent_kernel,
            cell.bias,
        )
    return arrays, spec


def _article_arrays(model: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    arrays: dict[str, Any] = {"article/article_embedding": model.article_embedding.embeddings}
    for attr in model.attributes:
        arrays[f"article/{attr}_embedding"] = model.attribute_embeddings[attr].embeddings
    if model.title_embedding is not None:
        arrays["article/title_embedding"] = model.title_embedding.embeddings
    if model.age_embedding is not None:
        arrays["article/age_embedding"] = model.age_embedding.embeddings
    if model.article_hidden is not None:
        arrays["article/hidden/kernel"], arrays["article/hidden/bias"] = (
            model.article_hidden.kernel,
            model.article_hidden.bias,
        )
    arrays["article/output/kernel"] = model.article_projection.kernel
    arrays["article/output/bias"] = model.article_projection.bias
    spec = {
        "title": model.title_embedding is not None,
        "age": model.age_embedding is not None,
        "hidden": model.article_hidden is not None,
        "l2_normalize": bool(model.config.l2_normalize),
    }
    return arrays, spec


def _age_constants(transform_layer: Any) -> dict[str, float]:
    """The z-score's mean and deviation, read back from the transform: it is affine, two probes fix it."""
    key = features.transformed_name(features.EXAMPLE_AGE)
    z = transform_layer({features.EXAMPLE_AGE: tf.constant(_AGE_PROBES, tf.float32)})[key].numpy().astype(np.float64)
    slope = (z[1] - z[0]) / (_AGE_PROBES[1] - _AGE_PROBES[0])
    if not math.isfinite(slope) or slope <= 0:
        raise ValueError(f"the transform's example-age z-score is not increasing affine (probes gave {z})")
    std = 1.0 / slope
    return {"mean": float(_AGE_PROBES[0] - z[0] * std), "std": float(std)}


def _save_npy(path: Path, value: np.ndarray) -> None:
    def write(temporary: Path) -> None:
        with open(temporary, "wb") as handle:
            np.save(handle, np.ascontiguousarray(value, dtype=np.float32), allow_pickle=False)

    atomic.write_with(path, write)


def _write_files(
    directory: Path, model: Any, transform_layer: Any, assets: Path, extra_config: Mapping[str, Any]
) -> dict[str, Any]:
    """Writes weights, vocabularies and spec.json into `directory`; returns the spec."""
    transform_config = extra_config.get("transform") or {}
    oov = int(extra_config["num_oov_buckets"])
    user_arrays, user_spec = _user_arrays(model)
    article_arrays, article_spec = _article_arrays(model)
    (directory / layout.NUMPY_TOWERS_WEIGHTS_DIR).mkdir(parents=True)
    (directory / layout.NUMPY_TOWERS_VOCAB_DIR).mkdir()
    files: dict[int, str] = {}  # id(variable) -> file: a table both towers share is written once
    names: dict[str, str] = {}
    for name, variable in {**user_arrays, **article_arrays}.items():
        if id(variable) not in files:
            file = f"{layout.NUMPY_TOWERS_WEIGHTS_DIR}/{name.replace('/', '.')}.npy"
            _save_npy(directory / file, np.asarray(variable.numpy()))
            files[id(variable)] = file
        names[name] = files[id(variable)]
    sizes = {features.ARTICLE_VOCAB: (model.vocab.articles, oov)}
    sizes.update({features.vocabulary_name(a): (model.vocab.attributes[a], oov) for a in model.attributes})
    if model.search_embedding is not None:
        sizes[features.SEARCH_TOKEN_VOCAB] = (model.vocab.search_tokens, int(transform_config["search_oov_buckets"]))
    vocabularies = {}
    for name, (table_size, buckets) in sizes.items():
        source = assets / name
        if not source.is_file():
            raise FileNotFoundError(f"the SavedModel has no vocabulary asset {source}")
        file = f"{layout.NUMPY_TOWERS_VOCAB_DIR}/{name}.txt"
        atomic.write_with(directory / file, functools.partial(shutil.copyfile, source))
        size = table_size - buckets
        vocabularies[name] = {"file": file, "size": size, "oov_buckets": buckets}
    spec = {
        "format": numpy_towers.SPEC_FORMAT,
        "dim": int(model.config.output_dim),
        "history_length": int(model.history_length),
        "search_length": int(transform_config.get("search_length", features.SEARCH_LENGTH)),
        "attributes": list(model.attributes),
        "example_age": _age_constants(transform_layer),
        "vocabularies": vocabularies,
        "arrays": names,
        "user": user_spec,
        "article": article_spec,
    }
    atomic.write_json(directory / layout.NUMPY_TOWERS_SPEC_FILE, spec)
    return spec


# -- proof inputs -----------------------------------------------------------------------------
HOSTILE_QUERIES = (
    "유모차 Baby-Stroller",
    "ＦＵＬＬ ｗｉｄｔｈ ＴＶ",
    "naïve café!!",
    "😀 emoji",
    "   ",
    "!!!",
    "x" * 600,
)


def proof_rows(corpus: pd.DataFrame, search_tokens: Sequence[str], history_length: int, seed: int = 0) -> list[dict]:
    """User rows for the proof: histories of real corpus articles with their attributes, queries of
    search-vocabulary tokens and titles, then the hostile cases (see module docstring)."""
    rng = np.random.default_rng(seed)
    ids = corpus[features.ARTICLE_ID].astype(str).tolist()
    attrs = {
        a: corpus[a].astype(object).where(corpus[a].notna(), None).tolist()
        for a in features.ARTICLE_ATTRIBUTES
        if a in corpus
    }
    titles = [t for t in corpus.get(features.TITLE, pd.Series(dtype=object)).dropna().astype(str).tolist() if t]
    words = [t for t in search_tokens if t] or ["query"]
    rows: list[dict] = []
    for _ in range(PROOF_USERS):
        length = int(rng.integers(0, history_length + 12))
        picks = rng.integers(0, len(ids), size=length)
        row: dict[str, Any] = {features.HISTORY: [ids[i] for i in picks]}
        for attr, values in attrs.items():
            row[features.history_attribute(attr)] = [values[i] or features.MISSING_ATTRIBUTE for i in picks]
        if rng.random() < 0.7:
            queries = [
                " ".join(rng.choice(words, size=int(rng.integers(1, 4)))) for _ in range(int(rng.integers(1, 25)))
            ]
            if titles and rng.random() < 0.5:
                queries.append(titles[int(rng.integers(0, len(titles)))])
            row[features.RECENT_QUERIES] = queries
        rows.append(row)
    some = ids[: min(len(ids), 5)]
    rows += [
        {},
        {features.HISTORY: ["__never_seen_article__", "유모차", *some]},
        {features.RECENT_QUERIES: list(HOSTILE_QUERIES)},
        {features.RECENT_QUERIES: ["!!!", *words[:3]]},
        {features.HISTORY: (ids * (3 * history_length // max(1, len(ids)) + 1))[: 3 * history_length]},
        {
            features.HISTORY: some,
            **{features.history_attribute(a): ["__unknown_value__"] for a in features.ARTICLE_ATTRIBUTES},
        },
        {features.HISTORY: some, features.RECENT_QUERIES: [f"{w} {w}" for w in words[:30]]},
    ]
    return rows


def proof_articles(corpus: pd.DataFrame, now_ms: float, seed: int = 0) -> dict[str, np.ndarray]:
    """Article inputs for the proof: a sample of the corpus, then hostile ones (unknown and empty
    ids, missing attributes, unicode and over-long titles, unknown, zero and very old ages)."""
    from trainer.towers import article_inputs

    sample = corpus.sample(n=min(len(corpus), PROOF_ARTICLES), random_state=seed) if len(corpus) else corpus
    real = article_inputs.corpus_article_features(sample, now_ms)
    known = [*sample[features.ARTICLE_ID].astype(str).head(3), "k1", "k2", "k3"][:3]
    hostile = article_inputs.raw_article_features(
        ["__never_seen_article__", "", "유모차-1", *known],
        {"category": [None, "", "__unknown_value__", None, "__unknown_value__", None]},
        ["유모차 Baby-Stroller", None, "x " * 400, "ＦＵＬＬ ｗｉｄｔｈ", "", "😀"],
        [None, now_ms, now_ms - 3_600_000 * 5, now_ms + 86_400_000, now_ms - 86_400_000 * 4000, None],
        now_ms,
    )
    return {key: np.concatenate([real[key], hostile[key]]) for key in real}


def prove(
    twin: numpy_towers.NumpyTowers, loaded: Any, rows: list[dict], articles: Mapping[str, np.ndarray]
) -> dict[str, Any]:
    """Max abs differences between the twin and the reloaded SavedModel's signatures.

    Raises:
      TwinMismatchError: either tower differs by more than `TOLERANCE` (the message says where).
    """
    from trainer.towers import article_inputs, serving_model

    signature = loaded.signatures[layout.SERVING_SIGNATURE]
    ages = np.random.default_rng(1).uniform(0.0, 400.0, size=len(rows)).astype(np.float32)
    worst_user = 0.0
    for batch_ages in (np.full(len(rows), features.SERVING_EXAMPLE_AGE, np.float32), ages):
        padded = serving_model.pad_histories(rows, twin.history_length)
        expected = serving_model.call_user_signature(signature, padded, batch_ages)
        got = twin.user_vectors(padded, batch_ages)
        diff = np.abs(expected - got).max(axis=1)
        worst_user = max(worst_user, float(diff.max()))
        if worst_user > TOLERANCE:
            row = int(diff.argmax())
            raise TwinMismatchError(
                f"user vectors differ by {worst_user:.2e} > {TOLERANCE} (row {row}: {rows[row]!r:.200})"
            )
    expected = article_inputs.call_article_signature(loaded.signatures[layout.ARTICLE_SIGNATURE], articles)
    got = twin.article_vectors(articles)
    diff = np.abs(expected - got).max(axis=1)
    worst_article = float(diff.max()) if len(diff) else 0.0
    if worst_article > TOLERANCE:
        row = int(diff.argmax())
        raise TwinMismatchError(
            f"article vectors differ by {worst_article:.2e} > {TOLERANCE} (article {articles[features.LABEL][row]!r})"
        )
    return {
        "tolerance": TOLERANCE,
        "user_rows": 2 * len(rows),
        "article_rows": len(diff),
        "max_abs_diff_user": worst_user,
        "max_abs_diff_article": worst_article,
    }


def write_twin(
    staging: Path,
    model: Any,
    transform_layer: Any,
    loaded: Any,
    extra_config: Mapping[str, Any],
    corpus: pd.DataFrame,
    now_ms: float,
) -> dict[str, Any] | None:
    """Writes `staging/numpy_towers/` when the twin is proven equal; returns the proof, else None.

    Never raises for the twin's sake: whatever goes wrong is logged and the directory removed.
    """
    directory = staging / layout.NUMPY_TOWERS_DIR
    try:
        directory.mkdir()
        spec = _write_files(
            directory, model, transform_layer, staging / layout.SAVED_MODEL_DIR / "assets", extra_config
        )
        twin = numpy_towers.NumpyTowers(staging)
        search_vocab = twin.vocabularies.get(features.SEARCH_TOKEN_VOCAB)
        tokens = search_vocab.values()[:200] if search_vocab is not None else []
        proof = prove(twin, loaded, proof_rows(corpus, tokens, twin.history_length), proof_articles(corpus, now_ms))
        spec["proof"] = proof
        atomic.write_json(directory / layout.NUMPY_TOWERS_SPEC_FILE, spec)
    except Exception as error:  # the twin is an optimisation: the SavedModel still serves
        LOG.warning(
            "NumPy towers not written (%s: %s); the model serves through its SavedModel", type(error).__name__, error
        )
        shutil.rmtree(directory, ignore_errors=True)
        return None
    LOG.info(
        "NumPy towers written (%s pooling): equal to the SavedModel within %.0e on %d user and %d article rows "
        "(max abs difference %.1e and %.1e)",
        spec["user"]["pooling"],
        TOLERANCE,
        proof["user_rows"],
        proof["article_rows"],
        proof["max_abs_diff_user"],
        proof["max_abs_diff_article"],
    )
    return proof
