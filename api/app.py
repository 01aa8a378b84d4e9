"""The FastAPI application: REST under /api/v1, /metrics, health, the scorecard page.

create_app builds the app, installs the problem-details handlers and includes one router per
resource (api/routers/); routers find the backend (and the replayer) in the app's state.
"""

from __future__ import annotations

from fastapi import FastAPI

from api.backend import Backend, Replayer
from api.metrics import kpi_registry
from api.problems import install
from api.routers import alerts, dead_letters, kpis, ops, page, reports, scorecard, silences, stream

ROUTERS = (ops, kpis, reports, scorecard, alerts, silences, dead_letters, stream, page)


def create_app(backend: Backend, replayer: Replayer | None = None) -> FastAPI:
    app = FastAPI(
        title="carescore",
        version="0.1.0",
        description="Real-time Balanced Scorecard for hospitals: KPIs, alerts, history.",
    )
    install(app)
    app.state.backend = backend
    app.state.replayer = replayer
    app.state.kpi_registry = kpi_registry(backend)
    for module in ROUTERS:
        app.include_router(module.router)
    return app
