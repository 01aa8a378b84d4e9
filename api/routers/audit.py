"""The audit log, for admins: who wrote what, and who read patient-level data, when."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request

from api.problems import Problem
from api.security.audit import AuditLog
from api.security.auth import require
from api.security.roles import Permission
from api.views import parse_time

router = APIRouter(prefix="/api/v1/audit", tags=["security"])


@router.get("", dependencies=[Depends(require(Permission.ADMIN))])
async def audit_entries(
    request: Request,
    since: str | None = Query(default=None, description="ISO 8601: entries at or after this time"),
    principal: str | None = Query(default=None, description="subject or name of the caller"),
    limit: int = Query(default=100, ge=1, le=10000),
) -> dict[str, Any]:
    """Newest first: time, principal (subject, name, roles), method, route, status, client."""
    log: AuditLog | None = request.app.state.audit
    if log is None:
        raise Problem(501, "No audit log", "this API process keeps no audit log")
    start = parse_time(since, "since")
    entries = log.query(since=start.timestamp() if start else None, subject=principal, limit=limit)
    return {"entries": entries}
