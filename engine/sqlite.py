"""One SQLite file, opened the one way carescore opens its stores (history, dead letters, alerts).

Each store holds a single connection shared by its threads (the event loop, a writer
thread, API requests), so the connection is opened without sqlite3's thread check and
every use goes through one lock. The file is in WAL mode (readers do not block the
writer), autocommit outside explicit transactions (isolation_level=None: a store says
where a transaction begins), and a write waits `busy_timeout` seconds for a lock held by
another connection (a backup, an operator's sqlite3 shell) before it fails.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

Synchronous = Literal["OFF", "NORMAL", "FULL", "EXTRA"]


class SQLiteFile:
    """A shared SQLite connection with its lock.

    `lock` and `db` are public: a store that must keep other threads out across several
    steps (store a batch, then prune) holds `with f.lock:` around them; the methods below
    take the same (re-entrant) lock.

    synchronous: FULL (the default) makes every commit durable across a power cut; NORMAL
    may lose the last commits then but never corrupts the file in WAL mode (for data that
    can be rebuilt, and only where nothing durable, such as a snapshot, points past it).
    row_factory: e.g. sqlite3.Row for rows addressable by column name.
    """

    def __init__(
        self,
        path: Path,
        *,
        synchronous: Synchronous = "FULL",
        busy_timeout: float = 5.0,
        row_factory: Any = None,
    ):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.lock = threading.RLock()  # re-entrant: `with f.lock:` may wrap f.transaction()
        self.db = sqlite3.connect(path, timeout=busy_timeout, check_same_thread=False, isolation_level=None)
        if row_factory is not None:
            self.db.row_factory = row_factory
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(f"PRAGMA synchronous={synchronous}")

    def script(self, ddl: str) -> None:
        """Run a script of statements (CREATE TABLE IF NOT EXISTS ...), under the lock."""
        with self.lock:
            self.db.executescript(ddl)

    def query(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        """All rows of one statement, under the lock."""
        with self.lock:
            return self.db.execute(sql, tuple(args)).fetchall()

    def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        """One statement in autocommit, under the lock; the rows it changed."""
        with self.lock:
            return self.db.execute(sql, tuple(args)).rowcount

    @contextlib.contextmanager
    def transaction(self, *, immediate: bool = False) -> Iterator[sqlite3.Connection]:
        """BEGIN ... COMMIT around the block, under the lock; ROLLBACK if it raises (a failed
        batch does not leave the connection inside a transaction). immediate: take the write
        lock at BEGIN (a read-then-write block no other connection may overtake)."""
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
            try:
                yield self.db
                self.db.execute("COMMIT")
            except BaseException:
                if self.db.in_transaction:  # some errors (a full disk) roll back by themselves
                    self.db.execute("ROLLBACK")
                raise

    def close(self) -> None:
        """Close the connection once the statement under way (if any) is done."""
        with self.lock:
            self.db.close()
