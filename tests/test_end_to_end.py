"""The whole system, locally, as a user runs it: `candidates pipeline run-local`, then the service.

Generated data (small: a few hundred users, a corpus several times larger than 200) goes through
the Kubeflow pipeline on kfp.local (embedded BigQuery emulator, Beam DirectRunner, TF training,
FAISS index, gated publish). Then:
  * recall@200 on the held-out last views is well above the popularity baseline, computed here
    independently from the extract's training examples;
  * the HTTP service answers a user exactly as the exported model + index do offline for the same
    history, and gives an unknown user the popular fallback (not an error);
  * LATEST names the published version;
  * a second run with a deliberately bad model (learning rate near zero) is not published: LATEST
    and the live version stay as they were.

Run it alone with `pytest tests/test_end_to_end.py` (or `-m e2e`); it takes a few minutes.
"""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from homefeed import features
from homefeed.layout import extract_dir as extract_layout
from homefeed.sample.marketplace import SampleDataConfig, write_sample_data
from tests.support.commands import candidates_command
from tests.support.service import Service

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1200)]

DATA = SampleDataConfig(users=400, articles=1200, days=14, seed=11)
# Few epochs on little data: the point is the wiring, and still a model clearly above popularity.
PARAMS = {"epochs": "6", "batch_size": "256", "embedding_dim": "32", "output_dim": "32"}
BAD_PARAMS = {**PARAMS, "epochs": "1", "learning_rate": "1e-7"}
K = 200


def _params(values: dict[str, str]) -> list[str]:
    return [arg for name, value in values.items() for arg in ("--param", f"{name}={value}")]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    return write_sample_data(tmp_path_factory.mktemp("data"), DATA)


@pytest.fixture(scope="module")
def first_run(data, tmp_path_factory) -> dict:
    """`candidates pipeline run-local` through the real CLI entry point; what it left behind."""
    workdir = tmp_path_factory.mktemp("published")
    argv = [
        "pipeline",
        "run-local",
        "--events",
        data["events_path"],
        "--articles",
        data["articles_path"],
        "--workdir",
        str(workdir),
        *_params(PARAMS),
    ]
    out_path = workdir.parent / "run-local.out"
    with open(out_path, "w") as out:
        process = subprocess.run(candidates_command(*argv), stdout=out, stderr=subprocess.STDOUT, timeout=900)
    output = out_path.read_text()
    assert process.returncode == 0, output[-5000:]
    version = (workdir / "LATEST").read_text().strip()
    runs = sorted((workdir / "pipeline_runs").iterdir())
    return {"workdir": workdir, "output": output, "version": version, "run_dir": runs[-1]}


def _examples(run_dir: Path):
    import pyarrow.parquet as pq

    return pq.read_table(run_dir / "extract" / "examples" / extract_layout.TRAINING_EXAMPLES_FILE).to_pylist()


def _with_seen_sets(rows: list[dict], test_rows: list[dict]) -> list[dict]:
    """`test_rows`, each with the seen set the evaluator and the service exclude: every article the
    user viewed before the view (the labels of the user's earlier rows and the history of the
    earliest one), not only the <= H views of the row's own history."""
    by_user: dict[str, list[dict]] = {}
    for r in rows:
        by_user.setdefault(r[features.USER_ID], []).append(r)
    out = []
    for row in test_rows:
        own = by_user[row[features.USER_ID]]
        earliest = min(own, key=lambda r: r[features.VIEWED_AT])
        seen = set(earliest[features.HISTORY]) | {
            r[features.LABEL] for r in own if r[features.VIEWED_AT] < row[features.VIEWED_AT]
        }
        out.append({**row, features.SEEN: sorted(seen)})
    return out


