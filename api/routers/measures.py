"""KPIs as FHIR R4 Measures, and period reports as FHIR R4 MeasureReports.

GET /api/v1/measures/{kpi} is the Measure; GET /api/v1/measure-reports/{kpi}?period=... the
MeasureReport of the period report /api/v1/reports/{kpi} serves (the same backend.report
over the event log, by facility and by unit: nothing is computed twice).
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from api.fhir_measure import FHIR_JSON, measure, measure_report
from api.problems import Problem
from api.security.auth import PrincipalDep, require
from api.security.roles import Permission
from api.views import BackendDep, hidden_below, kpi_or_404
from engine.report_rows import ReportRow
from engine.smallcells import too_small
from engine.windows import zone_of

router = APIRouter(prefix="/api/v1", tags=["fhir measures"])

_MONTH = re.compile(r"^(\d{4})-(\d{2})$")
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
PERIOD_HELP = (
    "a month (2026-11), a day (2026-11-30), both in the site's time zone, or start/end ISO 8601 "
    "date-times (end exclusive; without an offset UTC)"
)


class FhirResponse(JSONResponse):
    media_type = FHIR_JSON


def _bad(period: str, why: str) -> Problem:
    return Problem(422, "Invalid period", f"period={period!r}: {why}; use {PERIOD_HELP}")


def _instant(value: str, period: str) -> datetime:
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise _bad(period, f"{value!r} is not an ISO 8601 date/time") from exc
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def parse_period(period: str, zone: tzinfo) -> tuple[datetime, datetime]:
    """[start, end) of a month, a day (local midnights in zone) or an explicit interval."""
    try:
        if m := _MONTH.match(period):
            year, month = int(m.group(1)), int(m.group(2))
            first = date(year, month, 1)
            following = date(year + month // 12, month % 12 + 1, 1)
            start = datetime(first.year, first.month, 1, tzinfo=zone)
            end = datetime(following.year, following.month, 1, tzinfo=zone)
        elif _DAY.match(period):
            day = date.fromisoformat(period)
            start = datetime(day.year, day.month, day.day, tzinfo=zone)
            after = day + timedelta(days=1)
            end = datetime(after.year, after.month, after.day, tzinfo=zone)
        elif period.count("/") == 1:
            first_s, last_s = period.split("/")
            start, end = _instant(first_s, period), _instant(last_s, period)
        else:
            raise _bad(period, "not a month, a day or start/end")
        # both ends must be real instants a report can be computed over
        _ = (start.timestamp(), end.timestamp())
    except (ValueError, OverflowError) as exc:
        raise _bad(period, str(exc)) from exc
    if end <= start:
        raise _bad(period, "the end must be after the start")
    return start, end


def _zone(backend: object) -> tzinfo:
    """The site's time zone where the backend has settings (the embedded runtime), else UTC."""
    name = getattr(getattr(backend, "settings", None), "timezone", None)
    try:
        return zone_of(name) if isinstance(name, str) or name is None else UTC
    except Exception:  # an unknown zone name: settings validation reports it, UTC here
        return UTC


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
    start, end = parse_period(period, _zone(backend))
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
