"""The FastAPI application: REST under /api/v1, /metrics, health, the scorecard page."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from pydantic import AwareDatetime, BaseModel, Field

from alerts.routes import Matchers
from api.backend import Backend
from api.metrics import exposition, kpi_registry
from api.problems import Problem, install
from connectors.replay import Replayer
from engine.definitions import PERSPECTIVE_TITLES, KpiDefinition, Perspective
from engine.durations import Duration
from engine.samples import GroupKey, Sample

STATIC = Path(__file__).parent / "static"


class ReplayRequest(BaseModel):
    ids: list[int] = Field(default_factory=list, description="these letters; empty: every pending one")
    source: str | None = Field(
        default=None, description="only this source (hl7v2, fhir, feed, feed:staffing)"
    )
    include_replayed: bool = Field(default=False, description="also letters already taken by a replay")


class SilenceRequest(BaseModel):
    matchers: Matchers = Field(
        description="alert labels to match: kpi, perspective, facility, department, unit, severity, kind"
    )
    starts_at: AwareDatetime | None = Field(default=None, description="default: now")
    ends_at: AwareDatetime | None = None
    duration: Duration | None = Field(default=None, description="instead of ends_at, e.g. 2h")
    created_by: str = Field(min_length=1, max_length=200)
    comment: str | None = Field(default=None, max_length=2000)


class AckRequest(BaseModel):
    by: str = Field(min_length=1, max_length=200, description="who acknowledges (name or role)")
    note: str | None = Field(default=None, max_length=2000)


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


def _matches(s: Sample, facility: str | None, department: str | None, unit: str | None) -> bool:
    g = s.group
    return (
        (facility is None or g.facility == facility)
        and (department is None or g.department == department)
        and (unit is None or g.unit == unit)
    )


def _parse_time(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise Problem(400, "Invalid time", f"{name}={value!r} is not an ISO 8601 date/time") from exc
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def create_app(backend: Backend, replayer: Replayer | None = None) -> FastAPI:
    app = FastAPI(
        title="carescore",
        version="0.1.0",
        description="Real-time Balanced Scorecard for hospitals: KPIs, alerts, history.",
    )
    install(app)
    registry = kpi_registry(backend)

    def kpi_or_404(kpi_id: str) -> KpiDefinition:
        kpi = backend.catalogue.kpis.get(kpi_id)
        if kpi is None:
            raise Problem(404, "Unknown KPI", f"no KPI with id {kpi_id!r}; GET /api/v1/kpis lists them")
        return kpi

    # -- health and metrics --------------------------------------------------------------
    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, Any]:
        return backend.health()

    @app.get("/readyz", tags=["ops"])
    async def readyz() -> JSONResponse:
        ready = backend.ready
        body: dict[str, Any] = {"ready": ready}
        components = getattr(backend, "components", None)
        if components:  # a component waiting to be restarted: ready, but degraded (and why)
            body["components"] = {name: state.describe() for name, state in sorted(components.items())}
            body["degraded"] = sorted(name for name, state in components.items() if not state.up)
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get("/metrics", tags=["ops"])
    async def metrics() -> Response:
        return Response(exposition(backend, registry), media_type="text/plain; version=0.0.4; charset=utf-8")

    # -- KPIs ----------------------------------------------------------------------------
    @app.get("/api/v1/kpis", tags=["kpis"])
    async def list_kpis() -> dict[str, Any]:
        return {"kpis": [kpi_summary(k) for k in backend.catalogue]}

    @app.get("/api/v1/kpis/{kpi_id}", tags=["kpis"])
    async def get_kpi(
        kpi_id: str,
        facility: str | None = None,
        department: str | None = None,
        unit: str | None = None,
    ) -> dict[str, Any]:
        kpi = kpi_or_404(kpi_id)
        unit_types = backend.places.unit_types()
        values = [
            {**sample_json(s), "levels": levels_json(kpi, unit_types.get(s.group.key))}
            for s in backend.board.for_kpi(kpi_id)
            if _matches(s, facility, department, unit)
        ]
        values.sort(
            key=lambda v: (
                v["group"]["facility"],
                v["group"]["department"] or "",
                v["group"]["unit"] or "",
            )
        )
        return {
            **kpi_summary(kpi),
            "description": kpi.description,
            "definition": kpi.definition,
            "for": kpi.for_,
            "min_samples": kpi.min_samples,
            "values": values,
        }

    @app.get("/api/v1/kpis/{kpi_id}/history", tags=["kpis"])
    async def kpi_history(
        kpi_id: str,
        from_: str | None = Query(default=None, alias="from"),
        to: str | None = None,
        facility: str | None = None,
        department: str | None = None,
        unit: str | None = None,
        level: str | None = Query(default=None, pattern="^(facility|department|unit)$"),
        limit: int = Query(default=1000, ge=1, le=100000),
    ) -> dict[str, Any]:
        kpi_or_404(kpi_id)
        samples = backend.history.query(
            kpi_id,
            facility=facility,
            department=department,
            unit=unit,
            level=level,
            start=_parse_time(from_, "from"),
            end=_parse_time(to, "to"),
            limit=limit,
        )
        return {"kpi": kpi_id, "windows": [sample_json(s) for s in samples]}

    @app.get("/api/v1/reports/{kpi_id}", tags=["reports"])
    async def period_report(
        kpi_id: str,
        from_: str = Query(alias="from", description="start of the period (ISO 8601, inclusive)"),
        to: str = Query(description="end of the period (ISO 8601, exclusive)"),
        by: str = Query(default="unit", pattern="^(unit|department|facility)$"),
    ) -> dict[str, Any]:
        kpi = kpi_or_404(kpi_id)
        start, end = _parse_time(from_, "from"), _parse_time(to, "to")
        assert start is not None and end is not None
        if end <= start:
            raise Problem(400, "Invalid period", f"to ({to}) must be after from ({from_})")
        rows = await asyncio.to_thread(backend.report, kpi_id, start, end, by)  # type: ignore[arg-type]
        return {
            "kpi": kpi_summary(kpi),
            "period": {"from": start.isoformat(), "to": end.isoformat()},
            "by": by,
            "computed_from": "event log (polars)",
            "rows": [r.to_json() for r in rows],
        }

    # -- scorecard -----------------------------------------------------------------------
    @app.get("/api/v1/scorecard", tags=["scorecard"])
    async def scorecard(
        facility: str | None = None,
        department: str | None = None,
        unit: str | None = None,
        trend: int | None = Query(default=None, ge=0, le=500),
    ) -> dict[str, Any]:
        settings = backend.scorecard
        trend = settings.trend if trend is None else trend
        facility = facility or _default_facility(backend)
        key: GroupKey = (facility or "", department, unit)
        unit_types = backend.places.unit_types()
        perspectives = []
        for persp in Perspective:
            items = []
            for kpi in backend.catalogue:
                if kpi.perspective is not persp:
                    continue
                live = backend.board.get(kpi.id, key)
                past = (
                    backend.history.query(
                        kpi.id,
                        facility=facility,
                        department=department or "",
                        unit=unit or "",
                        limit=trend,
                    )
                    if trend
                    else []
                )
                held_to = levels_json(kpi, unit_types.get(key))  # the unit type's target, if any
                items.append(
                    {
                        **kpi_summary(kpi),
                        "target": held_to["target"],
                        "thresholds": held_to["thresholds"],
                        "value": live.value if live else None,
                        "numerator": live.numerator if live else None,
                        "denominator": live.denominator if live else None,
                        "status": live.status if live else "no_data",
                        "n": live.n if live else 0,
                        "window": sample_json(live)["window"] if live else None,
                        "trend": [
                            {"end": s.window.end.isoformat(), "value": s.value, "status": s.status}
                            for s in past
                        ],
                    }
                )
            perspectives.append(
                {
                    "id": persp.value,
                    "title": PERSPECTIVE_TITLES[persp],
                    "status": perspective_status(items, settings.status, settings.weights),
                    "kpis": items,
                }
            )
        return {
            "group": {"facility": facility, "department": department, "unit": unit},
            "status_rule": settings.status,
            "as_of": datetime.now(UTC).isoformat(),
            "perspectives": perspectives,
            "places": _places(backend),
        }

    # -- alerts --------------------------------------------------------------------------
    @app.get("/api/v1/alerts", tags=["alerts"])
    async def list_alerts(
        state: str | None = Query(default=None, pattern="^(firing|resolved)$"),
        limit: int = Query(default=200, ge=1, le=10000),
    ) -> dict[str, Any]:
        return {"alerts": backend.alerts.store.query(state, limit)}

    @app.get("/api/v1/alerts/{alert_id}", tags=["alerts"])
    async def get_alert(alert_id: str) -> dict[str, Any]:
        alert = backend.alerts.store.get(alert_id)
        if alert is None:
            raise Problem(404, "Unknown alert", f"no alert with id {alert_id!r}")
        notices = [
            {
                k: n[k]
                for k in (
                    "channel",
                    "recipient",
                    "event",
                    "created_at",
                    "delivered_at",
                    "held",
                    "cancelled_at",
                    "failed_at",
                    "attempts",
                    "last_error",
                )
            }
            for n in backend.alerts.store.notices(alert_id)
        ]
        return {**alert, "audit": backend.alerts.store.audit(alert_id), "notices": notices}

    @app.post("/api/v1/alerts/{alert_id}/ack", tags=["alerts"])
    async def ack_alert(alert_id: str, body: AckRequest) -> dict[str, Any]:
        alert = backend.alerts.acknowledge(alert_id, body.by, body.note)
        if alert is None:
            raise Problem(404, "Unknown alert", f"no alert with id {alert_id!r}")
        return alert

    # -- silences ------------------------------------------------------------------------
    @app.post("/api/v1/silences", tags=["alerts"], status_code=201)
    async def create_silence(body: SilenceRequest) -> dict[str, Any]:
        """Hold notices for matching alerts until ends_at (the alerts are still recorded)."""
        now = time.time()
        starts = body.starts_at.timestamp() if body.starts_at else now
        ends = body.ends_at.timestamp() if body.ends_at else starts + (body.duration or 0)
        if ends <= max(starts, now):
            raise Problem(422, "Invalid silence", "ends_at (or starts_at + duration) must be in the future")
        if not body.matchers:
            raise Problem(422, "Invalid silence", "give at least one matcher (kpi, unit, severity, ...)")
        return backend.alerts.silence(dict(body.matchers), starts, ends, body.created_by, body.comment)

    @app.get("/api/v1/silences", tags=["alerts"])
    async def list_silences(expired: bool = False) -> dict[str, Any]:
        return {"silences": backend.alerts.store.silences(include_expired=expired)}

    @app.delete("/api/v1/silences/{silence_id}", tags=["alerts"])
    async def expire_silence(silence_id: str, by: str = Query(min_length=1)) -> dict[str, Any]:
        if not backend.alerts.store.expire_silence(silence_id, by):
            raise Problem(404, "Unknown silence", f"no active silence {silence_id!r}")
        return {"expired": silence_id}

    # -- dead letters --------------------------------------------------------------------
    @app.get("/api/v1/dead-letters", tags=["dead letters"])
    async def dead_letters(
        source: str | None = None,
        after: int = Query(default=0, ge=0),
        limit: int = Query(default=100, ge=1, le=1000),
    ) -> dict[str, Any]:
        letters = backend.dead_letters.query(source=source, after=after, limit=limit)
        return {
            "dead_letters": [d.summary() for d in letters],
            "counts": backend.dead_letters.count(),
        }

    @app.post("/api/v1/dead-letters/replay", tags=["dead letters"])
    async def replay_dead_letters(body: ReplayRequest) -> dict[str, Any]:
        """Send dead letters through their connector again (after a fix). A letter taken is
        closed; one rejected again stays pending with the new reason."""
        if replayer is None:
            raise Problem(501, "Replay unavailable", "this API process has no connectors to replay through")
        try:
            letters = backend.dead_letters.select(body.ids, body.source, body.include_replayed)
        except KeyError as exc:
            raise Problem(404, "Unknown dead letter", str(exc.args[0])) from None
        done = await replayer.replay(letters)
        return {
            "replayed": [r.as_dict() for r in done],
            "taken": sum(r.taken for r in done),
            "still_rejected": sum(not r.taken for r in done),
        }

    # -- stream --------------------------------------------------------------------------
    @app.get("/api/v1/stream", tags=["stream"])
    async def stream(request: Request) -> StreamingResponse:
        async def events():  # type: ignore[no-untyped-def]
            with backend.board.subscribe() as queue:
                yield b": connected\n\n"
                while not await request.is_disconnected():
                    try:
                        message = await asyncio.wait_for(queue.get(), 15)
                    except TimeoutError:
                        yield b": keep-alive\n\n"
                        continue
                    yield (
                        f"event: {message['type']}\n".encode()
                        + b"data: "
                        + orjson.dumps(message["data"])
                        + b"\n\n"
                    )

        return StreamingResponse(
            events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )

    # -- page ----------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str) -> FileResponse:
        path = (STATIC / name).resolve()
        if path.parent != STATIC.resolve() or not path.is_file():
            raise Problem(404, "Not Found")
        return FileResponse(path)

    return app


def _default_facility(backend: Backend) -> str | None:
    if backend.places.facilities:
        return backend.places.facilities[0].id
    for sample in backend.board.current.values():
        return sample.group.facility
    return None


def _places(backend: Backend) -> list[dict[str, Any]]:
    return [
        {
            "facility": f.id,
            "name": f.name,
            "departments": [
                {
                    "id": d.id,
                    "name": d.name,
                    "units": [{"id": u.id, "name": u.name, "beds": u.beds} for u in d.units],
                }
                for d in f.departments
            ],
        }
        for f in backend.places.facilities
    ]


SEVERITY = {"ok": 0.0, "warning": 1.0, "critical": 2.0}


def perspective_status(items: list[dict[str, Any]], rule: str, weights: dict[str, float]) -> str:
    """Worst of the KPIs with data, or their weighted mean severity (ok 0, warning 1,
    critical 2) rounded to the nearest status. KPIs without data do not count."""
    rated = [i for i in items if i["status"] in SEVERITY]
    if not rated:
        return "no_data"
    if rule == "worst":
        return max((i["status"] for i in rated), key=SEVERITY.__getitem__)
    total = sum(weights.get(i["id"], 1.0) for i in rated)
    score = sum(weights.get(i["id"], 1.0) * SEVERITY[i["status"]] for i in rated) / total if total else 0.0
    return "critical" if score >= 1.5 else "warning" if score >= 0.5 else "ok"
