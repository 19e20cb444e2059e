"""components.transform.job and `candidates transform`: outputs, summary, dead letters, failures."""

from __future__ import annotations

import collections
import glob
import gzip
import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest
from transform_testdata import (
    H,
    bad_rows,
    expected_article_vocabulary,
    good_rows,
    transform_parser,
    write_extract_dir,
)

from components.transform import cli as transform_cli
from components.transform import job
from homefeed import features, tokens
from homefeed.config import TransformConfig
from homefeed.layout import extract_dir as extract_layout
from homefeed.layout import transform_dir as transform_layout

pytestmark = pytest.mark.timeout(900)  # the first slow test to ask runs conftest.py's Beam transform


XF = features.transformed_name


def _read_examples(transform_dir, split: str) -> list[dict]:
    """The transformed tf.Examples of `split`, parsed with the exported feature spec, as dicts."""
    import tensorflow as tf
    import tensorflow_transform as tft

    spec = tft.TFTransformOutput(str(transform_dir)).transformed_feature_spec()
    files = sorted(glob.glob(str(transform_dir / split / "part-*.tfrecord.gz")))
    assert files, f"no {split} files"
    out = []
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP"):
        parsed = tf.io.parse_single_example(record, spec)
        row = {}
        for key, value in parsed.items():
            value = value.values if isinstance(value, tf.SparseTensor) else value
            value = value.numpy()
            row[key] = value.tolist() if hasattr(value, "tolist") else value
        out.append(row)
    return out


# ---------------------------------------------------------------------------------------------
# The shared run (one DirectRunner job for the whole session).
# ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_job_writes_the_transform_dir_layout(transform_run):
    out = transform_run.output_dir
    for name in ("transform_fn", "transformed_metadata", *features.SPLITS, "corpus", "dead_letter"):
        assert (out / name).is_dir(), name
    for split in features.SPLITS:
        assert glob.glob(str(out / split / "part-*.tfrecord.gz")), split
    # gzip-compressed, as the suffix says
    with gzip.open(glob.glob(str(out / "train" / "part-*"))[0]) as f:
        assert f.read(1)
    corpus = pq.read_table(out / "corpus" / extract_layout.CORPUS_FILE)
    assert corpus.equals(pq.read_table(transform_run.examples_dir / extract_layout.CORPUS_FILE))
    # staging is renamed away; no scratch left behind
    leftovers = [p for p in os.listdir(out.parent) if p.startswith(f".{out.name}.staging")]
    assert leftovers == []
    assert not (out / ".tft_tmp").exists() and not (out / "_counts.json").exists()


@pytest.mark.slow
def test_summary_counts_records_in_out_and_dead_letters(transform_run):
    summary = transform_run.summary
    good, bad = transform_run.good, transform_run.bad
    per_split = {s: sum(r[features.SPLIT] == s for r in good) for s in features.SPLITS}
    assert summary["status"] == "ok"
    assert summary["records_in"] == len(good) + len(bad)
    assert summary["records_out"] == summary["valid"] == per_split
    assert summary["dead_lettered"] == len(bad)
    assert summary["dead_lettered_by_reason"] == dict(collections.Counter(reason for reason, _ in bad))
    vocab = expected_article_vocabulary(good, H)
    assert summary["vocabulary_sizes"] == {
        features.ARTICLE_VOCAB: len(vocab),
        features.vocabulary_name("category"): 3,
        features.vocabulary_name("region"): 2,
        # Search tokens (homefeed.tokens, the plain-Python reference) seen twice or more in train.
        features.SEARCH_TOKEN_VOCAB: sum(
            n >= 2
            for n in collections.Counter(
                t
                for r in good
                if r[features.SPLIT] == features.TRAIN_SPLIT
                for t in tokens.query_tokens(r[features.RECENT_QUERIES])[: features.SEARCH_TOKENS_MAX]
            ).values()
        ),
    }
    assert summary["config"]["history_length"] == H
    assert summary["config"]["beam_args"] == ["--job_name", "transform-test"]
    assert summary["seconds"]["total"] > 0
    # the CLI prints the summary as one line
    counts = ", ".join(f"{summary['records_out'][s]} {s}" for s in features.SPLITS)
    assert f"transformed {summary['records_in']} examples -> {counts};" in transform_run.printed


