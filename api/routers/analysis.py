"""The analysis of a KPI for a period (what happened, why, what next): the commentary a monthly
review reads beside the numbers. Each PUT is a new version; the author is the principal. Of one
place (facility, department or unit; default the first facility); clinicians write their units'."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from pydantic import Field

from api.backend import Backend
from api.plans import PlanBody, known_place, plans_of
from api.security.auth import PrincipalDep, require, require_unit
from api.security.roles import Permission
from api.views import BackendDep, kpi_or_404, parse_period, site_zone

router = APIRouter(prefix="/api/v1/kpis", tags=["plans"])


class Analysis(PlanBody):
    happened: str = Field(min_length=1, max_length=10000, description="what happened")
    why: str = Field(min_length=1, max_length=10000, description="why it happened")
    next: str = Field(min_length=1, max_length=10000, description="what is done next")


def _where(
    backend: Backend, kpi_id: str, period: str, place: tuple[str | None, str | None, str | None]
) -> tuple[str, str, str]:
    kpi_or_404(backend, kpi_id)
    parse_period(period, site_zone(backend))  # a month (2026-11) or a day; 422 otherwise
    facility, department, unit = known_place(backend, *place)
    return (facility, department or "", unit or "")


def _answer(found: dict[str, Any], key: tuple[str, str, str]) -> dict[str, Any]:
    facility, department, unit = key
    return {**found, "group": {"facility": facility, "department": department or None, "unit": unit or None}}


@router.get("/{kpi_id}/analysis/{period}", dependencies=[Depends(require(Permission.VIEW_KPIS))])
async def get_analysis(
    backend: BackendDep,
    kpi_id: str,
    period: str,
    facility: str | None = None,
    department: str | None = None,
    unit: str | None = None,
) -> dict[str, Any]:
    key = _where(backend, kpi_id, period, (facility, department, unit))
    return _answer(plans_of(backend).analysis(kpi_id, period, key), key)


@router.put("/{kpi_id}/analysis/{period}", dependencies=[Depends(require(Permission.MANAGE_ACTIONS))])
async def put_analysis(
    backend: BackendDep,
    principal: PrincipalDep,
    kpi_id: str,
    period: str,
    body: Analysis,
    facility: str | None = None,
    department: str | None = None,
    unit: str | None = None,
) -> dict[str, Any]:
    key = _where(backend, kpi_id, period, (facility, department, unit))
    require_unit(principal, Permission.MANAGE_ACTIONS, key[2] or None)
    text = body.model_dump()
    return _answer(plans_of(backend).put_analysis(kpi_id, period, key, text, principal.name), key)
