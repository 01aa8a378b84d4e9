"""The Balanced Scorecard of one place: each perspective's KPIs, live, with their trend."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Query, Request

from api.backend import Backend
from api.review import place_of
from api.saved_views import find, spec_of
from api.security.auth import PrincipalDep, require
from api.security.roles import Permission
from api.views import BackendDep, hidden_below, kpi_summary, levels_json, place_key, sample_json, shown
from engine.definitions import PERSPECTIVE_TITLES, KpiDefinition, Perspective
from engine.samples import GroupKey, Sample
from engine.scorecard import perspective_status

router = APIRouter(tags=["scorecard"])


@router.get("/api/v1/scorecard", dependencies=[Depends(require(Permission.VIEW_KPIS))])
async def scorecard(
    request: Request,
    backend: BackendDep,
    principal: PrincipalDep,
    facility: str | None = None,
    department: str | None = None,
    unit: str | None = None,
    trend: int | None = Query(default=None, ge=0, le=500),
    view: str | None = Query(default=None, max_length=64, description="a view's id: its KPIs and place"),
) -> dict[str, Any]:
    """The scorecard of a place; with `view`, only the view's perspectives and KPIs, at its first
    place unless a place is asked for."""
    settings = backend.scorecard
    trend = settings.trend if trend is None else trend
    chosen = find(backend, request.app.state.views, principal, view) if view else None
    spec = spec_of(chosen) if chosen else None
    if spec and spec.places and facility is None and department is None and unit is None:
        first = spec.places[0]
        key = place_of(backend, first.facility, first.department, first.unit).key  # a unit's department
        department, unit = key[1], key[2]
    else:
        key = place_key(backend, facility, department, unit)
    facility = key[0] or None
    unit_type = backend.places.unit_types().get(key)
    k = hidden_below(backend, principal)
    shown_kpis = [
        kpi
        for kpi in backend.catalogue
        if (spec is None or spec.shows(kpi))
        and not (spec and spec.perspectives and kpi.perspective not in spec.perspectives)
    ]
    trends = (
        await asyncio.wrap_future(
            backend.history.queries_later(
                [kpi.id for kpi in shown_kpis],
                facility=key[0],
                department=key[1] or "",
                unit=key[2] or "",
                limit=trend,
            )
        )
        if trend
        else {}
    )
    perspectives = []
    for persp in Perspective:
        if spec and spec.perspectives and persp not in spec.perspectives:
            continue
        items = [
            _item(backend, kpi, key, unit_type, trends.get(kpi.id, []), k)
            for kpi in shown_kpis
            if kpi.perspective is persp
        ]
        if spec and not items:
            continue  # a view's perspective with none of its KPIs
        perspectives.append(
            {
                "id": persp.value,
                "title": PERSPECTIVE_TITLES[persp],
                "status": perspective_status(items, settings.status, settings.weights),
                "kpis": items,
            }
        )
    return {
        "group": {"facility": facility, "department": department, "unit": unit},
        "view": chosen,
        "status_rule": settings.status,
        "as_of": datetime.now(UTC).isoformat(),
        "perspectives": perspectives,
        "places": _places(backend),
    }


def _item(
    backend: Backend,
    kpi: KpiDefinition,
    key: GroupKey,
    unit_type: str | None,
    past: list[Sample],
    k: int | None,
) -> dict[str, Any]:
    """One KPI of the scorecard: live value and status at this place, and its last windows `past`
    (small cells suppressed for whom they are hidden: `k`)."""
    live = backend.board.get(kpi.id, key)
    held_to = levels_json(kpi, unit_type)  # the unit type's target, if any
    trend_points = [
        shown(kpi, {"end": s.window.end.isoformat(), "value": s.value, "status": s.status, **_cells(s)}, k)
        for s in past
    ]
    item = {
        **kpi_summary(kpi),
        "target": held_to["target"],
        "thresholds": held_to["thresholds"],
        "value": live.value if live else None,
        "numerator": live.numerator if live else None,
        "denominator": live.denominator if live else None,
        "status": live.status if live else "no_data",
        "n": live.n if live else 0,
        "window": sample_json(live)["window"] if live else None,
        "trend": [{f: p[f] for f in ("end", "value", "status")} for p in trend_points],
    }
    return shown(kpi, item, k)


def _cells(s: Sample) -> dict[str, Any]:
    return {"n": s.n, "numerator": s.numerator, "denominator": s.denominator}


def _places(backend: Backend) -> list[dict[str, Any]]:
    return [
        {
            "facility": f.id,
            "name": f.name,
            "departments": [
                {
                    "id": d.id,
                    "name": d.name,
                    "units": [{"id": u.id, "name": u.name, "beds": u.beds} for u in d.units],
                }
                for d in f.departments
            ],
        }
        for f in backend.places.facilities
    ]
