"""DirectRunner with several workers: no record is lost, and the transform's outputs do not change.

The smallest pipeline that lost records (components/transform/direct_runner.py) runs here with
the workaround; the transform job runs on the same data with 1 worker, 2 multi_processing
workers and 2 multi_threading workers, and every output is compared (outputs_digest.py).
"""

from __future__ import annotations

import pytest
from transform_testdata import bad_rows, good_rows, write_extract_dir

from homefeed import features
from homefeed.config import TransformConfig

PARALLEL = [(2, "multi_processing"), (2, "multi_threading")]


def _count_after_side_input_read(workers: int, mode: str, n: int, size: int) -> int:
    """The minimal pipeline: n elements of `size` bytes, counted, then read again by a step that
    takes that count as a side input (a PCollection read by two stages); returns what the second
    step saw."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.testing.util import assert_that, equal_to

    options = PipelineOptions(
        ["--runner=DirectRunner", f"--direct_num_workers={workers}", f"--direct_running_mode={mode}"]
    )
    with beam.Pipeline(options=options) as pipeline:
        elements = pipeline | beam.Create([0]) | beam.FlatMap(lambda _: (bytes(size) for _ in range(n)))
        total = elements | "Total" >> beam.combiners.Count.Globally()
        seen = (
            elements
            | "ReadAgain" >> beam.Map(lambda e, t: e, t=beam.pvalue.AsSingleton(total))
            | "Seen" >> beam.combiners.Count.Globally()
        )
        assert_that(seen, equal_to([n]))
    return n


@pytest.mark.slow
@pytest.mark.parametrize("workers,mode", PARALLEL)
def test_minimal_pipeline_keeps_every_element_with_size_based_flush(workers, mode):
    # 100 MB in 500 elements: enough for Beam's time-based flush to drop some without the workaround.
    from components.transform.direct_runner import size_based_data_flush

    with size_based_data_flush():
        assert _count_after_side_input_read(workers, mode, n=500, size=200_000) == 500


def test_size_based_flush_restores_beams_setting():
    from apache_beam.runners.portability.fn_api_runner import worker_handlers

    from components.transform.direct_runner import size_based_data_flush

    before = worker_handlers.DATA_BUFFER_TIME_LIMIT_MS
    with pytest.raises(KeyError), size_based_data_flush():
        assert worker_handlers.DATA_BUFFER_TIME_LIMIT_MS == 0
        raise KeyError("restored even when the pipeline fails")
    assert before == worker_handlers.DATA_BUFFER_TIME_LIMIT_MS


@pytest.mark.parametrize(
    "config,parallel",
    [
        (TransformConfig(), False),
        (TransformConfig(direct_num_workers=2, direct_running_mode="multi_processing"), True),
        (TransformConfig(direct_num_workers=1, direct_running_mode="multi_threading"), True),
        (TransformConfig(direct_num_workers=2), True),
        (TransformConfig(runner="DataflowRunner", direct_num_workers=2), False),
    ],
)
def test_workaround_applies_to_direct_runner_workers_only(config, parallel):
    from components.transform import direct_runner
    from components.transform.job import pipeline_options

    assert direct_runner.uses_parallel_direct_runner(pipeline_options(config)) is parallel


def _many_users_rows() -> list[dict]:
    """The hand-made rows repeated for 30 copies of the users (distinct ids), bad rows interleaved:
    ~1,500 rows, enough for many batches of 16 on every split."""
    rows = []
    for copy in range(30):
        for row in good_rows():
            rows.append({**row, features.USER_ID: f"{row[features.USER_ID]}c{copy}"})
    for i, (_, row) in enumerate(bad_rows()):
        rows.insert(97 * i + 5, row)
    return rows


@pytest.fixture(scope="module")
def equality_extract(tmp_path_factory: pytest.TempPathFactory):
    return write_extract_dir(tmp_path_factory.mktemp("parallel") / "extract", _many_users_rows())


def _digest_of_run(extract, out, **direct) -> dict:
    from components.transform.job import run_transform
    from components.transform.outputs_digest import transform_dir_digest

    run_transform(str(extract), str(out), TransformConfig(history_length=4, batch_size=16, **direct))
    return transform_dir_digest(str(out))


@pytest.fixture(scope="module")
def one_worker_digest(equality_extract, tmp_path_factory):
    return _digest_of_run(equality_extract, tmp_path_factory.mktemp("one") / "out")


@pytest.mark.slow
@pytest.mark.parametrize("workers,mode", PARALLEL)
def test_transform_outputs_are_identical_with_two_workers(equality_extract, one_worker_digest, tmp_path, workers, mode):
    digest = _digest_of_run(equality_extract, tmp_path / "out", direct_num_workers=workers, direct_running_mode=mode)
    one = one_worker_digest
    assert one["summary"]["records_out"] == one["summary"]["valid"] and one["dead_letters"]["count"] == len(bad_rows())
    assert {s: e["count"] for s, e in digest["examples"].items()} == one["summary"]["valid"]
    assert digest["summary"] == one["summary"]
    assert digest["dead_letters"] == one["dead_letters"]
    assert digest["vocabularies"] == one["vocabularies"] and one["vocabularies"]
    assert {s: (e["count"], e["sha256"]) for s, e in digest["examples"].items()} == {
        s: (e["count"], e["sha256"]) for s, e in one["examples"].items()
    }
    assert all(e["float_sums"] for e in one["examples"].values())
    from components.transform.outputs_digest import same_outputs

    assert same_outputs(digest, one) == []
