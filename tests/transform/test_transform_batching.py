"""components.transform.batching (full batches per split) and the once-per-distinct-value text
normalisation of titles and queries, each against a plain per-row reference."""

from __future__ import annotations

import random

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from components.transform import batching, content, records
from homefeed import features, tokens

TEXTS = ["Ｆｕｌｌ Width", "ﬁne print", "  ", "", "Hello World", "ÅNGSTRÖM", "a\u0301b", None, "\t\n", "İstanbul"]


def _batches(sizes: list[int]) -> list[pa.RecordBatch]:
    out, start = [], 0
    for n in sizes:
        out.append(
            pa.RecordBatch.from_arrays(
                [pa.array(range(start, start + n), pa.int64()), pa.array([[str(i)] for i in range(start, start + n)])],
                ["row", "values"],
            )
        )
        start += n
    return out


@pytest.mark.parametrize(
    "sizes,size", [([3, 0, 4, 7, 1, 10], 5), ([200] * 7, 4096), ([4096, 1], 4096), ([9], 2), ([], 3)]
)
def test_batches_are_full_in_order_and_only_the_last_is_short(sizes, size):
    batcher = batching.SplitBatcher(size)
    parts = _batches(sizes)
    out = [b for part in parts for b in batcher.add(part)] + list(batcher.flush())
    total = sum(sizes)
    assert [b.num_rows for b in out] == [size] * (total // size) + ([total % size] if total % size else [])
    assert all(b.schema == parts[0].schema for b in out)
    assert [v for b in out for v in b.column("row").to_pylist()] == list(range(total))
    assert [v for b in out for v in b.column("values").to_pylist()] == [[str(i)] for i in range(total)]
    assert list(batcher.flush()) == []


def test_batch_size_must_be_positive():
    with pytest.raises(ValueError, match="batch size"):
        batching.SplitBatcher(0)


def _reference_titles(values: list[str | None]) -> list[list[str]]:
    return [[] if t is None or not t.strip() else [tokens.normalise(t)] for t in values]


@pytest.mark.parametrize("seed", range(5))
def test_titles_and_queries_normalise_like_one_call_per_row(seed):
    rng = random.Random(seed)
    n = rng.randint(1, 40)
    titles = [rng.choice(TEXTS) for _ in range(n)]
    start = rng.randint(0, n - 1)  # sliced batches, as validate sees them
    batch = pa.RecordBatch.from_arrays([pa.array(titles, pa.string())], [features.LABEL_TITLE]).slice(start)
    assert content.columns(batch)[features.LABEL_TITLE].to_pylist() == _reference_titles(titles[start:])

    queries = [[rng.choice(TEXTS) for _ in range(rng.randint(0, 4))] for _ in range(n)]
    column = pa.array(queries, pa.list_(pa.string())).slice(start)
    expected = [[None if q is None else tokens.normalise(q) for q in row] for row in queries[start:]]
    normalised = records._normalised(column)
    assert normalised.type == pa.list_(pa.string()) and normalised.to_pylist() == expected


def test_null_query_lists_stay_null_and_other_title_types_are_text():
    column = pc.drop_null(pa.array([["A"], None, ["ＢＣ", None]], pa.list_(pa.string())))  # no nulls, offsets kept
    assert records._normalised(column).to_pylist() == [["a"], ["bc", None]]
    with_null = pa.array([["A"], None, ["ＢＣ"]], pa.list_(pa.string()))
    assert records._normalised(with_null).to_pylist() == [["a"], None, ["bc"]]
    for array in (pa.array(["A", None, " "]).dictionary_encode(), pa.array(["A", None, " "], pa.large_string())):
        batch = pa.RecordBatch.from_arrays([array], [features.LABEL_TITLE])
        assert content.columns(batch)[features.LABEL_TITLE].to_pylist() == [["a"], [], []]
    numbers = pa.RecordBatch.from_arrays([pa.array([1, None])], [features.LABEL_TITLE])
    assert content.columns(numbers)[features.LABEL_TITLE].to_pylist() == [["1"], []]
    empty = pa.RecordBatch.from_arrays([pa.array([], pa.string())], [features.LABEL_TITLE])
    assert content.columns(empty)[features.LABEL_TITLE].to_pylist() == []
