"""KPIs as FHIR R4 Measures, and period reports as FHIR R4 MeasureReports.

GET /api/v1/measures/{kpi} is the Measure; GET /api/v1/measure-reports/{kpi}?period=... the
MeasureReport of the period report /api/v1/reports/{kpi} serves (the same backend.report
over the event log, by facility and by unit: nothing is computed twice).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from api.fhir_measure import FHIR_JSON, measure, measure_report
from api.security.auth import PrincipalDep, require
from api.security.roles import Permission
from api.views import PERIOD_HELP, BackendDep, hidden_below, kpi_or_404, parse_period, site_zone
from engine.report_rows import ReportRow
from engine.smallcells import too_small

router = APIRouter(prefix="/api/v1", tags=["fhir measures"])


class FhirResponse(JSONResponse):
    media_type = FHIR_JSON


def _measure_url(request: Request, kpi_id: str) -> str:
    return str(request.url_for("get_measure", kpi_id=kpi_id))


@router.get(
    "/measures/{kpi_id}",
    dependencies=[Depends(require(Permission.VIEW_KPIS))],
    response_class=FhirResponse,
    responses={200: {"content": {FHIR_JSON: {}}, "description": "an R4 Measure"}},
)
async def get_measure(backend: BackendDep, request: Request, kpi_id: str) -> FhirResponse:
    kpi = kpi_or_404(backend, kpi_id)
    return FhirResponse(measure(kpi, _measure_url(request, kpi_id)))


@router.get(
    "/measure-reports/{kpi_id}",
    dependencies=[Depends(require(Permission.VIEW_REPORTS))],
    response_class=FhirResponse,
    responses={200: {"content": {FHIR_JSON: {}}, "description": "an R4 summary MeasureReport"}},
)
async def get_measure_report(
    backend: BackendDep,
    principal: PrincipalDep,
    request: Request,
    kpi_id: str,
    period: str = Query(description=PERIOD_HELP, max_length=80),
) -> FhirResponse:
    kpi = kpi_or_404(backend, kpi_id)
    start, end = parse_period(period, site_zone(backend))
    by_facility = await asyncio.to_thread(backend.report, kpi_id, start, end, "facility")
    by_unit = await asyncio.to_thread(backend.report, kpi_id, start, end, "unit")
    k = hidden_below(backend, principal)

    def hidden(row: ReportRow) -> bool:
        return k is not None and too_small(kpi, row.n, row.numerator, row.denominator, k)

    url = _measure_url(request, kpi_id)
    body: dict[str, Any] = measure_report(
        kpi, url, start, end, by_facility, by_unit, datetime.now(UTC), hidden
    )
    return FhirResponse(body)
