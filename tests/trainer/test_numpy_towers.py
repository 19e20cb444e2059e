"""The NumPy towers against the SavedModel they twin (the independent reference): the skew test.

Models: untrained towers of each pooling over a real transform output with searches (random
weights are no kinder than trained ones; exporting them takes seconds), and the session's trained
model (conftest.py) for the service. Every comparison calls the reloaded SavedModel signature on
the same raw inputs.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from trainer_testdata import H, corpus_frame, created_at, example_rows, user_views

from homefeed import features
from homefeed.layout import extract_dir as extract_layout
from homefeed.layout import model_dir as layout

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(900),
]  # the first test to ask builds conftest.py's session stages (Beam transform, training)

QUERIES = ["유모차 Baby", "Baby-Stroller!", "ＡＢＣ lamp", "café crème", "Ёлка, ёлка", "road bike", "oak desk"]
HOSTILE_ROWS = [
    {features.HISTORY: ["a003", "a002", "a001"], features.RECENT_QUERIES: ["road bike"]},
    {features.HISTORY: ["never-seen-id", "유모차", "a010"]},  # unknown ids
    {},  # no history, no searches
    {features.RECENT_QUERIES: ["유모차 Baby", "ＡＢＣ lamp", "Ёлка!!", "never heard words"]},  # searches only
    {features.HISTORY: [f"a{i:03d}" for i in range(3 * H)]},  # longer than H
    {features.HISTORY: ["a001", "a002"], features.history_attribute("category"): ["c0", "c0"]},  # region missing
    {features.HISTORY: ["a001", "a002"], features.history_attribute("region"): ["r1"]},  # category missing, short
    {features.HISTORY: ["a004"], features.RECENT_QUERIES: ["x" * 600, "   ", "😀 emoji", *QUERIES * 4]},
]


def _extract_with_searches(path: Path) -> Path:
    """trainer_testdata's examples, with recent queries for two users in three."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from trainer_testdata import EXAMPLES_SCHEMA

    rows = example_rows(user_views(60, seed=11))
    for i, row in enumerate(rows):
        row[features.RECENT_QUERIES] = [] if i % 3 == 0 else [QUERIES[(i + k) % len(QUERIES)] for k in range(1 + i % 3)]
    path.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=EXAMPLES_SCHEMA), path / extract_layout.TRAINING_EXAMPLES_FILE)
    corpus_frame().to_parquet(path / extract_layout.CORPUS_FILE, index=False)
    (path / extract_layout.SUCCESS_MARKER).write_text("")
    return path


@pytest.fixture(scope="module")
def search_transform(tmp_path_factory) -> Path:
    from components.transform.job import run_transform
    from homefeed.config import TransformConfig

    root = tmp_path_factory.mktemp("numpy_towers")
    out = root / "transform"
    run_transform(str(_extract_with_searches(root / "extract")), str(out), TransformConfig(history_length=H))
    return out


def export_untrained(transform_dir: Path, root: Path, version: str, **config) -> Path:
    """Exports freshly initialised towers through the trainer's own export (no training)."""
    import keras

    from homefeed.config import TrainConfig
    from trainer.model import two_tower as model_lib
    from trainer.training import data as data_lib
    from trainer.training import export as export_lib

    data = data_lib.TransformedData.open(transform_dir)
    train_config = TrainConfig(embedding_dim=16, attribute_embedding_dim=8, tower_units=(32,), output_dim=16, **config)
    keras.utils.set_random_seed(train_config.seed)
    model = model_lib.TwoTowerModel(data.vocab, data.history_length, train_config)
    model.build_all()
    corpus = data.read_corpus()
    artifacts = export_lib.ModelArtifacts(
        corpus=corpus,
        label_counts={},
        train_config=train_config,
        metrics={},
        vocab_hash="0" * 64,
        num_train_examples=0,
        as_of_ms=data.as_of_ms(corpus),
        extra_config={
            "transform": data.summary.get("config", {}),
            "history_length": data.history_length,
            "attributes": list(data.attributes),
            "num_oov_buckets": data.num_oov_buckets,
        },
    )
    module = export_lib.ServingModule(model, data.tft_output.transform_features_layer(), data.attributes)
    return export_lib.write_model_dir(module, artifacts, root, version)[0]


def _raw_articles(now_ms: float) -> dict[str, np.ndarray]:
    from trainer.towers import article_inputs

    ids = ["a000", "a017", "a059", "a999", "never-seen", ""]
    return article_inputs.raw_article_features(
        ids,
        {"category": ["c0", "c1", None, "c0", "zz", None], "region": ["r0", None, "r1", "r0", "r1", None]},
        ["Brand new Oak Desk no. 000", "유모차 Baby-Stroller", None, "", "ＡＢＣ lamp " * 40, "😀"],
        [created_at("a000"), created_at("a017"), None, created_at("a999"), "2026-04-01T00:00:00Z", None],
        created_at("a999").value / 1e6,
    )


