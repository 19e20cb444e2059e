"""homefeed.sample.movielens and `candidates import-movielens` on hand-written MovieLens-format files."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from homefeed.sample.movielens import STANDARD_GENRES, import_movielens, load_movielens
from homefeed_cli import cli

CHILDRENS = "Children's"
GENRE_TEXT = "".join(f"{name}|{i}\n" for i, name in enumerate(STANDARD_GENRES)) + "\n"


def _flags(*names: str) -> str:
    return "|".join("1" if genre in names else "0" for genre in STANDARD_GENRES)


ITEM_LINES = [
    f"1|Toy Story (1995)|01-Jan-1995||http://x/1|{_flags('Animation', CHILDRENS, 'Comedy')}",
    f"2|Café au lait (1994)|15-Mar-1994||http://x/2|{_flags('Romance', 'Comedy')}",  # latin-1 title
    f"3|Only unknown (1996)|02-Feb-1996||http://x/3|{_flags('unknown')}",
    f"12|unknown||||{_flags('unknown', 'Drama')}",  # no release date
]
DATA_LINES = [
    "196\t12\t3\t881250949",
    "7\t1\t5\t874965758",
    "7\t2\t4\t874965799",
    "942\t3\t1\t893286638",
]


def _write(directory, items=ITEM_LINES, data=DATA_LINES, genre=GENRE_TEXT):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "u.item").write_bytes(("\n".join(items) + "\n").encode("latin-1"))
    (directory / "u.data").write_text("\n".join(data) + "\n")
    if genre is not None:
        (directory / "u.genre").write_text(genre)
    return directory


def test_reads_events_and_articles(tmp_path):
    events, articles = load_movielens(_write(tmp_path / "ml"))

    assert events["user_id"].tolist() == ["0196", "0007", "0007", "0942"]
    assert events["article_id"].tolist() == ["0012", "0001", "0002", "0003"]
    assert events["viewed_at"].iloc[0] == pd.Timestamp("1997-12-04 15:55:49", tz="UTC")
    assert str(events["viewed_at"].dtype) == "datetime64[us, UTC]"

    by_id = articles.set_index("article_id")
    assert list(by_id.index) == ["0001", "0002", "0003", "0012"]
    # First flagged genre in u.genre order; "unknown" only when nothing else is flagged.
    assert by_id["category"].to_dict() == {"0001": "Animation", "0002": "Comedy", "0003": "unknown", "0012": "Drama"}
    assert by_id.loc["0002", "title"] == "Café au lait (1994)"
    assert by_id.loc["0001", "created_at"] == pd.Timestamp("1995-01-01", tz="UTC")
    assert pd.isna(by_id.loc["0012", "created_at"])
    assert (by_id["status"] == "active").all() and by_id["removed_at"].isna().all()
    assert "region" not in articles.columns


def test_ids_widen_past_four_digits_and_keep_text_order_numeric(tmp_path):
    data = DATA_LINES + ["12345\t1\t3\t881250950"]
    events, articles = load_movielens(_write(tmp_path / "ml", data=data))
    assert events["user_id"].tolist()[-2:] == ["00942", "12345"]
    assert articles["article_id"].tolist() == ["00001", "00002", "00003", "00012"]
    assert sorted(events["user_id"]) == [f"{n:05d}" for n in sorted(int(u) for u in events["user_id"])]


def test_standard_genres_when_u_genre_is_absent(tmp_path):
    events, articles = load_movielens(_write(tmp_path / "ml", genre=None))
    assert articles.set_index("article_id").loc["0001", "category"] == "Animation"


@pytest.mark.parametrize(
    ("file_name", "lines", "message"),
    [
        ("u.data", DATA_LINES[:2] + ["7\t2\t4"], r"u\.data, line 3: expected 4 tab-separated fields"),
        ("u.data", DATA_LINES[:1] + ["x7\t2\t4\t874965799"], r"u\.data, line 2: user id 'x7' is not an integer"),
        ("u.data", DATA_LINES + ["7\t99\t4\t874965799"], r"u\.data: 1 rating\(s\) of items missing .*item 99"),
        ("u.item", ITEM_LINES[:1] + ["2|Short|01-Jan-1995||url|0|1"], r"u\.item, line 2: expected 24 '\|'-separated"),
        (
            "u.item",
            ITEM_LINES[:1] + [ITEM_LINES[1].replace("15-Mar-1994", "1994-03-15")],
            r"u\.item, line 2: release date '1994-03-15'",
        ),
        ("u.item", ITEM_LINES + [ITEM_LINES[0]], r"u\.item, line 5: item id 1 already on line 1"),
    ],
)
def test_malformed_lines_name_file_and_line_and_write_nothing(tmp_path, file_name, lines, message):
    source = _write(tmp_path / "ml", **{"data" if file_name == "u.data" else "items": lines})
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=message):
        import_movielens(source, out)
    assert not (out / "events.parquet").exists()


def test_missing_file_names_the_path(tmp_path):
    source = _write(tmp_path / "ml")
    (source / "u.item").unlink()
    with pytest.raises(FileNotFoundError, match=str(source / "u.item")):
        load_movielens(source)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_movielens(tmp_path / "nowhere")


def test_cli_round_trip(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("homefeed.sample.cli",))
    source, out = _write(tmp_path / "ml"), tmp_path / "out"
    assert cli.main(["import-movielens", str(source), "--out", str(out)]) == 0
    assert "wrote 4 events by 3 users on 4 of 4 articles" in capsys.readouterr().out

    events = pq.read_table(out / "events.parquet")
    articles = pq.read_table(out / "articles.parquet")
    assert events.schema.field("viewed_at").type == pa.timestamp("us", tz="UTC")
    assert articles.column_names == ["article_id", "title", "category", "created_at", "status", "removed_at"]
    assert articles.column("created_at").null_count == 1 and articles.column("removed_at").null_count == 4
    assert json.loads((out / "dataset.json").read_text())["source"]["split"] == "per-user"

    assert cli.main(["import-movielens", str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert "not found" in capsys.readouterr().err
