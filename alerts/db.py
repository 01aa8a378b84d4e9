"""The alert store's database: SQLite in the data folder by default, PostgreSQL by URL when
several carescore processes share alerts, acknowledgements and silences.

The store writes one SQL dialect (`?` parameters, INSERT ... ON CONFLICT, RETURNING) that
both accept; the differences left (column types, finding columns, locking) live here.
"""

from __future__ import annotations

import contextlib
import sqlite3
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from engine.secrets import MASK, redact_url
from engine.sqlite import SQLiteFile

Row = dict[str, Any]


class Tx(Protocol):
    def query(self, sql: str, args: Sequence[Any] = ()) -> list[Row]: ...

    def execute(self, sql: str, args: Sequence[Any] = ()) -> int: ...


class Database(Protocol):
    dialect: str
    skip_locked: str  # appended to a SELECT that claims rows other processes may claim too

    def query(self, sql: str, args: Sequence[Any] = ()) -> list[Row]: ...

    def execute(self, sql: str, args: Sequence[Any] = ()) -> int: ...

    def transaction(self) -> contextlib.AbstractContextManager[Tx]: ...

    def columns(self, table: str) -> set[str]: ...

    def script(self, ddl: str) -> None: ...

    def close(self) -> None: ...


TYPES = {
    "sqlite": {"id": "INTEGER PRIMARY KEY AUTOINCREMENT", "real": "REAL", "blob": "BLOB"},
    "postgresql": {
        "id": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
        "real": "DOUBLE PRECISION",
        "blob": "BYTEA",
    },
}


class DatabaseUnavailable(ConnectionError):
    """The alert database could not be connected to; the message holds no password."""


def unavailable(exc: BaseException) -> bool:
    """True when the database could not be reached or was locked, so every statement would
    fail now (wait, then retry everything), rather than refusing this one statement."""
    if isinstance(exc, sqlite3.OperationalError | OSError):
        return True
    psycopg = sys.modules.get("psycopg")  # only loaded when PostgreSQL is used
    return psycopg is not None and isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)


class _Serialised:
    """One connection, used from the event loop and worker threads in turn."""

    _lock: threading.Lock | threading.RLock
    _tx: Tx

    def _ready(self) -> None:
        """Called under the lock before each use: a lost connection is opened again here."""

    def query(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        with self._lock:
            self._ready()
            return self._tx.query(sql, args)

    def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        with self._lock:
            self._ready()
            return self._tx.execute(sql, args)


class _SQLiteTx:
    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def query(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        return [dict(r) for r in self.db.execute(sql, tuple(args)).fetchall()]

    def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        return self.db.execute(sql, tuple(args)).rowcount


class SQLiteDatabase(_Serialised):
    dialect = "sqlite"
    skip_locked = ""  # one process owns the file (the data folder is locked)

    def __init__(self, path: Path, busy_timeout: float = 5.0):
        """`busy_timeout`: how long a write waits for a lock held by another connection (a
        backup, an operator's sqlite3 shell) before it fails and the service retries later."""
        self._file = SQLiteFile(path, busy_timeout=busy_timeout, row_factory=sqlite3.Row)
        self._lock = self._file.lock
        self._tx = _SQLiteTx(self._file.db)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Tx]:
        with self._file.transaction(immediate=True):
            yield self._tx

    def columns(self, table: str) -> set[str]:
        return {r["name"] for r in self.query(f"PRAGMA table_info({table})")}

    def script(self, ddl: str) -> None:
        self._file.script(ddl)

    def close(self) -> None:
        self._file.close()


def _pg(sql: str) -> str:
    return sql.replace("%", "%%").replace("?", "%s")


class _PostgresTx:
    def __init__(self, conn: Any):
        self.conn = conn

    def query(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        with self.conn.cursor() as cur:
            cur.execute(_pg(sql), tuple(args))
            return list(cur.fetchall()) if cur.description else []

    def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        with self.conn.cursor() as cur:
            cur.execute(_pg(sql), tuple(args))
            return int(cur.rowcount)


class PostgresDatabase(_Serialised):
    dialect = "postgresql"
    skip_locked = " FOR UPDATE SKIP LOCKED"  # replicas claim different outbox rows

    def __init__(self, url: str):
        try:
            import psycopg
            from psycopg.rows import dict_row
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise RuntimeError(
                "alerts.database is PostgreSQL: install psycopg (pip install 'carescore[postgres]')"
            ) from exc
        self._lock = threading.Lock()

        def connect() -> Any:
            """psycopg's errors name the server, not the password; the URL is redacted and any echo of
            the password masked anyway, and the original (its traceback holds the URL) not chained."""
            try:
                return psycopg.connect(url, autocommit=True, row_factory=dict_row)
            except psycopg.Error as exc:
                said = str(exc)
                password = urlsplit(url).password
                if password:
                    said = said.replace(password, MASK)
                raise DatabaseUnavailable(f"alerts.database {redact_url(url)}: {said.strip()}") from None

        self._connect: Callable[[], Any] = connect
        self._conn = self._connect()
        self._tx = _PostgresTx(self._conn)
        self._closed = False

    def _ready(self) -> None:
        """A connection the server dropped (restart, failover, idle timeout) stays closed in
        psycopg: open a new one, else every later write would fail until a restart."""
        if (self._conn.closed or self._conn.broken) and not self._closed:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = self._connect()
            self._tx = _PostgresTx(self._conn)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Tx]:
        with self._lock:
            self._ready()
            with self._conn.transaction():
                yield self._tx

    def columns(self, table: str) -> set[str]:
        rows = self.query("SELECT column_name FROM information_schema.columns WHERE table_name = ?", (table,))
        return {r["column_name"] for r in rows}

    def script(self, ddl: str) -> None:
        with self._lock:
            self._ready()
            with self._conn.transaction():
                for statement in (s.strip() for s in ddl.split(";")):
                    if statement:
                        self._conn.execute(statement)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._conn.close()


def open_database(target: Path | str, busy_timeout: float = 5.0) -> Database:
    """A path (SQLite) or a postgresql:// URL."""
    text = str(target)
    if text.startswith(("postgresql://", "postgres://")):
        return PostgresDatabase(text)
    return SQLiteDatabase(Path(text.removeprefix("sqlite:///")), busy_timeout)
