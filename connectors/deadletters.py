"""One dead-letter store for every connector: what we could not take, kept raw, with why.

A message that gets AE/AR (or a FHIR 4xx, or a bad feed row) is kept here with its source,
reason and time, so nothing a hospital sends vanishes; after a fix it can be replayed.

A flood of bad input must not become a second fault: `add` only queues the letter (its id is
given at once) and a writer thread stores queued letters in one transaction per batch, so a
file of 100,000 bad rows costs a few fsyncs, not 100,000, and adding one never touches
the disk (reads, from the API and replay, first store what is queued). If the
store cannot be written (a full disk) the letters wait in memory, up to MAX_PENDING, and the
connector's answer does not change. Dead letters hold PHI, so they are kept `retention`
seconds and at most `max_rows` of them (the oldest go first); what is dropped is counted
(carescore_dead_letters_dropped_total{why}).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from connectors.metrics import DEAD_LETTERS, DEAD_LETTERS_DROPPED
from engine.sqlite import SQLiteFile

log = logging.getLogger(__name__)

MAX_PENDING = 50_000
"""Letters held in memory while the store cannot be written; beyond it the oldest are dropped."""
BATCH_EVERY = 0.1
"""Seconds the writer waits for more letters before a batch (a flood becomes few transactions)."""
PRUNE_EVERY = 600.0
"""Default seconds between two retention passes (privacy.purge_every), also when no letters come."""

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
    def __init__(
        self,
        path: Path,
        *,
        max_rows: int = 100_000,
        retention: float = 30 * 86400.0,
        prune_every: float = PRUNE_EVERY,
    ):
        self.path = path
        self.max_rows = max_rows
        self.retention = retention
        self.prune_every = prune_every
        self._file = SQLiteFile(path)
        self._lock = self._file.lock
        self._db = self._file.db
        self._file.script(SCHEMA)
        # ids are never given twice, also after retention emptied the table (AUTOINCREMENT's
        # sqlite_sequence keeps the highest id ever stored)
        self._next_id = 1 + int(
            self._db.execute(
                "SELECT MAX(COALESCE((SELECT MAX(id) FROM dead_letters), 0),"
                " COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'dead_letters'), 0))"
            ).fetchone()[0]
        )
        self._stored = int(self._db.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0])
        self._pending: list[tuple[Any, ...]] = []
        self._wake = threading.Condition()
        self._closed = False
        self.failing_since: float | None = None
        self._pruned = 0.0
        self._writer = threading.Thread(target=self._run, name="dead-letters", daemon=True)
        self._writer.start()

    def add(
        self,
        source: str,
        reason: str,
        raw: bytes | str,
        *,
        detail: str | None = None,
        content_type: str = "text/plain",
    ) -> int:
        """Queue a letter and return its id; never raises for the store's sake."""
        blob = raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else raw
        with self._wake:
            letter = self._next_id
            self._next_id += 1
            self._pending.append(
                (letter, datetime.now(UTC).isoformat(), source, reason, detail, blob, content_type)
            )
            if len(self._pending) > MAX_PENDING:
                dropped = len(self._pending) - MAX_PENDING
                del self._pending[:dropped]
                DEAD_LETTERS_DROPPED.labels("memory").inc(dropped)
            self._wake.notify()
        DEAD_LETTERS.labels(source).inc()
        return letter

    def _run(self) -> None:
        while True:
            with self._wake:
                if not self._pending and not self._closed:
                    self._wake.wait(self.prune_every)  # woken by add(); else a quiet spell: prune
                closed = self._closed
            if closed:
                return
            time.sleep(BATCH_EVERY)  # let a flood gather into one batch
            if not self.flush():
                time.sleep(1.0)  # the store is failing: try again in a second, not in a spin

    def flush(self) -> bool:
        """Store what is queued (one transaction) and prune; False if the letters could not
        be stored (they stay queued). A prune that fails is only logged: the letters are in."""
        with self._lock:  # the batch is taken under the lock: a reader after us sees it stored
            with self._wake:
                batch, self._pending = self._pending, []
            if batch:
                try:
                    self._insert(batch)
                except sqlite3.Error as exc:
                    with self._wake:  # keep them, oldest first, for the next try
                        self._pending[:0] = batch
                    if self.failing_since is None:
                        self.failing_since = time.time()
                        log.error("dead letters cannot be stored; held in memory: %s", exc)
                    return False
                self._stored += len(batch)
            try:
                self._prune()
            except sqlite3.Error as exc:
                log.error("pruning dead letters failed (tried again later): %s", exc)
        if self.failing_since is not None:
            log.warning("dead letters are stored again")
            self.failing_since = None
        return True

    def _insert(self, batch: list[tuple[Any, ...]]) -> None:
        """One transaction. OR IGNORE: a batch whose COMMIT did happen though it raised is
        stored once when it is tried again."""
        with self._file.transaction() as db:
            db.executemany(
                "INSERT OR IGNORE INTO dead_letters (id, received_time, source, reason, detail, raw,"
                " content_type) VALUES (?, ?, ?, ?, ?, ?, ?)",
                batch,
            )

    def _prune(self) -> None:
        """The cap as soon as it is passed; retention every prune_every seconds."""
        now = time.time()
        if now - self._pruned >= self.prune_every:
            self._pruned = now
            cutoff = (datetime.now(UTC) - timedelta(seconds=self.retention)).isoformat()
            old = self._db.execute("DELETE FROM dead_letters WHERE received_time < ?", (cutoff,)).rowcount
            if old > 0:
                DEAD_LETTERS_DROPPED.labels("retention").inc(old)
            self._stored = int(self._db.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0])
        over = self._stored - self.max_rows
        if over > 0:
            self._db.execute(
                "DELETE FROM dead_letters WHERE id IN (SELECT id FROM dead_letters ORDER BY id LIMIT ?)",
                (over,),
            )
            self._stored -= over
            DEAD_LETTERS_DROPPED.labels("cap").inc(over)

    def prune_now(self) -> None:
        """Apply retention and the cap at once (tests, `carescore deadletter` tools)."""
        self._pruned = 0.0
        self.flush()

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
        self.flush()
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [DeadLetter(*row) for row in rows]

    def get(self, letter_id: int) -> DeadLetter | None:
        self.flush()
        with self._lock:
            row = self._db.execute("SELECT * FROM dead_letters WHERE id = ?", (letter_id,)).fetchone()
        return DeadLetter(*row) if row else None

    def mark_replayed(self, letter_id: int, result: str, *, taken: bool) -> None:
        """Record a replay; only a replay that was taken closes the letter (a letter
        rejected again stays pending for the next fix)."""
        self.flush()
        with self._lock:
            self._db.execute(
                "UPDATE dead_letters SET replayed_time = ?, replay_result = ? WHERE id = ?",
                (datetime.now(UTC).isoformat() if taken else None, result, letter_id),
            )

    def count(self) -> dict[str, int]:
        """Stored letters by source, plus those still queued (what /metrics shows)."""
        with self._lock:
            rows = self._db.execute("SELECT source, COUNT(*) FROM dead_letters GROUP BY source").fetchall()
        counts = {source: n for source, n in rows}
        with self._wake:
            for letter in self._pending:
                counts[letter[2]] = counts.get(letter[2], 0) + 1
        return counts

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
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._writer.join(10)
        if not self.flush():
            log.error("dead letters not stored at close: %d", len(self._pending))
        self._file.close()
