"""The durable embedded live store: live views and listing records in one SQLite file (WAL mode).

Without Redis the live state lives in the service process (serving/live/events.py
`EmbeddedLiveViews`, serving/live/articles.py `EmbeddedArticleLog`); with a `LiveJournal` each
write is committed here before it is acknowledged, and a restarted service reads it back, so views,
upserts and removals survive a restart, `kill -9` included.

Why SQLite in WAL mode (stdlib `sqlite3`): a commit appends to the write-ahead log and returns;
with `synchronous=NORMAL` a committed transaction survives the process being killed at any point
(the WAL is in the OS page cache), and only a power loss or OS crash can lose the last
transactions before a checkpoint. One small transaction per request: tens of microseconds on a
local disk. Tables:

  views(user_id TEXT PRIMARY KEY, entries BLOB)      the user's live list as JSON (events.py)
  articles(article_id TEXT PRIMARY KEY, seq INTEGER, record BLOB)   the latest record, by change seq

A row that cannot be read back is skipped, counted and logged once (serving/store.py
`report_corrupt`); start-up goes on.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

LOG = logging.getLogger(__name__)

MEMORY = "memory"  # the live_store setting that keeps live state in the process only

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS views (user_id TEXT PRIMARY KEY, entries BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS articles (article_id TEXT PRIMARY KEY, seq INTEGER NOT NULL, record BLOB NOT NULL)",
)


class LiveJournal:
    """One SQLite file holding the live views and listing records (see the module doc)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            for statement in _SCHEMA:
                self._db.execute(statement)
        except sqlite3.DatabaseError as error:
            raise ValueError(f"the live store {self.path} cannot be used as SQLite: {error}") from None
        self._lock = threading.Lock()
        self.description = f"SQLite {self.path.name}"

    def _write(self, statements: Iterable[tuple[str, list]]) -> None:
        with self._lock:
            self._db.execute("BEGIN")
            try:
                for sql, rows in statements:
                    if rows:
                        self._db.executemany(sql, rows)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def put_views(self, changed: list[tuple[str, bytes]], forgotten: Sequence[str] = ()) -> None:
        """Stores users' live lists (`(user_id, JSON)`) and drops `forgotten` users, in one commit."""
        self._write(
            [
                ("INSERT OR REPLACE INTO views (user_id, entries) VALUES (?, ?)", changed),
                ("DELETE FROM views WHERE user_id = ?", [(u,) for u in forgotten]),
            ]
        )

    def put_articles(self, records: list[tuple[str, int, bytes]]) -> None:
        """Stores listing records `(article_id, seq, JSON)` in one commit."""
        self._write([("INSERT OR REPLACE INTO articles (article_id, seq, record) VALUES (?, ?, ?)", records)])

    def views(self) -> Iterator[tuple[str, bytes]]:
        with self._lock:
            rows = self._db.execute("SELECT user_id, entries FROM views ORDER BY rowid").fetchall()
        yield from rows

    def articles(self) -> Iterator[tuple[str, int, bytes]]:
        with self._lock:
            rows = self._db.execute("SELECT article_id, seq, record FROM articles ORDER BY seq").fetchall()
        yield from rows

    def close(self) -> None:
        with self._lock:
            self._db.close()
