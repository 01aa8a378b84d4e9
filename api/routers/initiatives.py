"""Initiatives: time-bound improvement projects for objectives (kpi_defs/objectives), with
milestones; progress is the share of milestones done. An initiative names no unit, so only a
principal allowed everywhere (admin) manages them; every change is an event of the initiative."""

from __future__ import annotations

from datetime import date
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import Field

from api.backend import Backend
from api.plans import PlanBody, due_time, invalid, known_place, plans_of, refusals
from api.problems import Problem
from api.security.auth import PrincipalDep, require, require_unit
from api.security.roles import Permission
from api.views import BackendDep

router = APIRouter(prefix="/api/v1/initiatives", tags=["plans"])

Status = Literal["planned", "active", "on_hold", "done", "cancelled"]
MANAGE = [Depends(require(Permission.MANAGE_ACTIONS))]
READ = [Depends(require(Permission.VIEW_KPIS))]


class NewMilestone(PlanBody):
    title: str = Field(min_length=1, max_length=300)
    due: str = Field(description="ISO 8601 date (due by the end of that day, site time) or date-time")
    done: bool = False


class MilestoneChange(PlanBody):
    title: str | None = Field(default=None, min_length=1, max_length=300)
    due: str | None = None
    done: bool | None = None


class NewInitiative(PlanBody):
    title: str = Field(min_length=1, max_length=300)
    objectives: list[str] = Field(min_length=1, description="objective ids (GET /api/v1/objectives)")
    facility: str | None = None
    owner: str = Field(min_length=1, max_length=200)
    starts: date
    ends: date
    status: Status = "planned"
    description: str | None = Field(default=None, max_length=4000)
    milestones: list[NewMilestone] = Field(default_factory=list)


class InitiativeChange(PlanBody):
    title: str | None = Field(default=None, min_length=1, max_length=300)
    objectives: list[str] | None = Field(default=None, min_length=1)
    owner: str | None = Field(default=None, min_length=1, max_length=200)
    starts: date | None = None
    ends: date | None = None
    status: Status | None = None
    description: str | None = Field(default=None, max_length=4000)


def _objectives(backend: Backend, ids: list[str]) -> list[str]:
    unknown = [i for i in ids if i not in backend.catalogue.objectives]
    if unknown:
        raise invalid("objectives", f"unknown objective(s) {', '.join(unknown)}; GET /api/v1/objectives")
    return ids


def _span(starts: str, ends: str) -> None:
    if ends < starts:
        raise invalid("ends", f"{ends} is before starts {starts}")


def _found(backend: Backend, initiative_id: str) -> dict[str, Any]:
    found = plans_of(backend).get_initiative(initiative_id)
    if found is None:
        raise Problem(404, "Unknown initiative", f"no initiative with id {initiative_id!r}")
    return found


def _answer(backend: Backend, initiative: dict[str, Any]) -> dict[str, Any]:
    return {**initiative, "events": plans_of(backend).events("initiative", initiative["id"])}


@router.post("", status_code=201, dependencies=MANAGE)
async def create_initiative(
    backend: BackendDep, principal: PrincipalDep, body: NewInitiative
) -> dict[str, Any]:
    require_unit(principal, Permission.MANAGE_ACTIONS, None)
    facility, _, _ = known_place(backend, body.facility, None, None)
    fields = body.model_dump(mode="json", exclude={"milestones"})
    fields |= {"facility": facility, "objectives": _objectives(backend, body.objectives)}
    _span(fields["starts"], fields["ends"])
    milestones = [
        {**m.model_dump(), "due_ts": due_time(backend, m.due, f"milestones.{i}.due")}
        for i, m in enumerate(body.milestones)
    ]
    created = plans_of(backend).create_initiative(fields, milestones, principal.name)
    return _answer(backend, created)


@router.get("", dependencies=READ)
async def list_initiatives(
    backend: BackendDep,
    objective: str | None = None,
    facility: str | None = None,
    owner: str | None = None,
    status: Status | None = None,
    limit: int = Query(default=500, ge=1, le=10000),
) -> dict[str, Any]:
    filters = {"objective": objective, "facility": facility, "owner": owner, "status": status}
    return {"initiatives": plans_of(backend).list_initiatives(filters, limit)}


@router.get("/{initiative_id}", dependencies=READ)
async def get_initiative(backend: BackendDep, initiative_id: str) -> dict[str, Any]:
    return _answer(backend, _found(backend, initiative_id))


@router.patch("/{initiative_id}", dependencies=MANAGE)
async def change_initiative(
    backend: BackendDep, principal: PrincipalDep, initiative_id: str, body: InitiativeChange
) -> dict[str, Any]:
    current = _found(backend, initiative_id)
    require_unit(principal, Permission.MANAGE_ACTIONS, None)
    fields = body.model_dump(mode="json", exclude_unset=True)
    for name in ("title", "objectives", "owner", "starts", "ends", "status"):
        if name in fields and fields[name] is None:
            raise invalid(name, "may be changed, not removed")
    if "objectives" in fields:
        _objectives(backend, fields["objectives"])
    _span(fields.get("starts", current["starts"]), fields.get("ends", current["ends"]))
    with refusals():
        changed = plans_of(backend).update_initiative(initiative_id, fields, principal.name)
    return _answer(backend, changed)


@router.post("/{initiative_id}/milestones", status_code=201, dependencies=MANAGE)
async def add_milestone(
    backend: BackendDep, principal: PrincipalDep, initiative_id: str, body: NewMilestone
) -> dict[str, Any]:
    _found(backend, initiative_id)
    require_unit(principal, Permission.MANAGE_ACTIONS, None)
    milestone = {**body.model_dump(), "due_ts": due_time(backend, body.due)}
    with refusals():
        changed = plans_of(backend).add_milestone(initiative_id, milestone, principal.name)
    return _answer(backend, changed)


@router.patch("/{initiative_id}/milestones/{milestone_id}", dependencies=MANAGE)
async def change_milestone(
    backend: BackendDep,
    principal: PrincipalDep,
    initiative_id: str,
    milestone_id: str,
    body: MilestoneChange,
) -> dict[str, Any]:
    _found(backend, initiative_id)
    require_unit(principal, Permission.MANAGE_ACTIONS, None)
    fields = body.model_dump(exclude_unset=True)
    for name, value in fields.items():
        if value is None:
            raise invalid(name, "may be changed, not removed")
    if "due" in fields:
        fields["due_ts"] = due_time(backend, fields["due"])
    with refusals():
        changed = plans_of(backend).update_milestone(initiative_id, milestone_id, fields, principal.name)
    return _answer(backend, changed)
