"""Durable alert state: alerts, the notification outbox, silences, the audit trail
(SQLite by default, PostgreSQL by URL: alerts/db.py).

A notification is written to the outbox in the same transaction that records what caused
it, and is marked delivered only after the receiver said so: a crash in between delivers it
again, with the same idempotency key, never not at all. A notification held back (silence,
mute window, inhibition) stays in the outbox with a later attempt time; one that is no
longer wanted (the alert resolved or was acknowledged first) is cancelled, with the reason.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from alerts import schema
from alerts.db import Database, Row, Tx, open_database
from alerts.model import Alert


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


@dataclass(frozen=True)
class Notice:
    """One notification to queue: to one channel (and recipient), about one or more alerts."""

    channel: str
    key: str  # idempotency key: the same for every attempt, and across a crash
    payload: dict[str, Any]
    alert_ids: tuple[str, ...]
    event: str
    recipient: str | None = None
    route: str | None = None
    not_before: float = 0.0


@dataclass(frozen=True)
class OutboxItem:
    id: int
    alert_id: str
    channel: str
    idempotency_key: str
    payload: dict[str, Any]
    attempts: int
    event: str | None
    recipient: str | None
    route: str | None
    alert_ids: tuple[str, ...]
    held: str | None


class AlertStore:
    def __init__(self, target: Path | str, *, busy_timeout: float = 5.0):
        self.target = target  # the action plans open their own connection to it (alerts/plans/)
        self.busy_timeout = busy_timeout
        self.db: Database = open_database(target, busy_timeout)
        schema.create(self.db)

    def _tx(self, statements: Sequence[tuple[str, tuple[Any, ...]]], notices: Sequence[Notice] = ()) -> None:
        with self.db.transaction() as tx:
            for sql, args in statements:
                tx.execute(sql, args)
            for n in notices:
                self._insert_notice(tx, n)

    @staticmethod
    def _insert_notice(tx: Tx, n: Notice) -> None:
        rows = tx.query(
            "INSERT INTO outbox (alert_id, channel, idempotency_key, payload, created_at, next_attempt,"
            " event, recipient, route) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (idempotency_key) DO NOTHING RETURNING id",
            (
                n.alert_ids[0],
                n.channel,
                n.key,
                orjson.dumps(n.payload),
                now_iso(),
                n.not_before,
                n.event,
                n.recipient,
                n.route,
            ),
        )
        for row in rows:  # none when this notice was queued before (same idempotency key)
            for alert_id in n.alert_ids:
                tx.execute(
                    "INSERT INTO notice_alerts (outbox_id, alert_id) VALUES (?, ?)", (row["id"], alert_id)
                )

    @staticmethod
    def _audit(
        alert_id: str | None, actor: str, action: str, detail: str | None
    ) -> tuple[str, tuple[Any, ...]]:
        return (
            "INSERT INTO audit (at, alert_id, actor, action, detail) VALUES (?, ?, ?, ?, ?)",
            (now_iso(), alert_id, actor, action, detail),
        )

    # -- alerts --------------------------------------------------------------------------
    def fire(self, alert: Alert | Mapping[str, Any], notices: Sequence[Notice] = ()) -> str:
        """Record a fired alert with its notices. Idempotent by alert id: the service retries
        a write whose reply was lost (it may have committed), and that must not fail or
        record the alert twice."""
        row = (alert if isinstance(alert, Alert) else Alert.from_row(alert)).as_json()
        cols = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        with self.db.transaction() as tx:
            inserted = tx.query(
                f"INSERT INTO alerts ({cols}) VALUES ({marks}) ON CONFLICT (id) DO NOTHING RETURNING id",
                tuple(row.values()),
            )
            if inserted:
                sql, args = self._audit(row["id"], "carescore", "fired", row["summary"])
                tx.execute(sql, args)
                for n in notices:
                    self._insert_notice(tx, n)
        return str(row["id"])

    def update(
        self,
        alert_id: str,
        changes: dict[str, Any],
        action: str | None,
        notices: Sequence[Notice] = (),
        actor: str = "carescore",
        detail: str | None = None,
    ) -> None:
        stmts: list[tuple[str, tuple[Any, ...]]] = []
        if changes:
            sets = ", ".join(f"{k} = ?" for k in changes)
            stmts.append((f"UPDATE alerts SET {sets} WHERE id = ?", (*changes.values(), alert_id)))
        if action:
            stmts.append(self._audit(alert_id, actor, action, detail))
        self._tx(stmts, list(notices))

    def record(
        self, alert_id: str | None, action: str, detail: str | None = None, actor: str = "carescore"
    ) -> None:
        self._tx([self._audit(alert_id, actor, action, detail)])

    def queue(
        self,
        notices: Sequence[Notice],
        audits: Sequence[tuple[str | None, str, str | None]] = (),
        changes: Sequence[tuple[str, dict[str, Any]]] = (),
    ) -> None:
        """Notices, their audit lines and alert changes (e.g. routed_at) in one transaction:
        a write that fails leaves nothing half done, so the service can simply repeat it."""
        stmts = [self._audit(a, "carescore", action, detail) for a, action, detail in audits]
        for alert_id, change in changes:
            if change:
                sets = ", ".join(f"{k} = ?" for k in change)
                stmts.append((f"UPDATE alerts SET {sets} WHERE id = ?", (*change.values(), alert_id)))
        self._tx(stmts, notices)

    def get(self, alert_id: str) -> Alert | None:
        rows = self.db.query("SELECT * FROM alerts WHERE id = ?", (alert_id,))
        return Alert.from_row(rows[0]) if rows else None

    def query(self, state: str | None = None, limit: int = 200) -> list[Alert]:
        sql = "SELECT * FROM alerts"
        args: list[Any] = []
        if state:
            sql += " WHERE state = ?"
            args.append(state)
        sql += " ORDER BY fired_at DESC LIMIT ?"
        args.append(limit)
        return [Alert.from_row(r) for r in self.db.query(sql, args)]

    def started_between(self, start: str, end: str) -> list[Alert]:
        """Alerts whose breach began in [start, end) (ISO 8601 UTC, as started_at is stored, so
        the text order is the time order), oldest first: a period's review lists them."""
        rows = self.db.query(
            "SELECT * FROM alerts WHERE started_at >= ? AND started_at < ? ORDER BY started_at, id",
            (start, end),
        )
        return [Alert.from_row(r) for r in rows]

    def active(self) -> list[Alert]:
        return self.query("firing", limit=100000)

    def audit(self, alert_id: str) -> list[dict[str, Any]]:
        return self.db.query(
            "SELECT at, actor, action, detail FROM audit WHERE alert_id = ? ORDER BY id", (alert_id,)
        )

    def audit_all(self, limit: int = 1000) -> list[dict[str, Any]]:
        return self.db.query(
            "SELECT at, alert_id, actor, action, detail FROM audit ORDER BY id DESC LIMIT ?", (limit,)
        )

    def notified(self, alert_id: str) -> list[tuple[str, str | None]]:
        """(channel, recipient) of every delivered notice about this alert."""
        rows = self.db.query(
            "SELECT DISTINCT o.channel, o.recipient FROM outbox o JOIN notice_alerts n ON n.outbox_id = o.id"
            " WHERE n.alert_id = ? AND o.delivered_at IS NOT NULL",
            (alert_id,),
        )
        return [(r["channel"], r["recipient"]) for r in rows]

    def routes_told(self, alert_id: str) -> set[str]:
        """Routes whose first notice about this alert is queued (a restart gathers the others)."""
        rows = self.db.query(
            "SELECT DISTINCT o.route FROM outbox o JOIN notice_alerts n ON n.outbox_id = o.id"
            " WHERE n.alert_id = ? AND o.event = 'fired' AND o.route IS NOT NULL",
            (alert_id,),
        )
        return {r["route"] for r in rows}

    # -- outbox --------------------------------------------------------------------------
    def _items(self, rows: list[Row]) -> list[OutboxItem]:
        out = []
        for r in sorted(rows, key=lambda r: r["id"]):
            ids = [
                x["alert_id"]
                for x in self.db.query("SELECT alert_id FROM notice_alerts WHERE outbox_id = ?", (r["id"],))
            ]
            out.append(
                OutboxItem(
                    r["id"],
                    r["alert_id"],
                    r["channel"],
                    r["idempotency_key"],
                    orjson.loads(bytes(r["payload"])),
                    r["attempts"],
                    r["event"],
                    r["recipient"],
                    r["route"],
                    tuple(ids or [r["alert_id"]]),
                    r["held"],
                )
            )
        return out

    def due(self, now: float, limit: int = 100, lease: float = 60.0) -> list[OutboxItem]:
        """Claim what is due: leased for `lease` seconds, so another process sharing the
        database (PostgreSQL) does not send it too, and a process that dies mid-send leaves
        it to be sent again when the lease runs out (at least once, same key)."""
        with self.db.transaction() as tx:
            rows = tx.query(
                "UPDATE outbox SET next_attempt = ? WHERE id IN ("
                " SELECT id FROM outbox WHERE delivered_at IS NULL AND failed_at IS NULL"
                " AND cancelled_at IS NULL AND next_attempt <= ? ORDER BY id LIMIT ?"
                f"{self.db.skip_locked}) RETURNING *",
                (now + lease, now, limit),
            )
        return self._items(rows)

    def pending_for(self, alert_id: str) -> list[OutboxItem]:
        """Notices about this alert not delivered yet (held, waiting, retrying)."""
        rows = self.db.query(
            "SELECT o.* FROM outbox o JOIN notice_alerts n ON n.outbox_id = o.id WHERE n.alert_id = ?"
            " AND o.delivered_at IS NULL AND o.failed_at IS NULL AND o.cancelled_at IS NULL",
            (alert_id,),
        )
        return self._items(rows)

    def delivered(self, item_id: int) -> None:
        self.db.execute(
            "UPDATE outbox SET delivered_at = ?, attempts = attempts + 1, held = NULL WHERE id = ?",
            (now_iso(), item_id),
        )

    def retry_later(self, item_id: int, next_attempt: float, error: str, give_up: bool) -> None:
        self.db.execute(
            "UPDATE outbox SET attempts = attempts + 1, next_attempt = ?, last_error = ?, failed_at = ?"
            " WHERE id = ?",
            (next_attempt, error[:500], now_iso() if give_up else None, item_id),
        )

    def hold(self, item: OutboxItem, until: float, reason: str) -> None:
        """Not now (silence, mute window, inhibition): look again at `until`; audited once."""
        stmts: list[tuple[str, tuple[Any, ...]]] = [
            ("UPDATE outbox SET next_attempt = ?, held = ? WHERE id = ?", (until, reason, item.id))
        ]
        if item.held != reason:
            stmts += [
                self._audit(a, "carescore", "notice held", f"{item.channel} {item.recipient or ''}: {reason}")
                for a in item.alert_ids
            ]
        self._tx(stmts)

    def cancel(self, item: OutboxItem, reason: str) -> None:
        stmts: list[tuple[str, tuple[Any, ...]]] = [
            ("UPDATE outbox SET cancelled_at = ?, last_error = ? WHERE id = ?", (now_iso(), reason, item.id))
        ]
        stmts += [
            self._audit(
                a, "carescore", "notice cancelled", f"{item.channel} {item.recipient or ''}: {reason}"
            )
            for a in item.alert_ids
        ]
        self._tx(stmts)

    def _decode(self, rows: list[Row]) -> list[dict[str, Any]]:
        return [{**r, "payload": orjson.loads(bytes(r["payload"]))} for r in rows]

    def outbox(self) -> list[dict[str, Any]]:
        return self._decode(self.db.query("SELECT * FROM outbox ORDER BY id"))

    def notices(self, alert_id: str) -> list[dict[str, Any]]:
        return self._decode(
            self.db.query(
                "SELECT o.* FROM outbox o JOIN notice_alerts n ON n.outbox_id = o.id"
                " WHERE n.alert_id = ? ORDER BY o.id",
                (alert_id,),
            )
        )

    def failed(self) -> int:
        return int(self.db.query("SELECT COUNT(*) AS n FROM outbox WHERE failed_at IS NOT NULL")[0]["n"])

    # -- silences --------------------------------------------------------------------------
    def add_silence(self, silence: dict[str, Any]) -> None:
        self._tx(
            [
                (
                    "INSERT INTO silences (id, matchers, starts_at, ends_at, created_by, comment, created_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        silence["id"],
                        orjson.dumps(silence["matchers"]).decode(),
                        silence["starts_at"],
                        silence["ends_at"],
                        silence["created_by"],
                        silence.get("comment"),
                        now_iso(),
                    ),
                ),
                self._audit(None, silence["created_by"], "silence created", orjson.dumps(silence).decode()),
            ]
        )

    def expire_silence(self, silence_id: str, actor: str) -> bool:
        if not self.db.query(
            "SELECT 1 AS found FROM silences WHERE id = ? AND expired_at IS NULL", (silence_id,)
        ):
            return False
        self._tx(
            [
                ("UPDATE silences SET expired_at = ? WHERE id = ?", (now_iso(), silence_id)),
                self._audit(None, actor, "silence expired", silence_id),
            ]
        )
        return True

    def silences(self, include_expired: bool = False) -> list[dict[str, Any]]:
        where = "" if include_expired else " WHERE expired_at IS NULL"
        rows = self.db.query(f"SELECT * FROM silences{where} ORDER BY starts_at")
        return [{**r, "matchers": orjson.loads(r["matchers"])} for r in rows]

    # -- feeds -----------------------------------------------------------------------------
    def save_feeds(self, seen: dict[tuple[str, str, str], float]) -> None:
        """The later of the stored and the given time: several gateways each hear some feeds."""
        with self.db.transaction() as tx:
            for (source, facility, unit), last in seen.items():
                tx.execute(
                    "INSERT INTO feed_seen (source, facility, unit, last_seen) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (source, facility, unit) DO UPDATE SET last_seen = CASE"
                    " WHEN excluded.last_seen > feed_seen.last_seen THEN excluded.last_seen"
                    " ELSE feed_seen.last_seen END",
                    (source, facility, unit, last),
                )

    def load_feeds(self) -> dict[tuple[str, str, str], float]:
        rows = self.db.query("SELECT source, facility, unit, last_seen FROM feed_seen")
        return {(r["source"], r["facility"], r["unit"]): r["last_seen"] for r in rows}

    def close(self) -> None:
        self.db.close()