@pytest.mark.slow
def test_dead_letters_hold_each_bad_record_with_its_reason(transform_run):
    lines = []
    for path in glob.glob(str(transform_run.output_dir / "dead_letter" / "*.jsonl")):
        lines += [json.loads(line) for line in open(path) if line.strip()]
    got = {letter["record"][features.USER_ID]: letter for letter in lines}
    assert len(lines) == len(transform_run.bad)
    for reason, row in transform_run.bad:
        letter = got[row[features.USER_ID]]
        assert letter["reason"] == reason
        assert letter["source"].endswith(extract_layout.TRAINING_EXAMPLES_FILE)
        assert letter["record"][features.HISTORY] == row[features.HISTORY]
    assert got["bad3"]["record"][features.EXAMPLE_AGE] == "nan"  # NaN kept readable in JSON


@pytest.mark.slow
def test_transformed_examples_match_an_independent_computation(transform_run):
    """Ids from the vocabulary files, truncation to H and the z-score, computed here with numpy."""
    import tensorflow_transform as tft

    output = tft.TFTransformOutput(str(transform_run.output_dir))
    vocab = {name: output.vocabulary_by_name(name) for name in transform_layout.VOCABULARIES}
    ids = {name: {v.decode(): i for i, v in enumerate(values)} for name, values in vocab.items()}
    assert set(ids[features.ARTICLE_VOCAB]) == set(expected_article_vocabulary(transform_run.good, H))

    OOV = "oov"  # unseen values hash into one of the OOV ids after the vocabulary

    def lookup(name, value):
        return ids[name].get(value, OOV)

    vocab_of = {
        **{XF(c): features.ARTICLE_VOCAB for c in (features.HISTORY, features.LABEL)},
        **{XF(features.history_attribute(a)): features.vocabulary_name(a) for a in features.ARTICLE_ATTRIBUTES},
        **{XF(features.label_attribute(a)): features.vocabulary_name(a) for a in features.ARTICLE_ATTRIBUTES},
    }
    oov_buckets = TransformConfig().num_oov_buckets

    def canonical(key, value):
        size = len(ids[vocab_of[key]])
        one = lambda i: i if i < size else (OOV if i < size + oov_buckets else f"bad id {i}")  # noqa: E731
        return [one(i) for i in value] if isinstance(value, list) else one(value)

    train_ages = np.array([r[features.EXAMPLE_AGE] for r in transform_run.good if r[features.SPLIT] == "train"])
    mean, std = train_ages.mean(), train_ages.std()
    for split in features.SPLITS:
        rows = [r for r in transform_run.good if r[features.SPLIT] == split]
        expected = {}
        for r in rows:
            age_xf = (r[features.EXAMPLE_AGE] - mean) / std
            expected[(r[features.USER_ID], round(age_xf, 4))] = {
                XF(features.HISTORY): [lookup(features.ARTICLE_VOCAB, a) for a in r[features.HISTORY][:H]],
                XF(features.LABEL): lookup(features.ARTICLE_VOCAB, r[features.LABEL]),
                **{
                    XF(features.history_attribute(a)): [
                        lookup(features.vocabulary_name(a), v) for v in r[features.history_attribute(a)][:H]
                    ]
                    for a in features.ARTICLE_ATTRIBUTES
                },
                **{
                    XF(features.label_attribute(a)): lookup(features.vocabulary_name(a), r[features.label_attribute(a)])
                    for a in features.ARTICLE_ATTRIBUTES
                },
            }
        got = {}
        for e in _read_examples(transform_run.output_dir, split):
            key = (e.pop(features.USER_ID).decode(), round(e.pop(XF(features.EXAMPLE_AGE)), 4))
            got[key] = e
        searched = {key: e.pop(XF(features.SEARCH_TOKENS)) for key, e in got.items()}
        last = {key: e.pop(XF(features.LAST_QUERY_TOKENS)) for key, e in got.items()}
        # These rows carry no label title or age (files from before they existed): no title
        # tokens, the unknown age bucket.
        assert all(e.pop(XF(features.TITLE_TOKENS)) == [] for e in got.values()), split
        assert all(e.pop(XF(features.AGE_BUCKET)) == 0 for e in got.values()), split
        got = {key: {k: canonical(k, v) for k, v in e.items()} for key, e in got.items()}
        assert got == expected, split
        # Search tokens: known ones by the vocabulary file, the rest in the OOV buckets after it.
        search_ids = ids[features.SEARCH_TOKEN_VOCAB]
        for r in rows:
            want = tokens.query_tokens(r[features.RECENT_QUERIES])[: features.SEARCH_TOKENS_MAX]
            have = searched[(r[features.USER_ID], round((r[features.EXAMPLE_AGE] - mean) / std, 4))]
            assert len(have) == len(want)
            for token, token_id in zip(want, have):
                assert token_id == search_ids[token] if token in search_ids else token_id >= len(search_ids)
            first = tokens.query_tokens(r[features.RECENT_QUERIES][:1])
            assert last[(r[features.USER_ID], round((r[features.EXAMPLE_AGE] - mean) / std, 4))] == have[: len(first)]
        assert any(searched.values())