def assert_twin_equals_saved_model(model_dir: Path) -> None:
    import tensorflow as tf

    from trainer.towers.article_inputs import call_article_signature
    from trainer.towers.serving_model import NumpyUserEncoder, UserEncoder

    reference, twin = UserEncoder(model_dir, history_length=H), NumpyUserEncoder(model_dir, history_length=H)
    ages = np.array([0.0, 3.5, 400.0, 0.0, 12.0, 1.0, 2.0, 90.0], np.float32)
    for example_age in (features.SERVING_EXAMPLE_AGE, ages):
        np.testing.assert_allclose(
            twin.encode(HOSTILE_ROWS, example_age), reference.encode(HOSTILE_ROWS, example_age), atol=1e-5, rtol=0
        )
    for row in HOSTILE_ROWS:  # one at a time too, as the service calls it
        np.testing.assert_allclose(twin.encode([row]), reference.encode([row]), atol=1e-5, rtol=0)
    loaded = tf.saved_model.load(str(model_dir / layout.SAVED_MODEL_DIR))
    raw = _raw_articles(layout.load_manifest(model_dir)["article_ages_at_ms"])
    expected = call_article_signature(loaded.signatures[layout.ARTICLE_SIGNATURE], raw)
    np.testing.assert_allclose(twin.article_vectors(raw), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "pooling",
    [
        dict(user_pooling="attention", attention_blocks=2, attention_window=6, share_embeddings=False),
        dict(user_pooling="gru", article_units=24, recent_items=0),
        dict(user_pooling="mean", l2_normalize=False, dropout=0.0),
    ],
    ids=["attention-2-blocks", "gru", "mean"],
)
def test_twin_equals_the_saved_model_for_each_pooling(search_transform, tmp_path, pooling):
    model_dir = export_untrained(search_transform, tmp_path, "m", **pooling)
    manifest = layout.load_manifest(model_dir, verify_hashes=True)
    proof = manifest["numpy_towers"]
    assert proof["max_abs_diff_user"] <= proof["tolerance"] == 1e-4 and proof["max_abs_diff_article"] <= 1e-4
    assert f"{layout.NUMPY_TOWERS_DIR}/{layout.NUMPY_TOWERS_SPEC_FILE}" in manifest["files"]
    assert manifest["uses_searches"] is True
    assert_twin_equals_saved_model(model_dir)
    # The searches do reach the twin's vector (a twin ignoring them would pass nothing above by luck).
    from trainer.towers.serving_model import NumpyUserEncoder

    twin = NumpyUserEncoder(model_dir, history_length=H)
    plain, searched = twin.encode(
        [{features.HISTORY: ["a001"]}, {features.HISTORY: ["a001"], features.RECENT_QUERIES: ["road bike"]}]
    )
    assert np.abs(plain - searched).max() > 1e-3


def test_export_refuses_a_twin_that_differs(search_transform, tmp_path, monkeypatch):
    from trainer.towers import numpy_towers
    from trainer.towers.serving_model import load_user_encoder

    honest = numpy_towers.NumpyTowers.user_vectors
    monkeypatch.setattr(numpy_towers.NumpyTowers, "user_vectors", lambda self, *a: honest(self, *a) + 1e-3)
    model_dir = export_untrained(search_transform, tmp_path, "skewed")
    manifest = layout.load_manifest(model_dir, verify_hashes=True)
    assert manifest["numpy_towers"] is None
    assert not (model_dir / layout.NUMPY_TOWERS_DIR).exists()
    assert not any(name.startswith(layout.NUMPY_TOWERS_DIR) for name in manifest["files"])
    encoder = load_user_encoder(model_dir, history_length=H)
    assert encoder.kind == "saved_model" and encoder.encode([{features.HISTORY: ["a001"]}]).shape == (1, 16)
    with pytest.raises(ValueError, match="no NumPy towers"):
        load_user_encoder(model_dir, encoder="numpy")


