"""The FastAPI application: REST under /api/v1, /metrics, health, the scorecard page.

create_app builds the app, installs the problem-details handlers and includes one router per
resource (api/routers/); routers find the backend (and the replayer) in the app's state.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.middleware.trustedhost import TrustedHostMiddleware

from api.backend import Backend, Replayer
from api.content_types import ContentTypeCheck
from api.headers import SecurityHeaders
from api.metrics import kpi_registry
from api.problems import install
from api.routers import (
    actions,
    alerts,
    analysis,
    audit,
    compare,
    compliance,
    dead_letters,
    forecasts,
    initiatives,
    kpis,
    measures,
    objectives,
    ops,
    page,
    reports,
    reviews,
    saved_views,
    scorecard,
    silences,
    stream,
)
from api.saved_views import ViewRows
from api.security.audit import AuditLog, AuditMiddleware
from api.security.auth import Auth
from api.security.ratelimit import RateLimiter

ROUTERS = (
    ops,
    kpis,
    forecasts,
    reports,
    measures,
    scorecard,
    saved_views,
    objectives,
    compare,
    compliance,
    reviews,
    alerts,
    actions,
    initiatives,
    analysis,
    silences,
    dead_letters,
    audit,
    stream,
    page,
)


def create_app(
    backend: Backend,
    replayer: Replayer | None = None,
    *,
    docs: bool = False,
    tls: bool = False,
    trusted_hosts: list[str] | None = None,
    auth: Auth | None = None,
    audit_log: AuditLog | None = None,
    views: ViewRows | None = None,
    rate_limiter: RateLimiter | None = None,
) -> FastAPI:
    """docs: the interactive pages /docs and /redoc (the OpenAPI document itself is always
    served: integrations and schema checks read it); trusted_hosts: Host values accepted;
    auth: who may call (default: the local operator only, for a loopback API); audit_log: where
    writes and reads of patient-level data are recorded (api/security/audit.py); views: where
    saved scorecard views are kept (None: the built-in views only); rate_limiter: requests per
    caller (api/security/ratelimit.py; None: unlimited)."""
    app = FastAPI(
        title="carescore",
        version="0.1.0",
        description="Real-time Balanced Scorecard for hospitals: KPIs, alerts, history.",
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
    )
    app.add_middleware(ContentTypeCheck)  # inside the audit log: a refused write is audited too
    if audit_log is not None:
        app.add_middleware(AuditMiddleware, log_to=audit_log)
    auth = auth or Auth(local=True)
    app.add_middleware(SecurityHeaders, tls=tls, connect_src=auth.page_idp_origin)
    if trusted_hosts:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=trusted_hosts)
    install(app)
    app.state.backend = backend
    app.state.replayer = replayer
    app.state.auth = auth
    app.state.audit = audit_log
    app.state.views = views
    app.state.rate_limiter = rate_limiter
    app.state.kpi_registry = kpi_registry(backend)
    for module in ROUTERS:
        app.include_router(module.router)
    return app
