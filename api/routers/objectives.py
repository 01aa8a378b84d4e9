"""The strategy map: objectives with their status at a place, rolled up from their KPIs' live
statuses (engine/scorecard.py), and the cause -> effect edges the page can draw.

Scorecards cascade: a place's list holds the hospital's objectives and those of the department
or unit asked for (`level`, `places`); an objective's status also rolls up the objectives that
`supports:` it, one item per place within the place asked for that holds them."""

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
    key = _key(backend, facility, department, unit)
    objectives = [o for o in backend.catalogue.objectives.values() if _held(backend, o, key)]
    listed = {o.id for o in objectives}
    return {
        **_header(key),
        "perspectives": [  # the strategy map's rows, bottom (causes) to top (results)
            {"id": p.value, "title": PERSPECTIVE_TITLES[p], "layer": layer} for p, layer in LAYER.items()
        ],
        "objectives": [_with_contribution(backend, o, key) for o in objectives],
        "edges": [{"from": o.id, "to": e} for o in objectives for e in o.drives if e in listed],
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
    key = _key(backend, facility, department, unit)
    driven_by = [o.id for o in backend.catalogue.objectives.values() if objective_id in o.drives]
    return {**_header(key), **_with_contribution(backend, objective, key), "driven_by": driven_by}


def _key(backend: Backend, facility: str | None, department: str | None, unit: str | None) -> GroupKey:
    """The place asked for, a configured unit's department filled in (its objectives need it)."""
    key = place_key(backend, facility, department, unit)
    if unit is not None and department is None:
        found = [d for f, d, u in backend.places.units() if f == key[0] and u.id == unit]
        key = (key[0], found[0] if found else None, unit)
    return key


def _held(backend: Backend, objective: Objective, key: GroupKey) -> bool:
    """The hospital's objectives are held everywhere; a department's or a unit's at its places."""
    _, department, unit = key
    unit_type = backend.places.unit_types().get(key) if unit is not None else None
    return objective.held_at(department, unit, unit_type)


def _holders(backend: Backend, objective: Objective, key: GroupKey) -> list[GroupKey]:
    """The places within `key` (itself included) that hold a department or unit objective."""
    facility, department, unit = key
    if objective.level == "department":
        return [
            (facility, d.id, None)
            for f in backend.places.facilities
            if f.id == facility
            for d in f.departments
            if unit is None and department in (None, d.id) and objective.held_at(d.id, None, None)
        ]
    return [
        (f, d, u.id)
        for f, d, u in backend.places.units()
        if f == facility
        and department in (None, d)
        and unit in (None, u.id)
        and objective.held_at(d, u.id, u.type)
    ]


def _header(key: GroupKey) -> dict[str, Any]:
    facility, department, unit = key
    return {
        "group": {"facility": facility or None, "department": department, "unit": unit},
        "as_of": datetime.now(UTC).isoformat(),
    }


def _group(key: GroupKey) -> dict[str, str | None]:
    return {"facility": key[0], "department": key[1], "unit": key[2]}


def _with_contribution(backend: Backend, objective: Objective, key: GroupKey) -> dict[str, Any]:
    """The objective at a place and, for a cascaded one, the wider objective it supports with
    that objective's status at the wider place (the department's, or the hospital's)."""
    found = _objective(backend, objective, key)
    supports = objective.supports
    wider = backend.catalogue.objectives.get(supports.objective) if supports else None
    if supports is None or wider is None:
        return {**found, "supports": None}
    where: GroupKey = (key[0], key[1] if wider.level != "facility" else None, None)
    status = _objective(backend, wider, where)["status"]
    answer = {"objective": wider.id, "name": wider.name, "weight": supports.weight, "status": status}
    return {**found, "supports": {**answer, "group": _group(where)}}


def _objective(backend: Backend, objective: Objective, key: GroupKey) -> dict[str, Any]:
    """An objective at a place: each KPI's live status there, the objectives supporting it at
    the places within, and the roll-up of them all (engine/scorecard.py)."""
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
    supported_by: list[dict[str, Any]] = []
    items: list[tuple[str, str, float]] = []  # (objective@place, status, weight) for the roll-up
    for o in backend.catalogue.objectives.values():
        if o.supports is None or o.supports.objective != objective.id:
            continue
        for place in _holders(backend, o, key):
            status = _objective(backend, o, place)["status"]
            items.append((f"{o.id}@{'/'.join(p for p in place if p)}", status, o.supports.weight))
            supported_by.append(
                {
                    "objective": o.id,
                    "name": o.name,
                    "weight": o.supports.weight,
                    "group": _group(place),
                    "status": status,
                }
            )
    return {
        "id": objective.id,
        "name": objective.name,
        "perspective": objective.perspective.value,
        "level": objective.level,
        "places": objective.places,
        "description": objective.description,
        "status_rule": objective.status,
        "status": objective_status(objective, {k["id"]: k["status"] for k in kpis}, items),
        "kpis": kpis,
        "drives": objective.drives,
        "supported_by": supported_by,
    }
