"""KPI definitions, their live values by place, and their history."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Query

from api.security.auth import PrincipalDep, require
from api.security.roles import Permission
from api.views import (
    BackendDep,
    hidden_below,
    kpi_or_404,
    kpi_summary,
    levels_json,
    parse_time,
    sample_json,
    shown,
)
from engine.samples import Sample

router = APIRouter(prefix="/api/v1/kpis", tags=["kpis"])


def _matches(s: Sample, facility: str | None, department: str | None, unit: str | None) -> bool:
    g = s.group
    return (
        (facility is None or g.facility == facility)
        and (department is None or g.department == department)
        and (unit is None or g.unit == unit)
    )


@router.get("", dependencies=[Depends(require(Permission.VIEW_KPIS))])
async def list_kpis(backend: BackendDep) -> dict[str, Any]:
    return {"kpis": [kpi_summary(k) for k in backend.catalogue]}


@router.get("/{kpi_id}", dependencies=[Depends(require(Permission.VIEW_KPIS))])
async def get_kpi(
    backend: BackendDep,
    principal: PrincipalDep,
    kpi_id: str,
    facility: str | None = None,
    department: str | None = None,
    unit: str | None = None,
) -> dict[str, Any]:
    kpi = kpi_or_404(backend, kpi_id)
    unit_types = backend.places.unit_types()
    k = hidden_below(backend, principal)
    values = [
        shown(kpi, {**sample_json(s), "levels": levels_json(kpi, unit_types.get(s.group.key))}, k)
        for s in backend.board.for_kpi(kpi_id)
        if _matches(s, facility, department, unit)
    ]
    values.sort(
        key=lambda v: (
            v["group"]["facility"],
            v["group"]["department"] or "",
            v["group"]["unit"] or "",
        )
    )
    return {
        **kpi_summary(kpi),
        "description": kpi.description,
        "definition": kpi.definition,
        "for": kpi.for_,
        "min_samples": kpi.min_samples,
        "values": values,
    }


@router.get("/{kpi_id}/history", dependencies=[Depends(require(Permission.VIEW_HISTORY))])
async def kpi_history(
    backend: BackendDep,
    principal: PrincipalDep,
    kpi_id: str,
    from_: str | None = Query(default=None, alias="from"),
    to: str | None = None,
    facility: str | None = None,
    department: str | None = None,
    unit: str | None = None,
    level: str | None = Query(default=None, pattern="^(facility|department|unit)$"),
    limit: int = Query(default=1000, ge=1, le=100000),
    with_: str | None = Query(
        default=None, alias="with", pattern="^actions$", description="actions: add when actions opened/closed"
    ),
) -> dict[str, Any]:
    kpi = kpi_or_404(backend, kpi_id)
    start, end = parse_time(from_, "from"), parse_time(to, "to")
    samples = await asyncio.wrap_future(
        backend.history.query_later(
            kpi_id,
            facility=facility,
            department=department,
            unit=unit,
            level=level,
            start=start,
            end=end,
            limit=limit,
        )
    )
    k = hidden_below(backend, principal)
    answer: dict[str, Any] = {"kpi": kpi_id, "windows": [shown(kpi, sample_json(s), k) for s in samples]}
    if with_ == "actions":  # markers for the chart: did the actions work?
        place = {"facility": facility, "department": department, "unit": unit}
        answer["actions"] = backend.alerts.plans.markers(
            kpi_id, place, start.timestamp() if start else None, end.timestamp() if end else None
        )
    return answer
