"""The strategy map: objectives with their status at a place, rolled up from their KPIs' live
statuses (engine/scorecard.py), and the cause -> effect edges the page can draw."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends

from api.backend import Backend
from api.problems import Problem
from api.security.auth import require
from api.security.roles import Permission
from api.views import BackendDep, place_key
from engine.definitions import LAYER, PERSPECTIVE_TITLES, Objective
from engine.samples import GroupKey
from engine.scorecard import objective_status

router = APIRouter(prefix="/api/v1/objectives", tags=["strategy"])


@router.get("", dependencies=[Depends(require(Permission.VIEW_KPIS))])
async def list_objectives(
    backend: BackendDep, facility: str | None = None, department: str | None = None, unit: str | None = None
) -> dict[str, Any]:
    key = place_key(backend, facility, department, unit)
    objectives = backend.catalogue.objectives.values()
    return {
        **_header(key),
        "perspectives": [  # the strategy map's rows, bottom (causes) to top (results)
            {"id": p.value, "title": PERSPECTIVE_TITLES[p], "layer": layer} for p, layer in LAYER.items()
        ],
        "objectives": [_objective(backend, o, key) for o in objectives],
        "edges": [{"from": o.id, "to": effect} for o in objectives for effect in o.drives],
    }


@router.get("/{objective_id}", dependencies=[Depends(require(Permission.VIEW_KPIS))])
async def get_objective(
    backend: BackendDep,
    objective_id: str,
    facility: str | None = None,
    department: str | None = None,
    unit: str | None = None,
) -> dict[str, Any]:
    objective = backend.catalogue.objectives.get(objective_id)
    if objective is None:
        raise Problem(
            404, "Unknown objective", f"no objective {objective_id!r}; GET /api/v1/objectives lists them"
        )
    key = place_key(backend, facility, department, unit)
    driven_by = [o.id for o in backend.catalogue.objectives.values() if objective_id in o.drives]
    return {**_header(key), **_objective(backend, objective, key), "driven_by": driven_by}


def _header(key: GroupKey) -> dict[str, Any]:
    facility, department, unit = key
    return {
        "group": {"facility": facility or None, "department": department, "unit": unit},
        "as_of": datetime.now(UTC).isoformat(),
    }


def _objective(backend: Backend, objective: Objective, key: GroupKey) -> dict[str, Any]:
    """An objective at a place: each KPI's live status there and the roll-up of them."""
    kpis: list[dict[str, Any]] = []
    for weighted in objective.kpis:
        kpi = backend.catalogue.kpis[weighted.kpi]
        live = backend.board.get(kpi.id, key)
        kpis.append(
            {
                "id": kpi.id,
                "name": kpi.name,
                "weight": weighted.weight,
                "unit": kpi.unit,
                "direction": kpi.direction.value,
                "value": live.value if live else None,
                "status": live.status if live else "no_data",
            }
        )
    return {
        "id": objective.id,
        "name": objective.name,
        "perspective": objective.perspective.value,
        "description": objective.description,
        "status_rule": objective.status,
        "status": objective_status(objective, {k["id"]: k["status"] for k in kpis}),
        "kpis": kpis,
        "drives": objective.drives,
    }
