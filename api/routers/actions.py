"""Actions: short-term corrective items on a KPI at a place, opened by hand or from an alert,
followed to closure (open -> in_progress -> done, or cancelled). Who created or changed one is
the signed-in principal, never the body; every change is an event of the action (and the request
is in the audit log). Clinicians manage actions of their units only."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import Field

from api.backend import Backend
from api.plans import PlanBody, due_time, invalid, known_place, plans_of, refusals
from api.problems import Problem
from api.security.auth import PrincipalDep, require, require_unit
from api.security.roles import Permission
from api.views import BackendDep

router = APIRouter(prefix="/api/v1/actions", tags=["plans"])

Status = Literal["open", "in_progress", "done", "cancelled"]


class NewAction(PlanBody):
    title: str = Field(min_length=1, max_length=300)
    kpi: str | None = Field(default=None, description="required unless alert_id names a KPI's alert")
    facility: str | None = None
    department: str | None = None
    unit: str | None = None
    alert_id: str | None = Field(
        default=None, description="the alert it answers: its KPI and place are copied"
    )
    owner: str = Field(min_length=1, max_length=200, description="staff id (routes.yaml people) or name")
    due: str = Field(description="ISO 8601 date (due by the end of that day, site time) or date-time")
    notes: str | None = Field(default=None, max_length=4000)


class ActionChange(PlanBody):
    title: str | None = Field(default=None, min_length=1, max_length=300)
    owner: str | None = Field(default=None, min_length=1, max_length=200)
    due: str | None = None
    status: Status | None = None
    notes: str | None = Field(default=None, max_length=4000)


def _what(backend: Backend, body: NewAction) -> dict[str, Any]:
    """The action's KPI and place: the alert's when it answers one, else the body's (checked)."""
    place = {"facility": body.facility, "department": body.department, "unit": body.unit}
    kpi = body.kpi
    if body.alert_id is not None:
        alert = backend.alerts.get(body.alert_id)
        if alert is None:
            raise Problem(404, "Unknown alert", f"alert_id: no alert with id {body.alert_id!r}")
        row = alert.as_json()
        if row["kpi"] not in backend.catalogue.kpis:
            raise invalid("alert_id", f"alert {body.alert_id!r} is not a KPI's alert ({row['kpi']})")
        if kpi is not None and kpi != row["kpi"]:
            raise invalid("kpi", f"the alert is about {row['kpi']!r}, not {kpi!r}")
        kpi = row["kpi"]
        place = {k: row[k] for k in place}
    if kpi is None:
        raise invalid("kpi", "required (or alert_id)")
    if kpi not in backend.catalogue.kpis:
        raise invalid("kpi", f"unknown KPI {kpi!r}; GET /api/v1/kpis lists them")
    facility, department, unit = known_place(backend, place["facility"], place["department"], place["unit"])
    return {"kpi": kpi, "facility": facility, "department": department, "unit": unit}


def _unknown(action_id: str) -> Problem:
    return Problem(404, "Unknown action", f"no action with id {action_id!r}")


@router.post("", status_code=201, dependencies=[Depends(require(Permission.MANAGE_ACTIONS))])
async def create_action(backend: BackendDep, principal: PrincipalDep, body: NewAction) -> dict[str, Any]:
    what = _what(backend, body)
    require_unit(principal, Permission.MANAGE_ACTIONS, what["unit"])
    fields = {**what, "title": body.title, "alert_id": body.alert_id, "owner": body.owner}
    fields |= {"due": body.due, "due_ts": due_time(backend, body.due), "notes": body.notes}
    return plans_of(backend).create_action(fields, principal.name)


@router.get("", dependencies=[Depends(require(Permission.VIEW_KPIS))])
async def list_actions(
    backend: BackendDep,
    kpi: str | None = None,
    facility: str | None = None,
    department: str | None = None,
    unit: str | None = None,
    owner: str | None = None,
    status: Status | None = None,
    alert_id: str | None = None,
    limit: int = Query(default=500, ge=1, le=10000),
) -> dict[str, Any]:
    filters = {"kpi": kpi, "facility": facility, "department": department, "unit": unit}
    filters |= {"owner": owner, "status": status, "alert_id": alert_id}
    return {"actions": plans_of(backend).list_actions(filters, limit)}


@router.get("/{action_id}", dependencies=[Depends(require(Permission.VIEW_KPIS))])
async def get_action(backend: BackendDep, action_id: str) -> dict[str, Any]:
    action = plans_of(backend).get_action(action_id)
    if action is None:
        raise _unknown(action_id)
    return {**action, "events": plans_of(backend).events("action", action_id)}


@router.patch("/{action_id}", dependencies=[Depends(require(Permission.MANAGE_ACTIONS))])
async def change_action(
    backend: BackendDep, principal: PrincipalDep, action_id: str, body: ActionChange
) -> dict[str, Any]:
    plans = plans_of(backend)
    action = plans.get_action(action_id)
    if action is None:
        raise _unknown(action_id)
    require_unit(principal, Permission.MANAGE_ACTIONS, action["unit"])
    fields = body.model_dump(exclude_unset=True)
    for name in ("title", "owner", "due", "status"):
        if name in fields and fields[name] is None:
            raise invalid(name, "may be changed, not removed")
    if "due" in fields:
        fields["due_ts"] = due_time(backend, fields["due"])
    with refusals():
        changed = plans.update_action(action_id, fields, principal.name)
    return {**changed, "events": plans.events("action", action_id)}
