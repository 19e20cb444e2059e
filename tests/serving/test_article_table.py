"""serving/versions/article_table.py: ids, the id -> row lookup, titles and coded attributes against plain
Python lists and dicts (the structures they replace)."""

from __future__ import annotations

import random

import numpy as np
import pytest

from serving.versions.article_table import (
    MAX_KEY_CHARS,
    ArticleIds,
    CodedColumn,
    StringColumn,
    coded_arrays,
    string_arrays,
)


def random_ids(n: int, seed: int, long: bool = False) -> list[str]:
    """Distinct ids of any script and length: ascii, accents, CJK, emoji, prefixes of each other,
    a NUL inside or at the end; with `long`, some longer than the fixed-width keys."""
    rng = random.Random(seed)
    alphabet = "abcxyz019-_ éüßøЖж中文字🙂\u2028\x00"
    ids = {"a", "ab", "abc", "a\x00", "é", "中", "🙂", "x" * MAX_KEY_CHARS}
    while len(ids) < n:
        length = rng.choice([1, 2, 5, 8, 17, 40] + ([MAX_KEY_CHARS + 1, 300] if long else []))
        ids.add("".join(rng.choice(alphabet) for _ in range(length)))
    if long:
        ids.update({"p" * 200 + "1", "p" * 200 + "2", "p" * 200, "p" * 201})  # one long shared prefix
    else:
        ids = {a for a in ids if not a.endswith("\x00")}
    out = sorted(ids)
    rng.shuffle(out)
    return out


@pytest.mark.parametrize("long", [False, True], ids=["fixed-width", "long-ids"])
def test_lookup_equals_a_dict(long):
    ids = random_ids(3000, seed=1, long=long)
    table = ArticleIds.from_values(ids)
    assert table._exact is (not long)
    reference = {a: row for row, a in enumerate(ids)}
    rng = random.Random(2)
    absent = [
        "",
        "zzzz",
        "a\x00\x00",
        "ab\x00",
        "p" * 199,
        "p" * 202,
        ids[5] + "x",
        ids[7][:-1],
        "x" * (MAX_KEY_CHARS + 1),
    ]
    queries = rng.sample(ids, 500) + absent + [rng.choice(ids) + rng.choice("a中🙂") for _ in range(100)]
    expected = [reference.get(q, -1) for q in queries]
    assert table.rows(queries).tolist() == expected
    assert [table.row_of.get(q) for q in queries] == [reference.get(q) for q in queries]
    assert [q in table.row_of for q in queries] == [q in reference for q in queries]
    assert table.row_of[ids[11]] == 11
    with pytest.raises(KeyError):
        table.row_of["not-an-article"]
    assert table.rows([]).shape == (0,) and table.rows([None, 3]).tolist() == [-1, -1]


@pytest.mark.parametrize("long", [False, True], ids=["fixed-width", "long-ids"])
def test_ids_read_back_as_the_list(long):
    ids = random_ids(2000, seed=3, long=long)
    table = ArticleIds.from_values(ids)
    rows = np.random.default_rng(0).integers(0, len(ids), 300)
    assert table.take(rows) == [ids[r] for r in rows]
    assert table.take(rows.tolist()) == [ids[r] for r in rows]
    assert [table[r] for r in (0, 17, -1)] == [ids[0], ids[17], ids[-1]]
    assert table[:3] == ids[:3] and list(table) == ids and len(table) == len(ids)
    assert all(type(a) is str for a in table.take(rows[:5]))  # plain str: JSON writers take them as is
    with pytest.raises(IndexError):
        table[len(ids)]


def test_titles_round_trip_with_missing_ones():
    titles = [None, "Kids bike", "", "Sofa 🛋 ünïcödé", "x" * 5000, None, "line\nbreak", "中文标题"]
    column = StringColumn(string_arrays(titles))
    assert list(column) == titles and column.take([7, 0, 4, 4]) == [titles[7], None, titles[4], titles[4]]
    assert StringColumn.from_values(["a", "b"]).take([1, 0]) == ["b", "a"]


def test_duplicate_ids_are_found():
    ids = ["b", "a", "c", "a", "d", "c", "a"]
    assert ArticleIds.from_values(ids).duplicates() == [("a", [1, 3, 6]), ("c", [2, 5])]
    assert ArticleIds.from_values(["y" * 100 + "1", "y" * 100, "y" * 100 + "1"]).duplicates() == [
        ("y" * 100 + "1", [0, 2])
    ]
    assert ArticleIds.from_values(random_ids(500, seed=4, long=True)).duplicates() == []


def test_coded_attributes_equal_the_lists_they_replace():
    n = 10
    rows = np.array([3, 1, 3, -1, 7, 2])  # a row twice (the last value wins), one id not in the model
    values = ["north", "south", "east", "west", None, 5]
    column = CodedColumn(coded_arrays(n, rows, values, "__missing__"))
    expected = ["__missing__"] * n
    for row, value in zip(rows, values):
        if row >= 0 and value is not None:
            expected[row] = str(value)
    assert list(column) == expected and column.take([3, 2, 0]) == [expected[3], expected[2], expected[0]]
    assert column.names == sorted(set(expected)) and column.codes.dtype == np.int32
    assert list(CodedColumn(coded_arrays(3, np.zeros(0, np.int64), [], "m"))) == ["m", "m", "m"]
