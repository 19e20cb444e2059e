"""serving/versions/shared_arrays.py and the model pair over it: built once, mapped by every process,
checked against its hashes, and answering exactly as the plain lists did."""

from __future__ import annotations

import gc
import json
import logging
import shutil
import threading

import numpy as np
import pandas as pd
import pytest

from serving.recommend.candidates import answer_json, recommend
from serving.versions import files as model_files
from serving.versions import process_memory
from serving.versions.pair import load_model_pair
from serving.versions.shared_arrays import ARRAYS_FILE, KEEP_ENTRIES, SharedArrays
from tests.support import model_factory


def counting_build(calls: list):
    def build():
        calls.append(1)
        return {"numbers": np.arange(1000, dtype=np.int64), "text": "héllo".encode()}

    return build


def test_built_once_then_mapped_by_every_reader(tmp_path):
    calls: list = []
    results: list = []
    threads = [
        threading.Thread(
            target=lambda: results.append(SharedArrays(tmp_path, "k1").get("numbers", counting_build(calls)))
        )
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and len(results) == 4  # one build under the lock; the others map it
    for arrays in results:
        assert isinstance(arrays["numbers"], np.memmap) and not arrays["numbers"].flags.writeable
        assert arrays["numbers"].tolist() == list(range(1000)) and arrays["text"][:] == "héllo".encode()
    assert SharedArrays(None, "k1").get("numbers", counting_build(calls))["text"] == "héllo".encode()  # in memory


def test_a_changed_file_is_never_used_but_rebuilt(tmp_path, caplog):
    calls: list = []
    SharedArrays(tmp_path, "k1").get("numbers", counting_build(calls))
    path = tmp_path / "k1" / "numbers" / "numbers.npy"
    data = bytearray(path.read_bytes())
    data[-8:] = (12345).to_bytes(8, "little")  # same size, other content
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.ERROR, logger="serving.versions.shared_arrays"):
        arrays = SharedArrays(tmp_path, "k1").get("numbers", counting_build(calls))
    assert len(calls) == 2 and arrays["numbers"].tolist() == list(range(1000))
    assert "numbers.npy does not match its size or sha256" in caplog.text
    (tmp_path / "k1" / "numbers" / ARRAYS_FILE).write_text("{not json")
    assert SharedArrays(tmp_path, "k1").get("numbers", counting_build(calls))["numbers"][-1] == 999 and len(calls) == 3


def test_an_unwritable_directory_costs_memory_not_the_arrays(tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    arrays = SharedArrays(blocked, "k1").get("numbers", counting_build([]))
    assert arrays["numbers"].tolist() == list(range(1000)) and not isinstance(arrays["numbers"], np.memmap)


def test_old_entries_are_removed_while_mapped_ones_stay_readable(tmp_path):
    first = SharedArrays(tmp_path, "k0").get("numbers", counting_build([]))
    for i in range(1, KEEP_ENTRIES + 2):
        SharedArrays(tmp_path, f"k{i}").get("numbers", counting_build([]))
    kept = sorted(p.name for p in tmp_path.iterdir())
    assert len(kept) == KEEP_ENTRIES and "k0" not in kept and f"k{KEEP_ENTRIES + 1}" in kept
    assert first["numbers"][999] == 999  # a worker still serving the old version keeps its pages


def answers(pair, users, **kwargs):
    return [answer_json(recommend(pair, None, u, k=50, **kwargs), pair) for u in users]


def test_shared_pair_answers_as_the_files_say(model_v1, tmp_path):
    """Ids, titles, the fallback and every answer (plain and region-filtered) are the same loaded in
    memory or mapped from shared files, and what the model directory's files say."""
    plain = load_model_pair(model_v1)
    shared = load_model_pair(model_v1, shared_dir=tmp_path)
    again = load_model_pair(model_v1, shared_dir=tmp_path)  # a second worker: maps what the first built
    ids = (model_v1 / model_files.ARTICLE_IDS_FILE).read_text().splitlines()
    titles = pd.read_parquet(model_v1 / model_files.ARTICLES_FILE).set_index("article_id")["title"]
    for pair in (plain, shared, again):
        assert list(pair.article_ids) == ids and list(pair.titles) == [titles[a] for a in ids]
        assert [pair.article_ids.row_of[a] for a in ids[::37]] == list(range(0, len(ids), 37))
        assert pair.popular == plain.popular
    assert isinstance(again.article_ids._keys, np.memmap) and isinstance(again.titles._offsets, np.memmap)
    users = [f"u{i:04d}" for i in range(40)] + ["nobody"]
    expected = answers(plain, users)
    assert answers(shared, users) == expected and answers(again, users) == expected
    first = json.loads(expected[0])["candidates"]
    assert first and all(c["title"] == titles[c["article_id"]] for c in first)
    north = answers(plain, users[:10], regions={"north"})
    assert answers(again, users[:10], regions={"north"}) == north
    assert all(ids.index(c["article_id"]) % 2 == 0 for body in north for c in json.loads(body)["candidates"])


def mapped_files() -> set[str]:
    return {line.split()[-1] for line in open("/proc/self/maps") if "/" in line}


def test_a_new_version_maps_its_own_arrays_and_the_old_ones_close(model_v1, make_model, tmp_path):
    from serving.live.model import region_index

    old = load_model_pair(model_v1, shared_dir=tmp_path)
    new = load_model_pair(make_model("v2", seed=1), shared_dir=tmp_path)
    region_index(old), region_index(new)  # the region-sorted vectors too
    assert old.shared.key != new.shared.key and old.article_ids[0] == new.article_ids[0]
    assert {f for f in mapped_files() if old.shared.key in f} >= {
        str(tmp_path / old.shared.key / "regions" / "sorted_vectors.npy")
    }
    del old
    gc.collect()
    assert not [f for f in mapped_files() if f.startswith(str(tmp_path)) and new.shared.key not in f]  # closed
    assert [f for f in mapped_files() if new.shared.key in f]


def test_an_id_listed_twice_is_refused(model_v1, tmp_path):
    broken = shutil.copytree(model_v1, tmp_path / "twice")
    ids = (broken / "article_ids.txt").read_text().splitlines()
    ids[10] = ids[3]
    (broken / "article_ids.txt").write_text("\n".join(ids) + "\n")
    model_factory.write_manifest(broken, "v1")
    with pytest.raises(
        model_files.ModelDirError, match=rf"lists an article id more than once: '{ids[3]}' on lines 4, 11"
    ):
        load_model_pair(broken, shared_dir=tmp_path / "shared")


def test_serving_processes_read_parquet_with_the_system_allocator():
    import pyarrow

    process_memory.configure(worker=False)  # malloc's settings stay as they are in the test process
    assert pyarrow.default_memory_pool().backend_name == "system"
    process_memory.release_free_memory()  # never raises
