"""The alert service as a runtime wires it: channels and routes from the settings, roles
resolved through the engine's on-shift roster, KPI dependencies from the engine, changes
published to the live stream."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from alerts.channels import Channel
from alerts.channels.alertmanager import AlertmanagerChannel
from alerts.channels.email import EmailChannel
from alerts.channels.webhook import WebhookChannel
from alerts.feeds import FeedWatch
from alerts.people import Directory
from alerts.routes import load_routes
from alerts.service import AlertService
from alerts.store import AlertStore
from connectors.deadletters import DeadLetterStore
from engine.board import KpiBoard
from engine.config import Settings
from engine.core import Engine
from engine.definitions import Catalogue
from engine.secrets import revealed


def alert_event(change: dict[str, Any]) -> dict[str, Any]:
    """What /api/v1/stream says about an alert: no patient data exists in alerts at all."""
    alert = change.get("alert") or {}
    keep = (
        "id",
        "kind",
        "kpi",
        "facility",
        "department",
        "unit",
        "state",
        "severity",
        "value",
        "threshold",
        "summary",
        "fired_at",
        "resolved_at",
        "acked_by",
        "acked_at",
        "tier",
    )
    return {"type": "alert", "data": {"event": change["kind"], **{k: alert.get(k) for k in keep}}}


def build_alert_service(
    settings: Settings,
    catalogue: Catalogue,
    engine: Engine,
    board: KpiBoard,
    data: Path,
    dead_letters: DeadLetterStore | None = None,
    sources_of: Callable[[str], set[str]] | None = None,
) -> AlertService:
    """`engine` gives the on-shift roster and each KPI's event types; `sources_of` which
    sources feed a KPI (default: what the engine has seen)."""
    sources = sources_of or engine.sources_of
    cfg = settings.alerts
    base_url = cfg.base_url or f"http://{settings.api.host}:{settings.api.port}"
    channels: list[Channel] = [
        WebhookChannel(w.name, w.url, secret=revealed(w.secret), timeout=w.timeout, routed=w.routed)  # type: ignore[list-item]
        for w in cfg.webhooks
    ]
    if cfg.email is not None:
        e = cfg.email
        channels.append(
            EmailChannel(  # type: ignore[arg-type]
                e.host,
                e.port,
                e.sender,
                starttls=e.starttls,
                username=e.username,
                password=revealed(e.password),
                timeout=e.timeout,
                base_url=base_url,
            )
        )
    syncs = []
    if cfg.alertmanager is not None:
        syncs.append(
            AlertmanagerChannel(
                cfg.alertmanager.url, resend_every=cfg.alertmanager.resend_every, generator_url=base_url
            )
        )
    routes = load_routes(cfg.routes)
    departments = {(f, u.id): d for f, d, u in settings.places.units()}
    return AlertService(
        catalogue,
        AlertStore(revealed(cfg.database) or data / "alerts.sqlite"),
        channels,
        routes=routes,
        directory=Directory(routes, engine.staff.holders),
        feeds=FeedWatch(
            list(cfg.feeds),
            departments,
            {f.id for f in settings.places.facilities} if settings.places.facilities else None,
            settings.places.unknown_seen,
        ),
        depends_on=lambda kpi: (sources(kpi), engine.event_types_of(kpi)),
        syncs=syncs,
        zone=settings.zone,
        max_attempts=cfg.max_attempts,
        retry_backoff=cfg.retry_backoff,
        unit_types=settings.places.unit_types(),
        on_change=lambda change: board.publish(alert_event(change)),
        on_failed=(
            lambda item, error: dead_letters.add(
                f"notify:{item.channel}",
                f"not delivered after retries: {error}",
                orjson.dumps(item.payload),
                detail=item.idempotency_key,
                content_type="application/json",
            )
        )
        if dead_letters is not None
        else None,
    )
