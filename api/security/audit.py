"""The audit log: every write (POST, PUT, PATCH, DELETE — ingest included) and every read of
patient-level data (dead letters hold whole messages), whether it was allowed or not.

One row per request in audit.sqlite (data folder): time, principal (subject, name, roles; "-"
when no credentials were accepted), method, route template (/api/v1/alerts/{alert_id}/ack, not
the path: ids of patients' data never reach it), status, client address. Never a token, a
query string or a body. Admins read it at GET /api/v1/audit.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engine.sqlite import SQLiteFile

log = logging.getLogger(__name__)

WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: GET routes whose answers hold patient-level data (raw HL7/FHIR/feed rows).
PATIENT_READS = ("/api/v1/dead-letters",)

SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    subject TEXT NOT NULL,
    name TEXT,
    roles TEXT NOT NULL,
    method TEXT NOT NULL,
    route TEXT NOT NULL,
    status INTEGER NOT NULL,
    client TEXT
);
CREATE INDEX IF NOT EXISTS audit_time ON audit (time);
CREATE INDEX IF NOT EXISTS audit_subject ON audit (subject, time);
"""


class AuditLog:
    """audit.sqlite. retention: entries older than this (seconds) are deleted now and then."""

    def __init__(self, path: Path, *, retention: float | None = None):
        # NORMAL: WAL commits without an fsync each (a power cut may lose the last entries, never
        # corrupt the file); every ingest request writes one
        self.file = SQLiteFile(path, synchronous="NORMAL")
        self.file.script(SCHEMA)
        self.retention = retention
        self._appended = 0

    def close(self) -> None:
        self.file.close()

    def append(
        self,
        *,
        subject: str,
        name: str | None,
        roles: list[str],
        method: str,
        route: str,
        status: int,
        client: str | None,
        when: float | None = None,
    ) -> None:
        self.file.execute(
            "INSERT INTO audit (time, subject, name, roles, method, route, status, client) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (when or time.time(), subject, name, ",".join(sorted(roles)), method, route, status, client),
        )
        self._appended += 1
        if self.retention and self._appended % 1000 == 0:
            self.file.execute("DELETE FROM audit WHERE time < ?", (time.time() - self.retention,))

    def query(
        self, *, since: float | None = None, subject: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Newest first."""
        where: list[str] = []
        args: list[Any] = []
        if since is not None:
            where.append("time >= ?")
            args.append(since)
        if subject is not None:
            where.append("(subject = ? OR name = ?)")
            args += [subject, subject]
        sql = "SELECT seq, time, subject, name, roles, method, route, status, client FROM audit"
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = self.file.query(sql + " ORDER BY seq DESC LIMIT ?", [*args, limit])
        keys = ("seq", "time", "subject", "name", "roles", "method", "route", "status", "client")
        entries = [dict(zip(keys, row, strict=True)) for row in rows]
        for entry in entries:
            entry["roles"] = entry["roles"].split(",") if entry["roles"] else []
        return entries


def audited(method: str, route: str) -> bool:
    return method in WRITES or (method == "GET" and route.startswith(PATIENT_READS))


class AuditMiddleware:
    """Appends one entry per audited request once its answer has started."""

    def __init__(self, app: ASGIApp, *, log_to: AuditLog):
        self.app = app
        self.audit = log_to

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = [500]

        async def keep_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, keep_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "(no route)"
            method = scope["method"]
            if audited(method, template):
                self._record(scope, method, template, status[0])

    def _record(self, scope: Scope, method: str, route: str, status: int) -> None:
        principal = scope.get("state", {}).get("principal")
        client = scope.get("client")
        try:
            self.audit.append(
                subject=principal.subject if principal else "-",
                name=principal.name if principal else None,
                roles=list(principal.roles) if principal else [],
                method=method,
                route=route,
                status=status,
                client=client[0] if client else None,
            )
        except Exception:  # the request was answered; a failed entry is logged, loudly
            log.exception("an audit entry could not be written", extra={"route": route})