def _popularity_recall(rows: list[dict], corpus: list[str], k: int) -> float:
    """Recall@k of 'most viewed before the test views first', seen articles excluded."""
    counts = Counter(r[features.LABEL] for r in rows if r[features.SPLIT] != features.TEST_SPLIT)
    first_rows = {}
    for r in rows:  # each user's first view: the oldest history entry of their earliest row
        if (
            r[features.USER_ID] not in first_rows
            or r[features.VIEWED_AT] < first_rows[r[features.USER_ID]][features.VIEWED_AT]
        ):
            first_rows[r[features.USER_ID]] = r
    counts.update(r[features.HISTORY][-1] for r in first_rows.values())
    ranked = sorted(corpus, key=lambda a: (-counts.get(a, 0), a))
    hits = total = 0
    for row in _with_seen_sets(rows, [r for r in rows if r[features.SPLIT] == features.TEST_SPLIT]):
        seen = set(row[features.SEEN])
        top = [a for a in ranked if a not in seen][:k]
        hits += row[features.LABEL] in top
        total += 1
    return hits / total


def _offline_candidates(
    version_dir: Path, histories: list[dict], k: int, ages: list[float] | None = None, exact: bool = False
) -> list[list[tuple[str, float]]]:
    """The exported model + the published FAISS index, called directly (no serving code).

    `ages`: each row's example age (as in training); None: the serving age, as the service sends.
    `exact`: an exact inner-product search over the exported vectors instead (a model directory
    without an index: the held-out model).
    """
    import faiss

    from trainer.towers.serving_model import UserEncoder

    ids = (version_dir / "article_ids.txt").read_text().splitlines()
    if exact:
        vectors = np.load(version_dir / "article_vectors.npy").astype(np.float32)
        index = faiss.IndexFlatIP(vectors.shape[1])
        index.add(vectors)
    else:
        index = faiss.read_index(str(version_dir / "index" / "articles.faiss"))
    encoder = UserEncoder(version_dir)
    vectors = encoder.encode(histories) if ages is None else encoder.encode(histories, np.asarray(ages, np.float32))
    answers = []
    for vector, history in zip(vectors, histories):
        seen = set(history[features.HISTORY]) | set(history.get(features.SEEN) or ())  # the snapshot's seen set
        scores, rows = index.search(vector[None, :].astype(np.float32), k + len(seen))
        kept = [(ids[r], float(s)) for s, r in zip(scores[0], rows[0]) if r >= 0 and ids[r] not in seen]
        answers.append(kept[:k])
    return answers


def _get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


@pytest.fixture(scope="module")
def service(first_run):
    """`candidates serve` on the publish root, watching it (as users run it): a version published
    by mistake later in this module would be picked up and caught."""
    service = Service(first_run["workdir"], first_run["workdir"].parent / "service.log", "--host", "127.0.0.1")
    try:
        service.wait_ready(timeout_s=180)
        yield service.url
    finally:
        service.stop()


def test_run_local_publishes_and_says_where_everything_is(first_run):
    workdir, output, version = first_run["workdir"], first_run["output"], first_run["version"]
    live = workdir / "versions" / version
    assert (live / "manifest.json").is_file() and (live / "index" / "index_manifest.json").is_file()
    assert (live / extract_layout.USER_HISTORIES_FILE).is_file()
    assert json.loads((live / "manifest.json").read_text())["model_version"] == version
    for expected in (
        "model:",
        "index:",
        "metrics:",
        f"published:   version {version}",
        f"candidates serve --model {workdir}",
    ):
        assert expected in output, expected
    for stage in ("extract", "transform", "train", "evaluate", "transform-2", "train-final", "build-index", "publish"):
        assert (first_run["run_dir"] / stage / "executor_output.json").is_file(), stage


