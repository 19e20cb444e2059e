"""The one way to call an exported candidate model: raw histories in, user vectors out.

Evaluation, the index recall check and the HTTP service all go through `UserEncoder`, so offline
figures and served answers come from the same code path and the same SavedModel signature.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from homefeed import features, tokens

# The SavedModel's interface, named where trainer/training/export.py also takes it from.
from homefeed.layout.model_dir import HISTORY_INPUTS as HISTORY_KEYS
from homefeed.layout.model_dir import QUERY_INPUTS as QUERY_KEYS
from homefeed.layout.model_dir import SAVED_MODEL_DIR
from homefeed.layout.model_dir import SERVING_SIGNATURE as SIGNATURE
from homefeed.layout.model_dir import USER_OUTPUT as OUTPUT_KEY

LOG = logging.getLogger(__name__)


def _as_list(values: Sequence[str] | np.ndarray | None) -> list[str]:
    """A history column as a list of str (None -> []); accepts lists, tuples and numpy arrays."""
    return [] if values is None else [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def pad_histories(rows: Sequence[Mapping[str, Sequence[str]]], history_length: int) -> dict[str, np.ndarray]:
    """Right-pad each history column of `rows` with "" into `object` arrays `[batch, width]`.

    Each row maps `history` (most recent first) and the parallel `history_<attr>` columns to lists
    of strings; missing attribute columns are filled with `features.MISSING_ATTRIBUTE`. Histories
    longer than `history_length` keep their most recent `history_length` entries. `width` is at
    least 1 so an all-empty batch still has a valid shape.

    `recent_queries` (optional, most recent first) becomes its own `[batch, width_q]` column: the
    first `features.SEARCH_LENGTH` queries, each `homefeed.tokens.normalise`d (the form the
    extract writes), blank ones left out.
    """
    histories = [_as_list(row.get(features.HISTORY))[:history_length] for row in rows]
    width = max([1, *(len(h) for h in histories)])
    batch: dict[str, np.ndarray] = {}
    for key in HISTORY_KEYS:
        column = np.full((len(rows), width), "", dtype=object)
        for i, (row, history) in enumerate(zip(rows, histories)):
            if key == features.HISTORY:
                values = history
            else:
                given = _as_list(row.get(key))
                values = (given + [features.MISSING_ATTRIBUTE] * len(history))[: len(history)]
            column[i, : len(values)] = values
        batch[key] = column
    for key in QUERY_KEYS:
        queries = [
            [q for q in (tokens.normalise(v) for v in _as_list(row.get(key))) if q.strip()][: features.SEARCH_LENGTH]
            for row in rows
        ]
        column = np.full((len(rows), max([1, *(len(q) for q in queries)])), "", dtype=object)
        for i, values in enumerate(queries):
            column[i, : len(values)] = values
        batch[key] = column
    return batch


def _manifest_value(model_dir: Path, key: str, default):
    import json

    from homefeed.layout.model_dir import MANIFEST_FILE

    try:
        return json.loads((model_dir / MANIFEST_FILE).read_text()).get(key, default)
    except (OSError, ValueError):
        return default


_TF_THREADS: list[int] = []  # set_tf_threads' request, applied when TensorFlow is first loaded here


def set_tf_threads(threads: int) -> None:
    """Sizes TensorFlow's intra/inter-op pools: now when TensorFlow is already imported, else when a
    SavedModel is first loaded (so a process serving NumPy towers never imports TensorFlow)."""
    import sys

    _TF_THREADS[:] = [threads]
    if "tensorflow" in sys.modules:
        _apply_tf_threads()


def _apply_tf_threads() -> None:
    import tensorflow as tf

    if not _TF_THREADS:
        return
    threads = _TF_THREADS.pop()
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # TF already initialised in this process (e.g. tests): keep its pools
        LOG.debug("TensorFlow thread pools already initialised; tf_threads not applied")


def call_user_signature(signature, padded: Mapping[str, np.ndarray], ages: np.ndarray) -> np.ndarray:
    """The serving signature over `pad_histories` output and float32 ages `[B]` -> `float32 [B, d]`;
    inputs the signature does not take (a model exported before searches existed) are left out."""
    import tensorflow as tf

    accepted = set(signature.structured_input_signature[1])
    inputs = {key: tf.constant(value, dtype=tf.string) for key, value in padded.items() if key in accepted}
    inputs[features.EXAMPLE_AGE] = tf.constant(np.asarray(ages, np.float32), tf.float32)
    return signature(**inputs)[OUTPUT_KEY].numpy()


class _Encoder:
    """What both encoders share: `encode_batched` over their `encode`."""

    dim: int

    def encode(self, rows, example_age_days=features.SERVING_EXAMPLE_AGE) -> np.ndarray:
        raise NotImplementedError

    def encode_batched(
        self,
        rows: Sequence[Mapping[str, Sequence[str]]],
        batch_size: int = 1024,
        example_age_days: float | np.floating | Sequence[float] | np.ndarray = features.SERVING_EXAMPLE_AGE,
    ) -> np.ndarray:
        """`encode` over many rows, `batch_size` at a time (bounded memory)."""
        ages = np.broadcast_to(np.asarray(example_age_days, dtype=np.float32), (len(rows),))
        parts = [
            self.encode(rows[i : i + batch_size], ages[i : i + batch_size]) for i in range(0, len(rows), batch_size)
        ]
        return np.concatenate(parts) if parts else np.zeros((0, self.dim), dtype=np.float32)


class UserEncoder(_Encoder):
    """Loads `MODEL_DIR/saved_model` and turns raw user histories into user vectors.

    Args:
      model_dir: a model directory as written by `candidates train` (see docs/architecture.md).
      history_length: histories are cut to their most recent `history_length` views before the call
        (the transform inside the model truncates too; cutting here only saves work).
    """

    def __init__(self, model_dir: str | Path, history_length: int = features.HISTORY_LENGTH):
        import tensorflow as tf  # heavy: imported only when a model is actually loaded

        _apply_tf_threads()
        self.model_dir = Path(model_dir)
        path = self.model_dir / SAVED_MODEL_DIR
        if not path.is_dir():
            raise FileNotFoundError(f"no SavedModel at {path}: is {model_dir} a finished model directory?")
        self._loaded = tf.saved_model.load(str(path))
        if SIGNATURE not in self._loaded.signatures:
            raise ValueError(f"{path} has no '{SIGNATURE}' signature (has {list(self._loaded.signatures)})")
        self._signature = self._loaded.signatures[SIGNATURE]
        self.history_length = history_length
        # Whether the user tower reads the queries (the model was trained with searches): only
        # then can a user with searches but no views be personalised.
        self.uses_searches = bool(_manifest_value(self.model_dir, "uses_searches", False))
        self.dim = int(self._signature.structured_outputs[OUTPUT_KEY].shape[-1])

    kind = "saved_model"  # what the service logs

    def encode(
        self,
        rows: Sequence[Mapping[str, Sequence[str]]],
        example_age_days: float | np.floating | Sequence[float] | np.ndarray = features.SERVING_EXAMPLE_AGE,
    ) -> np.ndarray:
        """User vectors for `rows` (see `pad_histories`), as `float32 [len(rows), dim]`.

        `example_age_days` is one age for every row (serving: `features.SERVING_EXAMPLE_AGE`) or
        one per row (offline evaluation of historical examples).
        """
        if not rows:
            return np.zeros((0, self.dim), dtype=np.float32)
        ages = np.broadcast_to(np.asarray(example_age_days, dtype=np.float32), (len(rows),))
        return call_user_signature(self._signature, pad_histories(rows, self.history_length), ages)

    def article_vectors(self, raw: Mapping[str, np.ndarray]) -> np.ndarray:
        """`float32 [n, dim]`: the `article_vectors` signature over `raw`
        (trainer/towers/article_inputs.py `raw_article_features`).

        Raises:
          ValueError: the SavedModel has no article signature (cannot embed new listings).
        """
        from homefeed.layout.model_dir import ARTICLE_SIGNATURE
        from trainer.towers.article_inputs import call_article_signature

        if ARTICLE_SIGNATURE not in self._loaded.signatures:
            raise ValueError(f"{self.model_dir} has no '{ARTICLE_SIGNATURE}' signature: cannot embed new listings")
        return call_article_signature(self._loaded.signatures[ARTICLE_SIGNATURE], raw)


class NumpyUserEncoder(_Encoder):
    """`UserEncoder`'s interface over the NumPy twin of the towers (trainer/towers/numpy_towers.py): the
    same vectors (proven at export, trainer/training/numpy_export.py) without TensorFlow.

    Raises:
      numpy_towers.TwinFilesError: the model directory has no usable `numpy_towers/`.
    """

    kind = "numpy"

    def __init__(self, model_dir: str | Path, history_length: int = features.HISTORY_LENGTH):
        from trainer.towers.numpy_towers import NumpyTowers

        self.model_dir = Path(model_dir)
        self.towers = NumpyTowers(self.model_dir)
        self.history_length = history_length
        self.dim = self.towers.dim
        self.uses_searches = bool(_manifest_value(self.model_dir, "uses_searches", False))

    def encode(
        self,
        rows: Sequence[Mapping[str, Sequence[str]]],
        example_age_days: float | np.floating | Sequence[float] | np.ndarray = features.SERVING_EXAMPLE_AGE,
    ) -> np.ndarray:
        """As `UserEncoder.encode`."""
        if not rows:
            return np.zeros((0, self.dim), dtype=np.float32)
        ages = np.broadcast_to(np.asarray(example_age_days, dtype=np.float32), (len(rows),))
        return self.towers.user_vectors(pad_histories(rows, self.history_length), ages)

    def article_vectors(self, raw: Mapping[str, np.ndarray]) -> np.ndarray:
        """As `UserEncoder.article_vectors`."""
        return self.towers.article_vectors(raw)


ENCODERS = ("auto", "numpy", "saved_model")


def load_user_encoder(
    model_dir: str | Path, history_length: int = features.HISTORY_LENGTH, encoder: str = "auto"
) -> UserEncoder | NumpyUserEncoder:
    """The encoder for a model directory: the NumPy twin when its manifest lists one (`auto`,
    `numpy`), else the SavedModel (`auto`, `saved_model`). The caller checks file hashes first
    (serving/versions/integrity.py), so a twin whose files changed never loads.

    Raises:
      ValueError: `encoder` is unknown, or `numpy` for a directory without a usable twin
        (`auto` falls back to the SavedModel with a warning when the twin cannot be read).
    """
    from trainer.towers.numpy_towers import has_twin

    if encoder not in ENCODERS:
        raise ValueError(f"encoder must be one of {ENCODERS}, got {encoder!r}")
    twin = has_twin({"files": _manifest_value(Path(model_dir), "files", None) or {}})
    if encoder == "numpy" and not twin:
        raise ValueError(f"{model_dir} has no NumPy towers (exported before they existed, or their proof failed)")
    if twin and encoder != "saved_model":
        from trainer.towers.numpy_towers import TwinFilesError

        try:
            return NumpyUserEncoder(model_dir, history_length)
        except TwinFilesError as error:
            if encoder == "numpy":
                raise
            LOG.warning("%s; using the SavedModel", error)  # e.g. a twin format this version cannot read
    return UserEncoder(model_dir, history_length)