# -- the service, on the trained model ------------------------------------------------------------
@pytest.fixture(scope="module")
def served(trained, tmp_path_factory) -> tuple[Path, Path]:
    """A copy of the trained model with its index, and a histories snapshot with searches."""
    from components.build_index.build import build_model_index
    from homefeed.config import IndexConfig

    root = tmp_path_factory.mktemp("served")
    model_dir = root / "m1"
    shutil.copytree(trained.result.model_dir, model_dir)
    build_model_index(model_dir, IndexConfig())
    histories = list(HOSTILE_ROWS)
    frame = pd.DataFrame(
        {
            features.USER_ID: [f"u{i}" for i in range(len(histories))],
            **{c: [row.get(c, []) for row in histories] for c in (*features.HISTORY_COLUMNS, features.RECENT_QUERIES)},
        }
    )
    frame[features.history_attribute("category")] = [
        (row.get(features.history_attribute("category")) or ["c0"] * len(row.get(features.HISTORY, [])))
        for row in histories
    ]
    frame[features.history_attribute("region")] = [
        (row.get(features.history_attribute("region")) or ["r0"] * len(row.get(features.HISTORY, [])))
        for row in histories
    ]
    frame.to_parquet(root / extract_layout.USER_HISTORIES_FILE, index=False)
    return model_dir, root / extract_layout.USER_HISTORIES_FILE


def test_trained_model_twin_and_the_service_answering_identically_with_either(served):
    from fastapi.testclient import TestClient

    from serving.http.app import create_app
    from serving.http.settings import ServiceSettings, get_settings

    model_dir, histories = served
    assert_twin_equals_saved_model(model_dir)
    answers, live_answers = {}, {}
    for encoder in ("numpy", "saved_model"):
        app = create_app()
        app.dependency_overrides[get_settings] = lambda encoder=encoder: ServiceSettings(
            model=model_dir, histories=histories, encoder=encoder, history_length=H
        )
        with TestClient(app) as client:
            assert client.get("/readyz").json()["encoder"] == encoder
            answers[encoder] = [
                client.get(f"/v1/users/u{i}/candidates", params={"k": 20}).json() for i in range(len(HOSTILE_ROWS))
            ]
            # A new listing: embedded on the event loop by the twin, in a thread by the SavedModel
            # (routes_live._store_async); served by the next request either way, with equal vectors.
            pair = app.state.holder.pair
            assert app.state.live.corpus.writes_inline(pair) == (encoder == "numpy")
            put = client.put("/v1/articles/live-new", json={"title": "red bike", "category": "c0", "region": "r-live"})
            assert put.status_code == 200 and put.json()["result"] == "created", put.text
            live_answers[encoder] = client.get("/v1/users/u0/candidates", params={"k": 5, "region": "r-live"}).json()
    for encoder, body in live_answers.items():
        assert [c["article_id"] for c in body["candidates"]] == ["live-new"] and not body.get("fallback"), (
            encoder,
            body,
        )
    assert live_answers["numpy"]["candidates"][0]["score"] == pytest.approx(
        live_answers["saved_model"]["candidates"][0]["score"], abs=1e-5
    )
    for numpy_body, reference_body in zip(answers["numpy"], answers["saved_model"]):
        assert [c["article_id"] for c in numpy_body["candidates"]] == [
            c["article_id"] for c in reference_body["candidates"]
        ]
        assert [c["score"] for c in numpy_body["candidates"]] == pytest.approx(
            [c["score"] for c in reference_body["candidates"]], abs=1e-5
        )


def test_a_changed_twin_file_is_refused_by_its_hash(served, tmp_path):
    from serving.versions.integrity import IntegrityError
    from serving.versions.pair import load_model_pair

    model_dir = tmp_path / "m1"
    shutil.copytree(served[0], model_dir)
    spec = json.loads((model_dir / layout.NUMPY_TOWERS_DIR / layout.NUMPY_TOWERS_SPEC_FILE).read_text())
    weights = model_dir / layout.NUMPY_TOWERS_DIR / spec["arrays"]["user/output/kernel"]
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x40  # one bit of one weight
    weights.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="user.output.kernel.npy does not match its sha256"):
        load_model_pair(model_dir, history_length=H)


PROBE = """
import json, sys
from serving.live.articles import ArticleRecord
from serving.live.model import embed_articles
from serving.versions.pair import load_model_pair
pair = load_model_pair(sys.argv[1], history_length=int(sys.argv[2]))
vectors = pair.encoder.encode([{"history": ["a001", "a002"], "recent_queries": ["road bike"]}])
listing = embed_articles(pair, [ArticleRecord("new-1", title="Brand new Road Bike", category="c1")])
print(json.dumps({"kind": pair.encoder.kind, "tensorflow": "tensorflow" in sys.modules, "shapes": [vectors.shape, listing.shape]}))
"""


def test_a_process_serving_the_twin_never_imports_tensorflow(served):
    process = subprocess.run(
        [sys.executable, "-c", PROBE, str(served[0]), str(H)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert process.returncode == 0, process.stderr[-3000:]
    result = json.loads(process.stdout.strip().splitlines()[-1])
    assert result == {"kind": "numpy", "tensorflow": False, "shapes": [[1, 16], [1, 16]]}
