"""A KPI over a period, computed from the event log."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Query

from api.problems import Problem
from api.security.auth import PrincipalDep, require
from api.security.roles import Permission
from api.views import BackendDep, hidden_below, kpi_or_404, kpi_summary, parse_time, shown

router = APIRouter(prefix="/api/v1/reports", tags=["reports"])


@router.get("/{kpi_id}", dependencies=[Depends(require(Permission.VIEW_REPORTS))])
async def period_report(
    backend: BackendDep,
    principal: PrincipalDep,
    kpi_id: str,
    from_: str = Query(alias="from", description="start of the period (ISO 8601, inclusive)"),
    to: str = Query(description="end of the period (ISO 8601, exclusive)"),
    by: str = Query(default="unit", pattern="^(unit|department|facility)$"),
) -> dict[str, Any]:
    kpi = kpi_or_404(backend, kpi_id)
    start, end = parse_time(from_, "from"), parse_time(to, "to")
    assert start is not None and end is not None
    if end <= start:
        raise Problem(400, "Invalid period", f"to ({to}) must be after from ({from_})")
    k = hidden_below(backend, principal)
    rows = await asyncio.to_thread(backend.report, kpi_id, start, end, by)  # type: ignore[arg-type]
    return {
        "kpi": kpi_summary(kpi),
        "period": {"from": start.isoformat(), "to": end.isoformat()},
        "by": by,
        "computed_from": "event log (polars)",
        "rows": [shown(kpi, r.to_json(), k) for r in rows],
    }
