"""What routers share: the backend from the app's state, and KPIs, levels, samples and times
as the API writes and reads them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, Request

from api.backend import Backend
from api.problems import Problem
from api.security.auth import may
from api.security.oidc import Principal
from api.security.roles import Permission
from engine.definitions import KpiDefinition
from engine.samples import Sample
from engine.smallcells import too_small


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
