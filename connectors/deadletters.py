"""One dead-letter store for every connector: what we could not take, kept raw, with why.

A message that gets AE/AR (or a FHIR 4xx, or a bad feed row) is kept here with its source,
reason and time, so nothing a hospital sends vanishes; after a fix it can be replayed.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from connectors.metrics import DEAD_LETTERS

SCHEMA = """
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_time TEXT NOT NULL,
    source TEXT NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT,
    raw BLOB NOT NULL,
    content_type TEXT NOT NULL DEFAULT 'text/plain',
    replayed_time TEXT,
    replay_result TEXT
);
CREATE INDEX IF NOT EXISTS dead_letters_source ON dead_letters (source, id);
"""


@dataclass(frozen=True)
class DeadLetter:
    id: int
    received_time: str
    source: str
    reason: str
    detail: str | None
    raw: bytes
    content_type: str
    replayed_time: str | None
    replay_result: str | None

    def summary(self) -> dict[str, Any]:
        """What the API shows: no payload (it may hold patient data), only its size."""
        return {
            "id": self.id,
            "received_time": self.received_time,
            "source": self.source,
            "reason": self.reason,
            "detail": self.detail,
            "size": len(self.raw),
            "content_type": self.content_type,
            "replayed_time": self.replayed_time,
            "replay_result": self.replay_result,
        }


class DeadLetterStore:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)

    def add(
        self,
        source: str,
        reason: str,
        raw: bytes | str,
        *,
        detail: str | None = None,
        content_type: str = "text/plain",
    ) -> int:
        blob = raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else raw
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO dead_letters (received_time, source, reason, detail, raw, content_type)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (datetime.now(UTC).isoformat(), source, reason, detail, blob, content_type),
            )
            letter = int(cur.lastrowid or 0)
        DEAD_LETTERS.labels(source).inc()
        return letter

    def query(
        self,
        *,
        source: str | None = None,
        limit: int = 100,
        after: int = 0,
        pending_only: bool = False,
    ) -> list[DeadLetter]:
        sql = "SELECT * FROM dead_letters WHERE id > ?"
        args: list[Any] = [after]
        if source:  # "feed" also matches "feed:staffing", ...
            sql += " AND (source = ? OR source LIKE ? || ':%')"
            args += [source, source]
        if pending_only:
            sql += " AND replayed_time IS NULL"
        sql += " ORDER BY id LIMIT ?"
        args.append(limit)
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [DeadLetter(*row) for row in rows]

    def get(self, letter_id: int) -> DeadLetter | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM dead_letters WHERE id = ?", (letter_id,)).fetchone()
        return DeadLetter(*row) if row else None

    def mark_replayed(self, letter_id: int, result: str, *, taken: bool) -> None:
        """Record a replay; only a replay that was taken closes the letter (a letter
        rejected again stays pending for the next fix)."""
        with self._lock:
            self._db.execute(
                "UPDATE dead_letters SET replayed_time = ?, replay_result = ? WHERE id = ?",
                (datetime.now(UTC).isoformat() if taken else None, result, letter_id),
            )

    def count(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT source, COUNT(*) FROM dead_letters GROUP BY source").fetchall()
        return {source: n for source, n in rows}

    def select(self, ids: list[int] | None, source: str | None, include_replayed: bool) -> list[DeadLetter]:
        """Letters to replay: these ids, or every pending one (of a source)."""
        if ids:
            found = [self.get(i) for i in ids]
            missing = [i for i, letter in zip(ids, found, strict=True) if letter is None]
            if missing:
                raise KeyError(f"no dead letter {', '.join(map(str, missing))}")
            return [letter for letter in found if letter is not None]
        letters: list[DeadLetter] = []
        after = 0
        while batch := self.query(source=source, after=after, limit=1000, pending_only=not include_replayed):
            letters += batch
            after = batch[-1].id
        return letters

    def close(self) -> None:
        with self._lock:
            self._db.close()
