"""Durable alert state: alerts, the notification outbox, the audit trail (SQLite).

A notification is written to the outbox in the same transaction that records the alert
transition, and is marked delivered only after the receiver said so: a crash in between
delivers it again, with the same idempotency key, never not at all.
"""

from __future__ import annotations

import sqlite3
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    id TEXT PRIMARY KEY,
    kpi TEXT NOT NULL,
    facility TEXT NOT NULL,
    department TEXT,
    unit TEXT,
    state TEXT NOT NULL,              -- firing | resolved
    severity TEXT NOT NULL,
    value REAL,
    threshold REAL,
    window_start TEXT,
    window_end TEXT,
    n INTEGER,
    started_at TEXT NOT NULL,
    fired_at TEXT NOT NULL,
    resolved_at TEXT,
    acked_at TEXT,
    acked_by TEXT,
    ack_note TEXT,
    summary TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS alerts_state ON alerts (state, kpi);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    alert_id TEXT NOT NULL,
    channel TEXT NOT NULL,
    idempotency_key TEXT NOT NULL UNIQUE,
    payload BLOB NOT NULL,
    created_at TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL NOT NULL DEFAULT 0,
    delivered_at TEXT,
    failed_at TEXT,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (delivered_at, failed_at, next_attempt);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    alert_id TEXT,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    detail TEXT
);
"""


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


@dataclass(frozen=True)
class OutboxItem:
    id: int
    alert_id: str
    channel: str
    idempotency_key: str
    payload: dict[str, Any]
    attempts: int


class AlertStore:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)

    def _tx(self, statements: list[tuple[str, tuple[Any, ...]]]) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for sql, args in statements:
                    self._db.execute(sql, args)
                self._db.execute("COMMIT")
            except Exception:
                self._db.execute("ROLLBACK")
                raise

    # -- alerts --------------------------------------------------------------------------
    def fire(self, alert: dict[str, Any], notifications: list[tuple[str, str, dict[str, Any]]]) -> str:
        alert_id = alert.get("id") or uuid.uuid4().hex
        alert["id"] = alert_id
        cols = ", ".join(alert)
        marks = ", ".join("?" for _ in alert)
        stmts: list[tuple[str, tuple[Any, ...]]] = [
            (f"INSERT INTO alerts ({cols}) VALUES ({marks})", tuple(alert.values())),
            (
                "INSERT INTO audit (at, alert_id, actor, action, detail)"
                " VALUES (?, ?, 'carescore', 'fired', ?)",
                (now_iso(), alert_id, alert["summary"]),
            ),
        ]
        stmts += self._outbox_rows(alert_id, notifications)
        self._tx(stmts)
        return alert_id

    def update(
        self,
        alert_id: str,
        changes: dict[str, Any],
        action: str,
        notifications: list[tuple[str, str, dict[str, Any]]],
        actor: str = "carescore",
        detail: str | None = None,
    ) -> None:
        sets = ", ".join(f"{k} = ?" for k in changes)
        stmts: list[tuple[str, tuple[Any, ...]]] = [
            (f"UPDATE alerts SET {sets} WHERE id = ?", (*changes.values(), alert_id)),
            (
                "INSERT INTO audit (at, alert_id, actor, action, detail) VALUES (?, ?, ?, ?, ?)",
                (now_iso(), alert_id, actor, action, detail),
            ),
        ]
        stmts += self._outbox_rows(alert_id, notifications)
        self._tx(stmts)

    def _outbox_rows(
        self, alert_id: str, notifications: list[tuple[str, str, dict[str, Any]]]
    ) -> list[tuple[str, tuple[Any, ...]]]:
        return [
            (
                "INSERT OR IGNORE INTO outbox (alert_id, channel, idempotency_key, payload, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (alert_id, channel, key, orjson.dumps(payload), now_iso()),
            )
            for channel, key, payload in notifications
        ]

    def get(self, alert_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM alerts WHERE id = ?", (alert_id,)).fetchone()
        return dict(row) if row else None

    def query(self, state: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        sql = "SELECT * FROM alerts"
        args: list[Any] = []
        if state:
            sql += " WHERE state = ?"
            args.append(state)
        sql += " ORDER BY fired_at DESC LIMIT ?"
        args.append(limit)
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [dict(r) for r in rows]

    def active(self) -> list[dict[str, Any]]:
        return self.query("firing", limit=100000)

    def audit(self, alert_id: str) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT at, actor, action, detail FROM audit WHERE alert_id = ? ORDER BY id",
                (alert_id,),
            ).fetchall()
        return [dict(r) for r in rows]

    # -- outbox --------------------------------------------------------------------------
    def due(self, now: float, limit: int = 100) -> list[OutboxItem]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, alert_id, channel, idempotency_key, payload, attempts FROM outbox"
                " WHERE delivered_at IS NULL AND failed_at IS NULL AND next_attempt <= ?"
                " ORDER BY id LIMIT ?",
                (now, limit),
            ).fetchall()
        return [
            OutboxItem(
                r["id"],
                r["alert_id"],
                r["channel"],
                r["idempotency_key"],
                orjson.loads(r["payload"]),
                r["attempts"],
            )
            for r in rows
        ]

    def delivered(self, item_id: int) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE outbox SET delivered_at = ?, attempts = attempts + 1 WHERE id = ?",
                (now_iso(), item_id),
            )

    def retry_later(self, item_id: int, next_attempt: float, error: str, give_up: bool) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE outbox SET attempts = attempts + 1, next_attempt = ?, last_error = ?, failed_at = ?"
                " WHERE id = ?",
                (next_attempt, error[:500], now_iso() if give_up else None, item_id),
            )

    def outbox(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM outbox ORDER BY id").fetchall()
        out = []
        for r in rows:
            d = dict(r)
            d["payload"] = orjson.loads(d["payload"])
            out.append(d)
        return out

    def close(self) -> None:
        with self._lock:
            self._db.close()