def test_recall_at_200_is_well_above_popularity(first_run):
    live = first_run["workdir"] / "versions" / first_run["version"]
    rows = _examples(first_run["run_dir"])
    corpus = (live / "article_ids.txt").read_text().splitlines()
    assert len(corpus) >= 3 * K, "the corpus must be much larger than K for recall@K to mean anything"
    popularity = _popularity_recall(rows, corpus, K)

    evaluation = json.loads((live / "evaluation.json").read_text())
    reported = evaluation.get("recall@200", (evaluation.get("metrics") or {}).get("recall@200"))
    eval_rows = _with_seen_sets(rows, [r for r in rows if r[features.SPLIT] == features.TEST_SPLIT])

    def recall(answers) -> float:
        return float(np.mean([r[features.LABEL] in {a for a, _ in answer} for r, answer in zip(eval_rows, answers)]))

    # The figures are the held-out model's (trained on the train split); the published model is
    # trained on every view up to as_of, these test views included, and evaluation.json says so.
    held_out = first_run["run_dir"] / "train" / "model"
    figures_of = evaluation["figures_of"]
    assert evaluation["model_version"] == figures_of["model_version"] != first_run["version"]
    assert figures_of["held_out"] is True and figures_of["published_model_version"] == first_run["version"]
    assert figures_of["published_model_fit"]["splits"] == ["train", "validation", "test"]
    assert json.loads((held_out / "manifest.json").read_text())["model_version"] == figures_of["model_version"]

    # As the service would answer now (age 0) with the held-out model: what the evaluator (and so
    # the publish gate) reports over the as_of corpus, each view without what the user saw before it.
    served = recall(_offline_candidates(held_out, eval_rows, K, exact=True))
    # The published model has trained on these views: its recall on them is no held-out figure.
    published = recall(_offline_candidates(live, eval_rows, K))
    assert published >= served - 0.02, (published, served)

    # Replaying past views against the as_of index is the evaluator's `as_of_corpus` figure; the
    # gate's ranks each view over the corpus live at its time (trainer/evaluation/served_corpus.py).
    replayed = evaluation["as_of_corpus"]
    assert served == pytest.approx(replayed["model"]["recall@200"], abs=0.02), (served, replayed)
    assert replayed["popularity"]["recall@200"] == pytest.approx(popularity, abs=0.02)
    assert reported >= popularity + 0.15, f"model recall@200 {reported:.3f} vs popularity {popularity:.3f}"
    assert served >= popularity + 0.15, f"served recall@200 {served:.3f} vs popularity {popularity:.3f}"


def test_service_answers_as_the_exported_model_and_index_do(first_run, service):
    import pyarrow.parquet as pq

    live = first_run["workdir"] / "versions" / first_run["version"]
    histories = pq.read_table(live / extract_layout.USER_HISTORIES_FILE).to_pylist()[:5]
    offline = _offline_candidates(live, histories, 50)
    for row, expected in zip(histories, offline):
        status, answer = _get(f"{service}/v1/users/{row['user_id']}/candidates?k=50")
        assert status == 200, answer
        assert answer["model_version"] == first_run["version"] and answer["fallback"] is False
        assert [c["article_id"] for c in answer["candidates"]] == [a for a, _ in expected]
        np.testing.assert_allclose(
            [c["score"] for c in answer["candidates"]], [s for _, s in expected], rtol=1e-4, atol=1e-5
        )
        assert not set(row[features.SEEN]) & {c["article_id"] for c in answer["candidates"]}  # every earlier view

    status, answer = _get(f"{service}/v1/users/someone-new-42/candidates?k=20")
    assert status == 200 and answer["fallback"] is True and answer["fallback_reason"] == "unknown_user"
    assert len(answer["candidates"]) == 20


def test_a_worse_model_is_not_published(first_run, data, service):
    from pipeline.run_local import run_local

    workdir, version = first_run["workdir"], first_run["version"]
    result = run_local(
        data["events_path"], data["articles_path"], workdir, {k: _typed(v) for k, v in BAD_PARAMS.items()}
    )

    assert not result.published
    assert any(
        why in result.reason
        for why in ("worse than the published", "below the floor", "does not beat the best baseline")
    ), result.reason
    assert result.recall_at_200 < json.loads((workdir / "versions" / version / "evaluation.json").read_text()).get(
        "recall@200", 1.0
    )
    assert (workdir / "LATEST").read_text().strip() == version
    assert sorted(p.name for p in (workdir / "versions").iterdir()) == [version]
    # The run itself is green and says why in its metrics.
    decision = json.loads((result.run_dir / "publish" / "executor_output.json").read_text())
    assert decision["parameterValues"]["published"] is False
    # The live service still answers with the first model.
    status, answer = _get(f"{service}/v1/users/{_any_user(workdir / 'versions' / version)}/candidates?k=5")
    assert status == 200 and answer["model_version"] == version


def _typed(value: str):
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


def _any_user(version_dir: Path) -> str:
    import pyarrow.parquet as pq

    return pq.read_table(version_dir / extract_layout.USER_HISTORIES_FILE, columns=["user_id"]).column(0)[0].as_py()
