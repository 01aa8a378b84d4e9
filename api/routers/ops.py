"""Health and readiness (open: load balancers ask them), and /metrics (view_metrics: Prometheus
scrapes with a viewer token, `carescore token create --role viewer`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from api.metrics import exposition
from api.security.auth import require
from api.security.roles import Permission
from api.views import BackendDep

router = APIRouter(tags=["ops"])


@router.get("/healthz")
async def healthz(backend: BackendDep) -> dict[str, Any]:
    return backend.health()


@router.get("/readyz")
async def readyz(backend: BackendDep) -> JSONResponse:
    ready = backend.ready
    body: dict[str, Any] = {"ready": ready}
    components = getattr(backend, "components", None)
    if components:  # a component waiting to be restarted: ready, but degraded (and why)
        body["components"] = {name: state.describe() for name, state in sorted(components.items())}
        body["degraded"] = sorted(name for name, state in components.items() if not state.up)
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/metrics", dependencies=[Depends(require(Permission.VIEW_METRICS))])
async def metrics(request: Request, backend: BackendDep) -> Response:
    registry = request.app.state.kpi_registry
    return Response(exposition(backend, registry), media_type="text/plain; version=0.0.4; charset=utf-8")
