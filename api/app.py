"""The FastAPI application: REST under /api/v1, /metrics, health, the scorecard page.

create_app builds the app, installs the problem-details handlers and includes one router per
resource (api/routers/); routers find the backend (and the replayer) in the app's state.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.middleware.trustedhost import TrustedHostMiddleware

from api.backend import Backend, Replayer
from api.headers import SecurityHeaders
from api.metrics import kpi_registry
from api.problems import install
from api.routers import alerts, dead_letters, kpis, measures, ops, page, reports, scorecard, silences, stream

ROUTERS = (ops, kpis, reports, measures, scorecard, alerts, silences, dead_letters, stream, page)


def create_app(
    backend: Backend,
    replayer: Replayer | None = None,
    *,
    docs: bool = False,
    tls: bool = False,
    trusted_hosts: list[str] | None = None,
) -> FastAPI:
    """docs: the interactive pages /docs and /redoc (the OpenAPI document itself is always
    served: integrations and schema checks read it); trusted_hosts: Host values accepted."""
    app = FastAPI(
        title="carescore",
        version="0.1.0",
        description="Real-time Balanced Scorecard for hospitals: KPIs, alerts, history.",
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
    )
    app.add_middleware(SecurityHeaders, tls=tls)
    if trusted_hosts:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=trusted_hosts)
    install(app)
    app.state.backend = backend
    app.state.replayer = replayer
    app.state.kpi_registry = kpi_registry(backend)
    for module in ROUTERS:
        app.include_router(module.router)
    return app
