"""Scorecard views as the API serves them: the built-in ones (kpi_defs/views/) and the ones
people saved (kept by the runtime in the alert store's database, alerts/views_store.py).

Who sees and changes what: everyone signed in sees the built-in views, the shared views and
their own; a view is changed or deleted by its owner, a shared one only by an admin, a built-in
one by nobody (it is configuration). Only an admin saves a shared view.
"""

from __future__ import annotations

from typing import Any, Protocol

from fastapi import Request
from pydantic import Field

from api.backend import Backend
from api.problems import Problem
from api.security.auth import may
from api.security.oidc import Principal
from api.security.roles import Permission
from engine.definitions.views import BuiltinView, ViewSpec, unknown_kpis, view_json


class ViewRows(Protocol):
    """The saved views' store (alerts/views_store.py satisfies it)."""

    def visible(self, subject: str, everyone: bool = False) -> list[dict[str, Any]]: ...

    def get(self, view_id: str) -> dict[str, Any] | None: ...

    def add(self, owner: str, shared: bool, spec: dict[str, Any]) -> dict[str, Any]: ...

    def replace(self, view_id: str, shared: bool, spec: dict[str, Any]) -> dict[str, Any] | None: ...

    def delete(self, view_id: str) -> bool: ...

    def landing(self, subject: str) -> str | None: ...

    def set_landing(self, subject: str, view_id: str) -> None: ...


class ViewBody(ViewSpec):
    shared: bool = Field(default=False, description="seen by everyone; only an admin saves one")


def rows_of(request: Request) -> ViewRows:
    rows: ViewRows | None = request.app.state.views
    if rows is None:
        raise Problem(503, "Views unavailable", "this API process has no store for saved views")
    return rows


def is_admin(principal: Principal) -> bool:
    return may(principal, Permission.ADMIN)


def builtin_json(view: BuiltinView) -> dict[str, Any]:
    return {"id": view.id, **view_json(view), "builtin": True, "shared": True, "owner": None}


def stored_json(row: dict[str, Any]) -> dict[str, Any]:
    return {"id": row["id"], **row["spec"], "builtin": False, "shared": row["shared"], "owner": row["owner"]}


def find(backend: Backend, rows: ViewRows | None, principal: Principal, view_id: str) -> dict[str, Any]:
    """A view the principal may see, as JSON; 404 for any other (another's private view too)."""
    builtin = backend.catalogue.views.get(view_id)
    if builtin is not None:
        return builtin_json(builtin)
    row = rows.get(view_id) if rows is not None else None
    if row is None or not (row["shared"] or row["owner"] == principal.subject):
        raise Problem(404, "Unknown view", f"no view {view_id!r} you can see; GET /api/v1/views lists them")
    return stored_json(row)


def spec_of(view: dict[str, Any]) -> ViewSpec:
    return ViewSpec.model_validate({k: view[k] for k in ViewSpec.model_fields})


def check(backend: Backend, body: ViewSpec) -> None:
    """422 naming the field of each unknown KPI or place."""
    problems = [
        f"{'.'.join(map(str, loc))}: {why}" for loc, why in unknown_kpis(body, backend.catalogue.kpis)
    ]
    places = backend.places
    facilities = {f.id for f in places.facilities}
    departments = {(f, d) for f, d, _ in places.units()}
    units = {u.id for _, _, u in places.units()}
    for i, p in enumerate(body.places):
        if p.facility is not None and p.facility not in facilities:
            problems.append(f"places.{i}.facility: unknown facility {p.facility!r}")
        if p.department is not None and not any(d == p.department for _, d in departments):
            problems.append(f"places.{i}.department: unknown department {p.department!r}")
        if p.unit is not None and p.unit not in units:
            problems.append(f"places.{i}.unit: unknown unit {p.unit!r}")
        if p.facility is None and p.department is None and p.unit is None:
            problems.append(f"places.{i}: name a facility, a department or a unit")
    if problems:
        raise Problem(422, "Invalid view", "; ".join(problems))
