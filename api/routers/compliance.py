"""The compliance view: KPIs held to a rule of law or accreditation (`compliance:` in kpi_defs),
each place's status now against its limit, and the minutes out of compliance in a period.

The minutes come from the period report of the KPI that counts them (compliance.minutes_out,
aggregate minutes_over) over the event log: it integrates the ratio between the events that
change it, to the second, over exactly the period asked for. The history of closed windows could
only add up whole 12-hour windows, which a month in the site's time zone need not align with.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Query

from api.backend import Backend
from api.security.auth import require
from api.security.roles import Permission
from api.views import PERIOD_HELP, BackendDep, parse_period, site_zone
from engine.definitions import KpiDefinition
from engine.reports import Level
from engine.samples import GroupKey

router = APIRouter(prefix="/api/v1/compliance", tags=["compliance"])


@router.get("", dependencies=[Depends(require(Permission.VIEW_REPORTS))])
async def compliance(
    backend: BackendDep,
    period: str = Query(description=PERIOD_HELP, max_length=80),
    by: str = Query(default="unit", pattern="^(unit|department|facility)$"),
) -> dict[str, Any]:
    start, end = parse_period(period, site_zone(backend))
    level: Level = by  # type: ignore[assignment]  # the pattern admits only the three levels
    kpis = []
    for kpi in backend.catalogue:
        if kpi.compliance is None:
            continue
        minutes: dict[GroupKey, float | None] = {}
        if kpi.compliance.minutes_out:
            rows = await asyncio.to_thread(backend.report, kpi.compliance.minutes_out, start, end, level)
            minutes = {r.group.key: r.value for r in rows}
        kpis.append(
            {
                "id": kpi.id,
                "name": kpi.name,
                "unit": kpi.unit,
                "direction": kpi.direction.value,
                "compliance": kpi.compliance.model_dump(),
                "places": [_place(backend, kpi, key, minutes) for key in _places(backend, level, minutes)],
            }
        )
    return {"period": {"from": start.isoformat(), "to": end.isoformat()}, "by": by, "kpis": kpis}


def _places(backend: Backend, by: Level, seen: dict[GroupKey, Any]) -> list[GroupKey]:
    """The configured places at this level, then any other place the period's events named."""
    units = backend.places.units()
    keys: list[GroupKey] = (
        [(f, d, u.id) for f, d, u in units]
        if by == "unit"
        else [(f, d, None) for f, d in dict.fromkeys((f, d) for f, d, _ in units)]
        if by == "department"
        else [(f.id, None, None) for f in backend.places.facilities]
    )
    return keys + [k for k in seen if k not in keys]


def _place(
    backend: Backend, kpi: KpiDefinition, key: GroupKey, minutes: dict[GroupKey, float | None]
) -> dict[str, Any]:
    facility, department, unit = key
    unit_type = backend.places.unit_types().get(key)
    live = backend.board.get(kpi.id, key)
    value, status = (live.value, live.status) if live else (None, "no_data")
    if unit is None:  # a department or facility is within the rule when all its units are
        inside = [
            kpi.within_limit(s.value, s.status, backend.places.unit_types().get(k))
            for k, s in ((k, backend.board.get(kpi.id, k)) for k in _units_in(backend, key))
            if s is not None
        ]
        now = False if False in inside else (True if inside and all(inside) else None)
    else:
        now = kpi.within_limit(value, status, unit_type)
    return {
        "group": {"facility": facility, "department": department, "unit": unit},
        "unit_type": unit_type,
        "limit": kpi.legal_limit(unit_type),  # a department's or facility's: the rule's own, if any
        "value": value,
        "status": status,
        "in_compliance_now": now,
        "minutes_out": minutes.get(key) if kpi.compliance and kpi.compliance.minutes_out else None,
    }


def _units_in(backend: Backend, key: GroupKey) -> list[GroupKey]:
    facility, department, _ = key
    return [
        (f, d, u.id)
        for f, d, u in backend.places.units()
        if f == facility and (department is None or d == department)
    ]
