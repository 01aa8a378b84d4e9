"""Benchmarking: a KPI's league table of places over a period, from the same period reports
as /api/v1/reports (backend.report over the event log), against target, the KPI's external
benchmark and the peer benchmark sets (scorecard.benchmarks)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Query

from api.security.auth import require
from api.security.roles import Permission
from api.views import PERIOD_HELP, BackendDep, kpi_or_404, kpi_summary, parse_period, site_zone
from engine.benchmarks import league_table

router = APIRouter(prefix="/api/v1/compare", tags=["benchmarking"])


@router.get("/{kpi_id}", dependencies=[Depends(require(Permission.VIEW_REPORTS))])
async def compare(
    backend: BackendDep,
    kpi_id: str,
    period: str = Query(description=PERIOD_HELP, max_length=80),
    by: str = Query(default="unit", pattern="^(unit|department|facility)$"),
) -> dict[str, Any]:
    kpi = kpi_or_404(backend, kpi_id)
    start, end = parse_period(period, site_zone(backend))
    rows = await asyncio.to_thread(backend.report, kpi_id, start, end, by)  # type: ignore[arg-type]
    peers = backend.peers.get(kpi_id, [])
    return {
        "kpi": kpi_summary(kpi),
        "period": {"from": start.isoformat(), "to": end.isoformat()},
        "by": by,
        "benchmark": kpi.benchmark.model_dump() if kpi.benchmark else None,
        "peers": [p.model_dump(exclude={"kpi"}) for p in peers],
        "rows": league_table(kpi, rows, backend.places.unit_types(), peers),
    }
