"""Saved scorecard views, in the alert store's database (SQLite or PostgreSQL, alerts/db.py):
the one durable store a carescore deployment has, shared by every API process.

A view belongs to the principal who saved it (their subject), or is shared (saved by an
admin, seen by everyone). Each principal may mark one view, any they can see, as their
landing view. Who may do what is the API's to decide; this keeps rows.
"""

from __future__ import annotations

import secrets
from typing import Any

import orjson

from alerts.db import Database
from alerts.store import now_iso

SCHEMA = """
CREATE TABLE IF NOT EXISTS saved_views (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    shared INTEGER NOT NULL DEFAULT 0,
    spec TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS saved_views_owner ON saved_views (owner);
CREATE TABLE IF NOT EXISTS view_landing (
    subject TEXT PRIMARY KEY,
    view_id TEXT NOT NULL
)
"""


def _row(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": r["id"],
        "owner": r["owner"],
        "shared": bool(r["shared"]),
        "spec": orjson.loads(r["spec"]),
        "created_at": r["created_at"],
        "updated_at": r["updated_at"],
    }


class ViewStore:
    def __init__(self, db: Database):
        self.db = db
        db.script(SCHEMA)

    def visible(self, subject: str, everyone: bool = False) -> list[dict[str, Any]]:
        """Shared views and the subject's own (every view, when `everyone`), oldest first."""
        if everyone:
            rows = self.db.query("SELECT * FROM saved_views ORDER BY created_at, id")
        else:
            rows = self.db.query(
                "SELECT * FROM saved_views WHERE shared = 1 OR owner = ? ORDER BY created_at, id", (subject,)
            )
        return [_row(r) for r in rows]

    def get(self, view_id: str) -> dict[str, Any] | None:
        rows = self.db.query("SELECT * FROM saved_views WHERE id = ?", (view_id,))
        return _row(rows[0]) if rows else None

    def add(self, owner: str, shared: bool, spec: dict[str, Any]) -> dict[str, Any]:
        view_id, now = "v_" + secrets.token_hex(8), now_iso()
        self.db.execute(
            "INSERT INTO saved_views (id, owner, shared, spec, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (view_id, owner, int(shared), orjson.dumps(spec).decode(), now, now),
        )
        found = self.get(view_id)
        assert found is not None
        return found

    def replace(self, view_id: str, shared: bool, spec: dict[str, Any]) -> dict[str, Any] | None:
        self.db.execute(
            "UPDATE saved_views SET shared = ?, spec = ?, updated_at = ? WHERE id = ?",
            (int(shared), orjson.dumps(spec).decode(), now_iso(), view_id),
        )
        return self.get(view_id)

    def delete(self, view_id: str) -> bool:
        """Remove the view, and it as anyone's landing view (they fall back to the default)."""
        with self.db.transaction() as tx:
            tx.execute("DELETE FROM view_landing WHERE view_id = ?", (view_id,))
            return tx.execute("DELETE FROM saved_views WHERE id = ?", (view_id,)) > 0

    def landing(self, subject: str) -> str | None:
        rows = self.db.query("SELECT view_id FROM view_landing WHERE subject = ?", (subject,))
        return str(rows[0]["view_id"]) if rows else None

    def set_landing(self, subject: str, view_id: str) -> None:
        self.db.execute(
            "INSERT INTO view_landing (subject, view_id) VALUES (?, ?)"
            " ON CONFLICT (subject) DO UPDATE SET view_id = excluded.view_id",
            (subject, view_id),
        )
