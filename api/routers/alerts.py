"""Alerts: list, one with its audit trail and notices, acknowledge (clinicians: their units only;
who acknowledged is the signed-in principal, never what the request says)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from api.problems import Problem
from api.security.auth import PrincipalDep, require, require_unit
from api.security.roles import Permission
from api.views import BackendDep

router = APIRouter(prefix="/api/v1/alerts", tags=["alerts"])

NOTICE_FIELDS = (
    "channel",
    "recipient",
    "event",
    "created_at",
    "delivered_at",
    "held",
    "cancelled_at",
    "failed_at",
    "attempts",
    "last_error",
)


class AckRequest(BaseModel):
    by: str | None = Field(
        default=None, max_length=200, description="ignored: who acknowledges is the signed-in caller"
    )
    note: str | None = Field(default=None, max_length=2000)


def _unknown(alert_id: str) -> Problem:
    return Problem(404, "Unknown alert", f"no alert with id {alert_id!r}")


@router.get("", dependencies=[Depends(require(Permission.VIEW_ALERTS))])
async def list_alerts(
    backend: BackendDep,
    state: str | None = Query(default=None, pattern="^(firing|resolved)$"),
    limit: int = Query(default=200, ge=1, le=10000),
) -> dict[str, Any]:
    return {"alerts": [a.as_json() for a in backend.alerts.query(state, limit)]}


@router.get("/{alert_id}", dependencies=[Depends(require(Permission.VIEW_ALERTS))])
async def get_alert(backend: BackendDep, alert_id: str) -> dict[str, Any]:
    alert = backend.alerts.get(alert_id)
    if alert is None:
        raise _unknown(alert_id)
    notices = [{k: n[k] for k in NOTICE_FIELDS} for n in backend.alerts.notices(alert_id)]
    return {**alert.as_json(), "audit": backend.alerts.audit(alert_id), "notices": notices}


@router.post("/{alert_id}/ack", dependencies=[Depends(require(Permission.ACK_ALERTS))])
async def ack_alert(
    backend: BackendDep, alert_id: str, principal: PrincipalDep, body: AckRequest | None = None
) -> dict[str, Any]:
    found = backend.alerts.get(alert_id)
    if found is None:
        raise _unknown(alert_id)
    require_unit(principal, Permission.ACK_ALERTS, found.as_json().get("unit"))
    alert = backend.alerts.acknowledge(alert_id, principal.name, body.note if body else None)
    if alert is None:
        raise _unknown(alert_id)
    return alert.as_json()
