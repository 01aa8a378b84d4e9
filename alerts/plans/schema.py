"""The tables of action plans (actions, initiatives and their milestones, their change history,
analyses per KPI per period), in the alert store's database: one backup, one PostgreSQL URL."""

from __future__ import annotations

from alerts.db import TYPES, Database

SCHEMA = """
CREATE TABLE IF NOT EXISTS actions (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    kpi TEXT NOT NULL,
    facility TEXT NOT NULL,
    department TEXT,
    unit TEXT,
    alert_id TEXT,
    owner TEXT NOT NULL,
    due TEXT NOT NULL,
    due_ts {real} NOT NULL,
    status TEXT NOT NULL,             -- open | in_progress | done | cancelled
    notes TEXT,
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL,
    changed_at TEXT NOT NULL,
    changed_by TEXT NOT NULL,
    closed_at TEXT
);
CREATE INDEX IF NOT EXISTS actions_kpi ON actions (kpi);
CREATE INDEX IF NOT EXISTS actions_due ON actions (status, due_ts);
CREATE TABLE IF NOT EXISTS initiatives (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    objectives TEXT NOT NULL,         -- JSON list of objective ids
    facility TEXT NOT NULL,
    owner TEXT NOT NULL,
    starts TEXT NOT NULL,
    ends TEXT NOT NULL,
    status TEXT NOT NULL,             -- planned | active | on_hold | done | cancelled
    description TEXT,
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL,
    changed_at TEXT NOT NULL,
    changed_by TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS milestones (
    id TEXT PRIMARY KEY,
    initiative_id TEXT NOT NULL,
    title TEXT NOT NULL,
    due TEXT NOT NULL,
    due_ts {real} NOT NULL,
    done_at TEXT
);
CREATE INDEX IF NOT EXISTS milestones_initiative ON milestones (initiative_id);
CREATE TABLE IF NOT EXISTS plan_events (
    id {id},
    item_kind TEXT NOT NULL,          -- action | initiative
    item_id TEXT NOT NULL,
    at TEXT NOT NULL,
    at_ts {real} NOT NULL,
    actor TEXT NOT NULL,
    what TEXT NOT NULL,               -- created | changed | milestone added | milestone changed
    changes TEXT NOT NULL             -- JSON: field -> [before, after]
);
CREATE INDEX IF NOT EXISTS plan_events_item ON plan_events (item_kind, item_id);
CREATE TABLE IF NOT EXISTS analyses (
    id {id},
    kpi TEXT NOT NULL,
    period TEXT NOT NULL,
    facility TEXT NOT NULL,
    department TEXT NOT NULL,         -- '' when the analysis is not of one department
    unit TEXT NOT NULL,               -- '' when not of one unit
    version INTEGER NOT NULL,
    happened TEXT NOT NULL,
    why TEXT NOT NULL,
    next TEXT NOT NULL,
    author TEXT NOT NULL,
    at TEXT NOT NULL,
    UNIQUE (kpi, period, facility, department, unit, version)
);
"""


def create(db: Database) -> None:
    db.script(SCHEMA.format(**TYPES[db.dialect]))