@pytest.mark.slow
def test_refuses_to_replace_a_finished_output_without_overwrite(transform_run):
    with pytest.raises(ValueError, match="--overwrite"):
        job.run_transform(str(transform_run.examples_dir), str(transform_run.output_dir), TransformConfig())


def test_refuses_a_non_empty_directory_that_is_not_a_transform_output(tmp_path):
    extract = write_extract_dir(tmp_path / "extract", good_rows())
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("precious")
    for overwrite in (False, True):
        with pytest.raises(ValueError, match="not a transform output"):
            job.run_transform(str(extract), str(out), TransformConfig(), overwrite=overwrite)
    assert (out / "notes.txt").read_text() == "precious"


# ---------------------------------------------------------------------------------------------
# Failures with clear messages.
# ---------------------------------------------------------------------------------------------
def test_empty_input_fails_before_running_beam(tmp_path):
    extract = write_extract_dir(tmp_path / "extract", [])
    with pytest.raises(ValueError, match=r"holds no training examples \(0 rows"):
        job.run_transform(str(extract), str(tmp_path / "out"), TransformConfig())
    assert not (tmp_path / "out").exists()


def test_unfinished_extract_is_refused(tmp_path):
    extract = write_extract_dir(tmp_path / "extract", good_rows(), success=False)
    with pytest.raises(FileNotFoundError, match="_SUCCESS"):
        job.run_transform(str(extract), str(tmp_path / "out"), TransformConfig())


def test_missing_examples_or_corpus_is_refused(tmp_path):
    extract = write_extract_dir(tmp_path / "extract", good_rows())
    (extract / extract_layout.CORPUS_FILE).unlink()
    with pytest.raises(FileNotFoundError, match="corpus"):
        job.find_input_files(str(extract))
    (extract / extract_layout.TRAINING_EXAMPLES_FILE).unlink()
    with pytest.raises(FileNotFoundError, match="no training examples"):
        job.find_input_files(str(extract))


def test_wrong_column_types_name_the_file_and_column(tmp_path):
    import pyarrow as pa

    extract = write_extract_dir(tmp_path / "extract", good_rows())
    table = pq.read_table(extract / extract_layout.TRAINING_EXAMPLES_FILE)
    as_text = pa.array([",".join(h) for h in table.column(features.HISTORY).to_pylist()])
    table = table.set_column(table.schema.get_field_index(features.HISTORY), features.HISTORY, as_text)
    table = table.drop_columns([features.SPLIT])
    pq.write_table(table, extract / extract_layout.TRAINING_EXAMPLES_FILE)
    with pytest.raises(ValueError) as error:
        job.find_input_files(str(extract))
    message = str(error.value)
    assert extract_layout.TRAINING_EXAMPLES_FILE in message
    assert "column history has type string, expected list<string>" in message
    assert "missing column split" in message


def test_examples_may_be_a_directory_of_parquet_parts(tmp_path):
    extract = write_extract_dir(tmp_path / "extract", good_rows())
    table = pq.read_table(extract / extract_layout.TRAINING_EXAMPLES_FILE)
    (extract / extract_layout.TRAINING_EXAMPLES_FILE).unlink()
    parts = extract / extract_layout.TRAINING_EXAMPLES_FILE
    parts.mkdir()
    pq.write_table(table.slice(0, 10), parts / "part-0.parquet")
    pq.write_table(table.slice(10), parts / "part-1.parquet")
    found = job.find_input_files(str(extract))
    assert [os.path.basename(f.path) for f in found] == ["part-0.parquet", "part-1.parquet"]
    assert sum(f.num_rows for f in found) == table.num_rows


