"""Action plans, kept beside the alerts (same database, SQLite or PostgreSQL): actions with their
allowed status transitions, initiatives with milestones and progress, analyses per KPI per period
with every version, and every change of an action or initiative as an event (who, when, what).

Rows are plain dicts, in the API's JSON shape. What the caller may not do (an unknown id, a
transition the table does not allow) raises PlanError naming the field.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from alerts.db import Database, Row, Tx
from alerts.plans import schema

ACTION_STATUSES = ("open", "in_progress", "done", "cancelled")
#: status -> the statuses it may change to. Done may be reopened (it did not work); cancelled is final.
ACTION_MOVES: Mapping[str, tuple[str, ...]] = {
    "open": ("in_progress", "done", "cancelled"),
    "in_progress": ("open", "done", "cancelled"),
    "done": ("in_progress",),
    "cancelled": (),
}
OPEN_ACTION = ("open", "in_progress")
INITIATIVE_STATUSES = ("planned", "active", "on_hold", "done", "cancelled")
INITIATIVE_MOVES: Mapping[str, tuple[str, ...]] = {
    "planned": ("active", "on_hold", "cancelled"),
    "active": ("on_hold", "done", "cancelled"),
    "on_hold": ("active", "cancelled"),
    "done": ("active",),
    "cancelled": (),
}
LIVE_INITIATIVE = ("planned", "active", "on_hold")


class PlanError(ValueError):
    """A request the plans refuse: `field` names what is wrong; `status` the HTTP answer."""

    def __init__(self, field: str, message: str, status: int = 422):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.status = status


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


def _move(kind: str, moves: Mapping[str, tuple[str, ...]], before: str, after: str) -> None:
    if after != before and after not in moves[before]:
        allowed = ", ".join(moves[before]) or "none: it is final"
        raise PlanError("status", f"a {kind} cannot go from {before} to {after} (from {before}: {allowed})")


class PlanStore:
    def __init__(self, db: Database, clock: Callable[[], float] = time.time):
        self.db = db
        self.clock = clock
        # the row read to check a transition stays unchanged until the update (SQLite: the
        # transaction is IMMEDIATE, one writer at a time)
        self._lock = " FOR UPDATE" if db.dialect == "postgresql" else ""
        schema.create(db)

    # -- events ------------------------------------------------------------------------------
    def _event(
        self, tx: Tx, kind: str, item_id: str, actor: str, what: str, changes: Mapping[str, Any], now: float
    ) -> None:
        tx.execute(
            "INSERT INTO plan_events (item_kind, item_id, at, at_ts, actor, what, changes)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (kind, item_id, _iso(now), now, actor, what, orjson.dumps(changes).decode()),
        )

    def events(self, kind: str, item_id: str) -> list[dict[str, Any]]:
        rows = self.db.query(
            "SELECT at, actor, what, changes FROM plan_events WHERE item_kind = ? AND item_id = ?"
            " ORDER BY id",
            (kind, item_id),
        )
        return [{**r, "changes": orjson.loads(r["changes"])} for r in rows]

    @staticmethod
    def _update(tx: Tx, table: str, item_id: str, changes: Mapping[str, Any]) -> None:
        sets = ", ".join(f"{k} = ?" for k in changes)
        tx.execute(f"UPDATE {table} SET {sets} WHERE id = ?", (*changes.values(), item_id))

    @staticmethod
    def _diff(row: Row, fields: Mapping[str, Any]) -> dict[str, list[Any]]:
        return {k: [row[k], v] for k, v in fields.items() if row[k] != v}

    # -- actions -----------------------------------------------------------------------------
    def create_action(self, fields: Mapping[str, Any], actor: str) -> dict[str, Any]:
        """fields: title, kpi, facility, department, unit, alert_id, owner, due, due_ts, notes."""
        now = self.clock()
        action_id = uuid.uuid4().hex
        row: dict[str, Any] = {
            **{k: fields.get(k) for k in ("title", "kpi", "facility", "department", "unit", "alert_id")},
            **{k: fields.get(k) for k in ("owner", "due", "due_ts", "notes")},
            "id": action_id,
            "status": "open",
            "created_at": _iso(now),
            "created_by": actor,
            "changed_at": _iso(now),
            "changed_by": actor,
            "closed_at": None,
        }
        with self.db.transaction() as tx:
            cols = ", ".join(row)
            tx.execute(
                f"INSERT INTO actions ({cols}) VALUES ({', '.join('?' for _ in row)})", tuple(row.values())
            )
            created = {k: [None, v] for k, v in row.items() if v is not None and k not in ("id", "due_ts")}
            self._event(tx, "action", action_id, actor, "created", created, now)
        return self.get_action(action_id) or row

    def get_action(self, action_id: str) -> dict[str, Any] | None:
        rows = self.db.query("SELECT * FROM actions WHERE id = ?", (action_id,))
        return _action(rows[0]) if rows else None

    def list_actions(self, filters: Mapping[str, Any], limit: int = 500) -> list[dict[str, Any]]:
        """filters: column -> value (kpi, facility, department, unit, owner, status, alert_id)."""
        where = [f"{k} = ?" for k, v in filters.items() if v is not None]
        args = [v for v in filters.values() if v is not None]
        sql = "SELECT * FROM actions" + (" WHERE " + " AND ".join(where) if where else "")
        rows = self.db.query(sql + " ORDER BY due_ts, id LIMIT ?", (*args, limit))
        return [_action(r) for r in rows]

    def update_action(self, action_id: str, fields: Mapping[str, Any], actor: str) -> dict[str, Any]:
        """Change title, owner, due (with due_ts), status, notes; the event lists what changed."""
        now = self.clock()
        with self.db.transaction() as tx:
            rows = tx.query(f"SELECT * FROM actions WHERE id = ?{self._lock}", (action_id,))
            if not rows:
                raise PlanError("id", f"no action {action_id!r}", 404)
            row = rows[0]
            if "status" in fields:
                _move("action", ACTION_MOVES, row["status"], fields["status"])
            changes = self._diff(row, fields)
            if changes:
                columns = {k: v for k, (_, v) in changes.items()}
                if "status" in changes:
                    closing = columns["status"] in ("done", "cancelled")
                    columns["closed_at"] = _iso(now) if closing else None
                columns |= {"changed_at": _iso(now), "changed_by": actor}
                self._update(tx, "actions", action_id, columns)
                changes.pop("due_ts", None)
                self._event(tx, "action", action_id, actor, "changed", changes, now)
        return self.get_action(action_id) or {}

    def markers(
        self, kpi: str | None, place: Mapping[str, str | None], start: float | None, end: float | None
    ) -> list[dict[str, Any]]:
        """When actions on this KPI (every KPI: None) at this place or within it were opened,
        closed and reopened, in time order: the history chart's markers, the review's actions."""
        where = ["e.item_kind = 'action'"]
        args: list[Any] = []
        if kpi is not None:
            where.append("a.kpi = ?")
            args.append(kpi)
        for column, value in place.items():
            if value is not None:
                where.append(f"a.{column} = ?")
                args.append(value)
        if start is not None:
            where.append("e.at_ts >= ?")
            args.append(start)
        if end is not None:
            where.append("e.at_ts < ?")
            args.append(end)
        rows = self.db.query(
            "SELECT e.at, e.what, e.changes, a.id, a.title, a.kpi, a.owner, a.status, a.facility,"
            " a.department, a.unit"
            " FROM plan_events e JOIN actions a ON a.id = e.item_id"
            f" WHERE {' AND '.join(where)} ORDER BY e.at_ts, e.id",
            args,
        )
        out = []
        for r in rows:
            status = orjson.loads(r["changes"]).get("status")
            if r["what"] == "created":
                marker = "opened"
            elif status and status[1] in ("done", "cancelled"):
                marker = f"closed ({status[1]})"
            elif status and status[0] in ("done", "cancelled"):
                marker = "reopened"
            else:
                continue
            about = {k: r[k] for k in ("title", "kpi", "owner", "status", "facility", "department", "unit")}
            out.append({"at": r["at"], "event": marker, "action_id": r["id"], **about})
        return out

    # -- initiatives -------------------------------------------------------------------------
    def create_initiative(
        self, fields: Mapping[str, Any], milestones: Sequence[Mapping[str, Any]], actor: str
    ) -> dict[str, Any]:
        """fields: title, objectives (ids), facility, owner, starts, ends, status, description;
        milestones: title, due, due_ts."""
        now = self.clock()
        row = {**fields, "objectives": orjson.dumps(list(fields["objectives"])).decode()}
        row |= {"id": uuid.uuid4().hex, "created_at": _iso(now), "created_by": actor}
        row |= {"changed_at": _iso(now), "changed_by": actor}
        with self.db.transaction() as tx:
            tx.execute(
                f"INSERT INTO initiatives ({', '.join(row)}) VALUES ({', '.join('?' for _ in row)})",
                tuple(row.values()),
            )
            created = {k: [None, v] for k, v in fields.items() if v is not None}
            self._event(tx, "initiative", row["id"], actor, "created", created, now)
            for m in milestones:
                self._add_milestone(tx, row["id"], m, actor, now)
        return self.get_initiative(row["id"]) or {}

    def _add_milestone(
        self, tx: Tx, initiative_id: str, m: Mapping[str, Any], actor: str, now: float
    ) -> None:
        milestone_id = uuid.uuid4().hex
        tx.execute(
            "INSERT INTO milestones (id, initiative_id, title, due, due_ts, done_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (
                milestone_id,
                initiative_id,
                m["title"],
                m["due"],
                m["due_ts"],
                _iso(now) if m.get("done") else None,
            ),
        )
        added = {"id": [None, milestone_id], "title": [None, m["title"]], "due": [None, m["due"]]}
        self._event(tx, "initiative", initiative_id, actor, "milestone added", added, now)

    def add_milestone(self, initiative_id: str, milestone: Mapping[str, Any], actor: str) -> dict[str, Any]:
        with self.db.transaction() as tx:
            self._live_initiative(tx, initiative_id)
            self._add_milestone(tx, initiative_id, milestone, actor, self.clock())
        return self.get_initiative(initiative_id) or {}

    def _live_initiative(self, tx: Tx, initiative_id: str) -> Row:
        rows = tx.query(f"SELECT * FROM initiatives WHERE id = ?{self._lock}", (initiative_id,))
        if not rows:
            raise PlanError("id", f"no initiative {initiative_id!r}", 404)
        return rows[0]

    def update_milestone(
        self, initiative_id: str, milestone_id: str, fields: Mapping[str, Any], actor: str
    ) -> dict[str, Any]:
        """fields: title, due (with due_ts), done (bool: done_at set now, or cleared)."""
        now = self.clock()
        with self.db.transaction() as tx:
            self._live_initiative(tx, initiative_id)
            rows = tx.query(
                "SELECT * FROM milestones WHERE id = ? AND initiative_id = ?", (milestone_id, initiative_id)
            )
            if not rows:
                raise PlanError("milestone_id", f"no milestone {milestone_id!r} in this initiative", 404)
            row = rows[0]
            columns = {k: v for k, v in fields.items() if k != "done"}
            if "done" in fields and fields["done"] != (row["done_at"] is not None):
                columns["done_at"] = _iso(now) if fields["done"] else None
            changes = self._diff(row, columns)
            if changes:
                self._update(tx, "milestones", milestone_id, {k: v for k, (_, v) in changes.items()})
                changes.pop("due_ts", None)
                changes["id"] = [milestone_id, milestone_id]
                self._event(tx, "initiative", initiative_id, actor, "milestone changed", changes, now)
        return self.get_initiative(initiative_id) or {}

    def update_initiative(self, initiative_id: str, fields: Mapping[str, Any], actor: str) -> dict[str, Any]:
        now = self.clock()
        with self.db.transaction() as tx:
            row = self._live_initiative(tx, initiative_id)
            if "status" in fields:
                _move("initiative", INITIATIVE_MOVES, row["status"], fields["status"])
            columns = dict(fields)
            if "objectives" in columns:
                columns["objectives"] = orjson.dumps(list(columns["objectives"])).decode()
            changes = self._diff(row, columns)
            if changes:
                self._update(tx, "initiatives", initiative_id, {k: v for k, (_, v) in changes.items()})
                self._update(tx, "initiatives", initiative_id, {"changed_at": _iso(now), "changed_by": actor})
                self._event(tx, "initiative", initiative_id, actor, "changed", changes, now)
        return self.get_initiative(initiative_id) or {}

    def get_initiative(self, initiative_id: str) -> dict[str, Any] | None:
        rows = self.db.query("SELECT * FROM initiatives WHERE id = ?", (initiative_id,))
        return self._initiatives(rows)[0] if rows else None

    def list_initiatives(self, filters: Mapping[str, Any], limit: int = 500) -> list[dict[str, Any]]:
        """filters: facility, owner, status; objective (one of its objectives)."""
        objective = filters.get("objective")
        where = [f"{k} = ?" for k, v in filters.items() if v is not None and k != "objective"]
        args = [v for k, v in filters.items() if v is not None and k != "objective"]
        sql = "SELECT * FROM initiatives" + (" WHERE " + " AND ".join(where) if where else "")
        found = self._initiatives(self.db.query(sql + " ORDER BY ends, id LIMIT ?", (*args, limit)))
        return [i for i in found if objective is None or objective in i["objectives"]]

    def _initiatives(self, rows: list[Row]) -> list[dict[str, Any]]:
        out = []
        for r in rows:
            ms = self.db.query(
                "SELECT id, title, due, done_at FROM milestones WHERE initiative_id = ? ORDER BY due_ts, id",
                (r["id"],),
            )
            milestones = [{**m, "done": m["done_at"] is not None} for m in ms]
            done = sum(m["done"] for m in milestones)
            progress = round(done / len(milestones), 4) if milestones else None
            out.append(
                {
                    **r,
                    "objectives": orjson.loads(r["objectives"]),
                    "milestones": milestones,
                    "progress": progress,
                }
            )
        return out

    # -- what is late (alerts/plans/watch.py) --------------------------------------------------
    def overdue_actions(self, now: float) -> list[dict[str, Any]]:
        """Open or in-progress actions due by now (rows with due_ts)."""
        return self.db.query(
            "SELECT * FROM actions WHERE status IN (?, ?) AND due_ts <= ? ORDER BY due_ts",
            (*OPEN_ACTION, now),
        )

    def missed_milestones(self, now: float) -> list[dict[str, Any]]:
        """Milestones not done by their due time, of initiatives not done or cancelled."""
        return self.db.query(
            "SELECT m.id, m.title, m.due, m.due_ts, i.id AS initiative_id, i.title AS initiative,"
            " i.facility, i.owner, i.objectives"
            " FROM milestones m JOIN initiatives i ON i.id = m.initiative_id"
            " WHERE m.done_at IS NULL AND m.due_ts <= ? AND i.status IN (?, ?, ?) ORDER BY m.due_ts",
            (now, *LIVE_INITIATIVE),
        )

    # -- analyses ------------------------------------------------------------------------------
    def put_analysis(
        self, kpi: str, period: str, place: tuple[str, str, str], text: Mapping[str, str], author: str
    ) -> dict[str, Any]:
        """A new version of the analysis of `kpi` in `period` at `place` (facility, department or
        '', unit or ''): happened, why, next. Earlier versions are kept."""
        key = (kpi, period, *place)
        match = "kpi = ? AND period = ? AND facility = ? AND department = ? AND unit = ?"
        with self.db.transaction() as tx:
            last = tx.query(f"SELECT MAX(version) AS v FROM analyses WHERE {match}", key)[0]["v"]
            tx.execute(
                "INSERT INTO analyses (kpi, period, facility, department, unit, version, happened, why, next,"
                " author, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    *key,
                    (last or 0) + 1,
                    text["happened"],
                    text["why"],
                    text["next"],
                    author,
                    _iso(self.clock()),
                ),
            )
        return self.analysis(kpi, period, place)

    def analyses(self, period: str, place: tuple[str, str, str]) -> list[dict[str, Any]]:
        """The current version of every KPI's analysis of `period` at exactly `place`, by KPI."""
        return self.db.query(
            "SELECT a.kpi, a.version, a.happened, a.why, a.next, a.author, a.at FROM analyses a"
            " WHERE a.period = ? AND a.facility = ? AND a.department = ? AND a.unit = ? AND a.version ="
            " (SELECT MAX(b.version) FROM analyses b WHERE b.kpi = a.kpi AND b.period = a.period"
            " AND b.facility = a.facility AND b.department = a.department AND b.unit = a.unit)"
            " ORDER BY a.kpi",
            (period, *place),
        )

    def analysis(self, kpi: str, period: str, place: tuple[str, str, str]) -> dict[str, Any]:
        """The versions, newest first (an empty list: none written)."""
        rows = self.db.query(
            "SELECT version, happened, why, next, author, at FROM analyses WHERE kpi = ? AND period = ?"
            " AND facility = ? AND department = ? AND unit = ? ORDER BY version DESC",
            (kpi, period, *place),
        )
        return {"kpi": kpi, "period": period, "current": rows[0] if rows else None, "versions": rows}


def _action(row: Row) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k != "due_ts"}
