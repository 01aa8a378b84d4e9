"""A KPI's forecast at one place: the next windows with 80 % and 95 % prediction intervals,
from its closed windows (engine/forecast.py), and when the forecast first reaches each threshold."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query

from api.problems import Problem
from api.security.auth import require
from api.security.roles import Permission
from api.views import BackendDep, kpi_or_404, levels_json, place_key
from engine.definitions import Direction
from engine.durations import parse_duration
from engine.forecast import MAX_GAP, MAX_POINTS, MAX_STEPS, Forecast, TooShort, first_breach, forecast

router = APIRouter(prefix="/api/v1/kpis", tags=["kpis"])


@router.get("/{kpi_id}/forecast", dependencies=[Depends(require(Permission.VIEW_HISTORY))])
def kpi_forecast(  # a plain def: FastAPI runs it in its thread pool, the fit stays off the event loop
    backend: BackendDep,
    kpi_id: str,
    facility: str | None = None,
    department: str | None = None,
    unit: str | None = None,
    horizon: str = Query(default="2h", max_length=20, description="how far ahead: 30m, 2h, 1d"),
) -> dict[str, Any]:
    kpi = kpi_or_404(backend, kpi_id)
    try:
        ahead = parse_duration(horizon)
    except ValueError as exc:
        raise Problem(422, "Invalid horizon", str(exc)) from exc
    if ahead <= 0:
        raise Problem(422, "Invalid horizon", "the horizon must be longer than zero")
    key = place_key(backend, facility, department, unit)
    level = "unit" if key[2] else "department" if key[1] else "facility"
    history = backend.history.query_later(  # after the windows closed so far are written
        kpi_id,
        facility=key[0],
        department=key[1],
        unit=key[2],
        level=level,
        limit=MAX_POINTS + MAX_GAP,
    ).result()
    try:
        fc = forecast(history, ahead)
    except TooShort as exc:
        raise Problem(422, "History too short", str(exc), needed=exc.needed, have=exc.have) from exc
    levels = levels_json(kpi, backend.places.unit_types().get(key))
    return {
        "kpi": kpi_id,
        "place": {"facility": key[0], "department": key[1], "unit": key[2]},
        "unit": kpi.unit,
        "direction": kpi.direction.value,
        "levels": levels,
        "model": fc.model,
        "step_seconds": fc.step,
        "horizon_seconds": len(fc.points) * fc.step,
        "horizon_capped": round(ahead / fc.step) > MAX_STEPS,
        "history": {
            "windows": fc.history,
            "last_window_end": fc.last.isoformat(),
            "last_value": fc.last_value,
        },
        "breaches": _breaches(fc, levels["thresholds"], kpi.direction is Direction.lower_is_better),
        "points": [
            {
                "at": p.at.isoformat(),
                "mean": p.mean,
                "lower80": p.lower80,
                "upper80": p.upper80,
                "lower95": p.lower95,
                "upper95": p.upper95,
            }
            for p in fc.points
        ],
    }


def _breaches(fc: Forecast, thresholds: dict[str, float | None], lower: bool) -> list[dict[str, Any]]:
    """When each threshold is first reached: by the mean, and by the 80 % and 95 % bounds."""
    out = []
    for severity in ("warning", "critical"):
        threshold = thresholds.get(severity)
        if threshold is None:
            continue
        by_mean = next(
            (p for p in fc.points if (p.mean >= threshold if lower else p.mean <= threshold)), None
        )
        hit80, hit95 = first_breach(fc, threshold, lower, 80), first_breach(fc, threshold, lower, 95)
        out.append(
            {
                "severity": severity,
                "threshold": threshold,
                "mean_at": by_mean.at.isoformat() if by_mean else None,
                "interval80_at": hit80.at.isoformat() if hit80 else None,
                "interval95_at": hit95.at.isoformat() if hit95 else None,
            }
        )
    return out