@pytest.mark.slow
def test_all_bad_records_fail_clearly_and_keep_the_dead_letters(tmp_path):
    rows = [row for _, row in bad_rows()]
    extract = write_extract_dir(tmp_path / "extract", rows)
    out = tmp_path / "out"
    with pytest.raises(job.NoValidRecordsError, match=f"all {len(rows)} records were malformed") as error:
        job.run_transform(str(extract), str(out), TransformConfig(history_length=H))
    assert "label is null: 1" in str(error.value)
    assert not (out / extract_layout.SUCCESS_MARKER).exists()
    summary = json.loads((out / transform_layout.SUMMARY_FILE).read_text())
    assert summary["status"] == "failed" and summary["dead_lettered"] == len(rows)
    letters = [json.loads(line) for p in glob.glob(str(out / "dead_letter" / "*.jsonl")) for line in open(p)]
    assert len(letters) == len(rows)


# ---------------------------------------------------------------------------------------------
# The CLI wrapper and pipeline options.
# ---------------------------------------------------------------------------------------------
def test_cli_passes_unknown_options_to_beam_and_rejects_typos():
    args = transform_parser().parse_args(
        ["transform", "--examples", "e", "--out", "o", "--project", "p", "--region=r", "--vocab-top-k", "500"]
    )
    assert args.beam_args == ["--project", "p", "--region=r"]
    assert args.vocab_top_k == 500
    transform_cli.check_beam_args(args.beam_args)
    with pytest.raises(ValueError, match="--histroy-length"):
        transform_cli.check_beam_args(["--histroy-length", "3"])


def test_pipeline_options_name_the_runner_and_pass_extras_through():
    config = TransformConfig(
        direct_running_mode="multi_threading",
        beam_args=["--temp_location=gs://bucket/tmp", "--experiments=use_runner_v2"],
    )
    options = job.pipeline_options(config).get_all_options()
    assert options["runner"] == "DirectRunner"
    assert options["direct_num_workers"] == 1 and options["direct_running_mode"] == "multi_threading"
    assert options["temp_location"] == "gs://bucket/tmp" and options["experiments"] == ["use_runner_v2"]
    dataflow = job.pipeline_options(TransformConfig(runner="DataflowRunner", beam_args=["--project=p"]))
    assert dataflow.get_all_options()["runner"] == "DataflowRunner"
    assert "direct_num_workers" not in dataflow.get_all_options(drop_default=True)


def test_config_rejects_settings_that_would_crash_later():
    with pytest.raises(ValueError, match="num_oov_buckets"):
        TransformConfig(num_oov_buckets=0)
    with pytest.raises(ValueError, match="history_length"):
        TransformConfig(history_length=0)
    with pytest.raises(ValueError, match="direct_running_mode"):
        TransformConfig(direct_running_mode="threads")


@pytest.mark.slow
def test_all_splits_analysis_gives_every_viewed_article_an_id_and_transforms_every_split(tmp_path):
    """analyze_splits="all" (the published model's transform): the vocabulary is counted over the
    views of every split, so the test split's unseen label and history get ids of their own."""
    import tensorflow_transform as tft
    from transform_testdata import UNSEEN_HISTORY, UNSEEN_LABEL

    good = good_rows()
    examples_dir = write_extract_dir(tmp_path / "extract", good)
    summary = job.run_transform(
        str(examples_dir), str(tmp_path / "all"), TransformConfig(history_length=H, batch_size=16, analyze_splits="all")
    )
    assert summary["analyzed_splits"] == "all"
    assert summary["records_out"] == {s: sum(r[features.SPLIT] == s for r in good) for s in features.SPLITS}
    vocabulary = {
        v.decode() for v in tft.TFTransformOutput(str(tmp_path / "all")).vocabulary_by_name(features.ARTICLE_VOCAB)
    }
    everything = collections.Counter()
    for split in features.SPLITS:
        everything.update(
            expected_article_vocabulary([{**r, features.SPLIT: "train"} for r in good if r[features.SPLIT] == split], H)
        )
    assert vocabulary == set(everything)
    assert {UNSEEN_LABEL, UNSEEN_HISTORY} <= vocabulary
    assert not {UNSEEN_LABEL, UNSEEN_HISTORY} & set(expected_article_vocabulary(good, H))  # train only: OOV
    # Every split's examples are written, their ids from the one vocabulary (none in the OOV range).
    for split in features.SPLITS:
        examples = _read_examples(tmp_path / "all", split)
        assert len(examples) == summary["records_out"][split]
        assert all(i < len(vocabulary) for e in examples for i in [e[XF(features.LABEL)], *e[XF(features.HISTORY)]])


def test_config_refuses_an_unknown_analysis():
    with pytest.raises(ValueError, match="analyze_splits must be one of"):
        TransformConfig(analyze_splits="validation")
