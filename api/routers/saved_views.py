"""Saved scorecard views (api/saved_views.py): list, save, read, change, delete, and the
caller's landing view. The scorecard applies one with GET /api/v1/scorecard?view=<id>."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response

from api.problems import Problem
from api.saved_views import ViewBody, builtin_json, check, find, is_admin, rows_of, stored_json
from api.security.auth import PrincipalDep, require
from api.security.oidc import Principal
from api.security.roles import Permission
from api.views import BackendDep

router = APIRouter(prefix="/api/v1/views", tags=["views"])


@router.get("", dependencies=[Depends(require(Permission.VIEW_KPIS))])
async def list_views(request: Request, backend: BackendDep, principal: PrincipalDep) -> dict[str, Any]:
    """The built-in views, the shared ones and the caller's own, and the caller's landing view
    (null: none chosen; the page then shows the plain scorecard)."""
    rows = request.app.state.views
    stored = [stored_json(r) for r in rows.visible(principal.subject)] if rows is not None else []
    landing = rows.landing(principal.subject) if rows is not None else None
    views = [builtin_json(v) for v in backend.catalogue.views.values()] + stored
    return {"landing": landing, "views": [{**v, "landing": v["id"] == landing} for v in views]}


@router.post("", status_code=201, dependencies=[Depends(require(Permission.SAVE_VIEWS))])
async def save_view(request: Request, backend: BackendDep, principal: PrincipalDep, body: ViewBody) -> Any:
    check(backend, body)
    if body.shared and not is_admin(principal):
        raise Problem(403, "Forbidden", "only an admin saves a shared view; save it without shared")
    spec = body.model_dump(mode="json", exclude={"shared"})
    return stored_json(rows_of(request).add(principal.subject, body.shared, spec))


@router.get("/{view_id}", dependencies=[Depends(require(Permission.VIEW_KPIS))])
async def get_view(request: Request, backend: BackendDep, principal: PrincipalDep, view_id: str) -> Any:
    return find(backend, request.app.state.views, principal, view_id)


def _writable(request: Request, backend: Any, principal: Principal, view_id: str) -> dict[str, Any]:
    """The view, if the caller may change it: their own, or a shared one for an admin."""
    view = find(backend, request.app.state.views, principal, view_id)
    if view["builtin"]:
        raise Problem(403, "Forbidden", f"{view_id!r} is a built-in view (kpi_defs/views/): save a copy")
    if view["shared"] and not is_admin(principal):
        raise Problem(403, "Forbidden", f"{view_id!r} is a shared view: only an admin changes it")
    if not view["shared"] and view["owner"] != principal.subject:
        raise Problem(403, "Forbidden", f"{view_id!r} is {view['owner']}'s view")
    return view


@router.put("/{view_id}", dependencies=[Depends(require(Permission.SAVE_VIEWS))])
async def replace_view(
    request: Request, backend: BackendDep, principal: PrincipalDep, view_id: str, body: ViewBody
) -> Any:
    _writable(request, backend, principal, view_id)
    check(backend, body)
    if body.shared and not is_admin(principal):
        raise Problem(403, "Forbidden", "only an admin shares a view")
    row = rows_of(request).replace(view_id, body.shared, body.model_dump(mode="json", exclude={"shared"}))
    if row is None:
        raise Problem(404, "Unknown view", f"view {view_id!r} was deleted meanwhile")
    return stored_json(row)


@router.delete("/{view_id}", status_code=204, dependencies=[Depends(require(Permission.SAVE_VIEWS))])
async def delete_view(
    request: Request, backend: BackendDep, principal: PrincipalDep, view_id: str
) -> Response:
    _writable(request, backend, principal, view_id)
    rows_of(request).delete(view_id)
    return Response(status_code=204)


@router.put("/{view_id}/landing", dependencies=[Depends(require(Permission.SAVE_VIEWS))])
async def choose_landing(
    request: Request, backend: BackendDep, principal: PrincipalDep, view_id: str
) -> dict[str, Any]:
    """Make a view the caller can see their landing view (the page opens on it)."""
    find(backend, request.app.state.views, principal, view_id)
    rows_of(request).set_landing(principal.subject, view_id)
    return {"landing": view_id}
