"""The alert store's tables (alerts, outbox, silences, audit, feed_seen) and the columns
added since the first release, added in place to an older database."""

from __future__ import annotations

from alerts.db import TYPES, Database

SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    id TEXT PRIMARY KEY,
    kpi TEXT NOT NULL,
    facility TEXT NOT NULL,
    department TEXT,
    unit TEXT,
    state TEXT NOT NULL,              -- firing | resolved
    severity TEXT NOT NULL,
    value {real},
    threshold {real},
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
CREATE TABLE IF NOT EXISTS silences (
    id TEXT PRIMARY KEY,
    matchers TEXT NOT NULL,
    starts_at {real} NOT NULL,
    ends_at {real} NOT NULL,
    created_by TEXT NOT NULL,
    comment TEXT,
    created_at TEXT NOT NULL,
    expired_at TEXT
);
CREATE TABLE IF NOT EXISTS notice_alerts (
    outbox_id BIGINT NOT NULL,
    alert_id TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS notice_alerts_alert ON notice_alerts (alert_id);
CREATE TABLE IF NOT EXISTS feed_seen (
    source TEXT NOT NULL,
    facility TEXT NOT NULL,
    unit TEXT NOT NULL,
    last_seen {real} NOT NULL,
    PRIMARY KEY (source, facility, unit)
);
CREATE INDEX IF NOT EXISTS alerts_state ON alerts (state, kpi);
CREATE TABLE IF NOT EXISTS outbox (
    id {id},
    alert_id TEXT NOT NULL,
    channel TEXT NOT NULL,
    idempotency_key TEXT NOT NULL UNIQUE,
    payload {blob} NOT NULL,
    created_at TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt {real} NOT NULL DEFAULT 0,
    delivered_at TEXT,
    failed_at TEXT,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS outbox_alert ON outbox (alert_id);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (delivered_at, failed_at, next_attempt);
CREATE TABLE IF NOT EXISTS audit (
    id {id},
    at TEXT NOT NULL,
    alert_id TEXT,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    detail TEXT
);
"""


# Columns added after the first release: added in place to an older database.
MIGRATIONS = {
    "alerts": {
        "kind": "TEXT NOT NULL DEFAULT 'kpi'",
        "name": "TEXT",
        "perspective": "TEXT",
        "source": "TEXT",
        "tier": "INTEGER NOT NULL DEFAULT 0",
        "routed_at": "TEXT",
        "notified_at": "TEXT",
        "last_notified_at": "{real}",
        "reminders": "INTEGER NOT NULL DEFAULT 0",
        "owner": "TEXT",
    },
    "outbox": {
        "event": "TEXT",
        "recipient": "TEXT",
        "route": "TEXT",
        "cancelled_at": "TEXT",
        "held": "TEXT",
    },
}


def create(db: Database) -> None:
    """Create what is missing: tables, indexes, and columns an older database lacks."""
    types = {**TYPES[db.dialect]}
    db.script(SCHEMA.format(**types))
    for table, columns in MIGRATIONS.items():
        have = db.columns(table)
        for column, decl in columns.items():
            if column not in have:
                db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl.format(**types)}")
