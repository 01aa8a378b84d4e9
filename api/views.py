"""What routers share: the backend from the app's state, and KPIs, levels, samples, times and
periods (a month, a day, start/end) as the API writes and reads them."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Annotated, Any

from fastapi import Depends, Request

from api.backend import Backend
from api.problems import Problem
from api.security.auth import may
from api.security.oidc import Principal
from api.security.roles import Permission
from engine.definitions import KpiDefinition
from engine.samples import GroupKey, Sample
from engine.smallcells import too_small
from engine.windows import zone_of


def hidden_below(backend: Backend, principal: Principal) -> int | None:
    """The small-cell threshold k when this caller may not see small cells (a viewer), else None."""
    return None if may(principal, Permission.VIEW_SMALL_CELLS) else backend.small_cell_min


def shown(kpi: KpiDefinition, item: dict[str, Any], k: int | None) -> dict[str, Any]:
    """A value as this caller may see it: suppressed (null, with the reason) when it rests on
    a patient cell from 1 to k-1 (engine/smallcells.py)."""
    if k is None or not too_small(kpi, item.get("n"), item.get("numerator"), item.get("denominator"), k):
        return item
    return {
        **item,
        "value": None,
        "numerator": None,
        "denominator": None,
        "n": None,
        "status": "suppressed",
        "suppressed": f"computed from fewer than {k} patients (small-cell suppression)",
    }


def get_backend(request: Request) -> Backend:
    backend: Backend = request.app.state.backend
    return backend


BackendDep = Annotated[Backend, Depends(get_backend)]


def kpi_or_404(backend: Backend, kpi_id: str) -> KpiDefinition:
    kpi = backend.catalogue.kpis.get(kpi_id)
    if kpi is None:
        raise Problem(404, "Unknown KPI", f"no KPI with id {kpi_id!r}; GET /api/v1/kpis lists them")
    return kpi


def kpi_summary(kpi: KpiDefinition) -> dict[str, Any]:
    return {
        "id": kpi.id,
        "name": kpi.name,
        "perspective": kpi.perspective.value,
        "unit": kpi.unit,
        "direction": kpi.direction.value,
        "target": kpi.target,
        "thresholds": kpi.thresholds.model_dump(),
        "clear": kpi.clear,
        "window": kpi.window.model_dump(mode="json"),
        "aggregate": kpi.aggregate,
        "benchmark": kpi.benchmark.model_dump() if kpi.benchmark else None,
        "by_unit_type": {t: lv.model_dump() for t, lv in kpi.by_unit_type.items()},
        "standard": kpi.standard.model_dump() if kpi.standard else None,
        "deviations": kpi.deviations,
    }


def levels_json(kpi: KpiDefinition, unit_type: str | None) -> dict[str, Any]:
    """The target and thresholds one place is held to (its unit type's, else the KPI's)."""
    lv = kpi.levels_for(unit_type)
    return {
        "unit_type": unit_type,
        "target": lv.target,
        "thresholds": lv.thresholds.model_dump(),
        "clear": lv.clear,
        "limit": lv.limit,
    }


def sample_json(s: Sample) -> dict[str, Any]:
    return s.model_dump(mode="json", exclude={"until"})  # history answers runs window by window


def parse_time(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise Problem(400, "Invalid time", f"{name}={value!r} is not an ISO 8601 date/time") from exc
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


_MONTH = re.compile(r"^(\d{4})-(\d{2})$")
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
PERIOD_HELP = (
    "a month (2026-11), a day (2026-11-30), both in the site's time zone, or start/end ISO 8601 "
    "date-times (end exclusive; without an offset UTC)"
)


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


def site_zone(backend: object) -> tzinfo:
    """The site's time zone where the backend has settings (the embedded runtime), else UTC."""
    name = getattr(getattr(backend, "settings", None), "timezone", None)
    try:
        return zone_of(name) if isinstance(name, str) or name is None else UTC
    except Exception:  # an unknown zone name: settings validation reports it, UTC here
        return UTC


def default_facility(backend: Backend) -> str | None:
    """The place a scorecard shows when none is asked for: the first facility."""
    if backend.places.facilities:
        return backend.places.facilities[0].id
    for sample in backend.board.current.values():
        return sample.group.facility
    return None


def place_key(backend: Backend, facility: str | None, department: str | None, unit: str | None) -> GroupKey:
    """The board's key of a place asked for by facility/department/unit (default: the first facility)."""
    return (facility or default_facility(backend) or "", department, unit)
