"""The alert service: evaluate live samples, record alerts, deliver notifications.

Transitions are written (alert + outbox rows) before anything is sent; a delivery loop
sends what is due, retries failures with exponential backoff and jitter, and after
`max_attempts` marks the notification failed (kept in the outbox, visible in /metrics).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Counter

from alerts.channels import Channel, DeliveryError
from alerts.evaluator import Evaluator, Track, Transition
from alerts.store import AlertStore
from engine.definitions import Catalogue, KpiDefinition
from engine.samples import Sample

log = logging.getLogger(__name__)

NOTIFICATIONS = Counter(
    "carescore_alert_notifications",
    "Alert notifications by channel and outcome.",
    ["channel", "outcome"],
)
TRANSITIONS = Counter("carescore_alert_transitions", "Alert transitions by kind.", ["kind"])


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


def fmt(value: float | None) -> str:
    if value is None:
        return "no data"
    return f"{value:.1f}" if abs(value) < 1000 else f"{value:,.0f}"


def summary(kpi: KpiDefinition, sample: Sample, severity: str, threshold: float | None) -> str:
    """One line a charge nurse can act on. Names the place, never a patient."""
    place = sample.group.unit or sample.group.department or sample.group.facility
    level = f" ({severity} at {fmt(threshold)} {kpi.unit})" if threshold is not None else ""
    return f"{kpi.name} is {fmt(sample.value)} {kpi.unit} on {place}{level}"


class AlertService:
    def __init__(
        self,
        catalogue: Catalogue,
        store: AlertStore,
        channels: list[Channel],
        *,
        max_attempts: int = 8,
        retry_backoff: float = 1.0,
        clock: Callable[[], float] = time.time,
        unit_types: dict[tuple[str, str | None, str | None], str] | None = None,
    ):
        self.catalogue = catalogue
        self.store = store
        self.channels = {c.name: c for c in channels}
        self.max_attempts = max_attempts
        self.retry_backoff = retry_backoff
        self.clock = clock
        self.evaluator = Evaluator(catalogue, unit_types)
        self._active: dict[tuple[str, tuple[str, str | None, str | None]], str] = {}
        self._wake = asyncio.Event()
        self._restore()

    def _restore(self) -> None:
        """Alerts firing before a restart stay firing: no second notice for the same episode."""
        for alert in self.store.active():
            key = (alert["kpi"], (alert["facility"], alert["department"], alert["unit"]))
            self._active[key] = alert["id"]
            started = datetime.fromisoformat(alert["started_at"]).timestamp()
            self.evaluator.tracks[key] = Track(
                state="firing", since=started, severity=alert["severity"], episode=1
            )

    # -- evaluation ----------------------------------------------------------------------
    def observe(self, samples: list[Sample], now: float | None = None) -> list[Transition]:
        now = self.clock() if now is None else now
        transitions = self.evaluator.evaluate(samples, now)
        for t in transitions:
            TRANSITIONS.labels(t.kind).inc()
            try:
                self._record(t, now)
            except Exception:
                log.exception("could not record alert transition", extra={"kpi": t.kpi.id})
        if transitions:
            self._wake.set()
        return transitions

    def _payload(self, t: Transition, alert_id: str, event: str) -> dict[str, Any]:
        s = t.sample
        return {
            "alert_id": alert_id,
            "event": event,
            "kpi": t.kpi.id,
            "kpi_name": t.kpi.name,
            "perspective": t.kpi.perspective.value,
            "severity": t.severity,
            "facility": s.group.facility,
            "department": s.group.department,
            "unit": s.group.unit,
            "value": s.value,
            "unit_of_measure": t.kpi.unit,
            "threshold": t.threshold,
            "target": t.kpi.target,
            "direction": t.kpi.direction.value,
            "window": {"start": s.window.start.isoformat(), "end": s.window.end.isoformat()},
            "n": s.n,
            "started_at": _iso(t.started),
            "summary": summary(t.kpi, s, t.severity, t.threshold),
        }

    def _notifications(
        self, alert_id: str, event: str, payload: dict[str, Any]
    ) -> list[tuple[str, str, dict[str, Any]]]:
        return [(name, f"{alert_id}:{event}:{name}", payload) for name in self.channels]

    def _record(self, t: Transition, now: float) -> None:
        key = (t.kpi.id, t.group_key)
        s = t.sample
        if t.kind == "fired":
            import uuid

            alert_id = uuid.uuid4().hex
            payload = self._payload(t, alert_id, "fired")
            self.store.fire(
                {
                    "id": alert_id,
                    "kpi": t.kpi.id,
                    "facility": s.group.facility,
                    "department": s.group.department,
                    "unit": s.group.unit,
                    "state": "firing",
                    "severity": t.severity,
                    "value": s.value,
                    "threshold": t.threshold,
                    "window_start": s.window.start.isoformat(),
                    "window_end": s.window.end.isoformat(),
                    "n": s.n,
                    "started_at": _iso(t.started),
                    "fired_at": _iso(now),
                    "summary": payload["summary"],
                },
                self._notifications(alert_id, "fired", payload),
            )
            self._active[key] = alert_id
            log.info(
                "alert fired",
                extra={"kpi": t.kpi.id, "group": s.group.label(), "severity": t.severity},
            )
            return
        active = self._active.get(key)
        if active is None:
            return
        alert_id = active
        if t.kind == "resolved":
            payload = self._payload(t, alert_id, "resolved")
            self.store.update(
                alert_id,
                {"state": "resolved", "resolved_at": _iso(now), "value": s.value},
                "resolved",
                self._notifications(alert_id, "resolved", payload),
                detail=payload["summary"],
            )
            del self._active[key]
            log.info("alert resolved", extra={"kpi": t.kpi.id, "group": s.group.label()})
        elif t.kind == "severity_changed":
            self.store.update(
                alert_id,
                {"severity": t.severity, "value": s.value, "threshold": t.threshold},
                f"severity {t.previous_severity} -> {t.severity}",
                [],
            )

    # -- people --------------------------------------------------------------------------
    def acknowledge(self, alert_id: str, who: str, note: str | None = None) -> dict[str, Any] | None:
        alert = self.store.get(alert_id)
        if alert is None:
            return None
        if alert["acked_at"] is None:
            self.store.update(
                alert_id,
                {"acked_at": _iso(self.clock()), "acked_by": who, "ack_note": note},
                "acknowledged",
                [],
                actor=who,
                detail=note,
            )
        return self.store.get(alert_id)

    # -- delivery ------------------------------------------------------------------------
    async def deliver_due(self) -> int:
        sent = 0
        for item in self.store.due(self.clock()):
            channel = self.channels.get(item.channel)
            if channel is None:
                self.store.retry_later(item.id, self.clock(), f"no channel {item.channel!r} configured", True)
                continue
            try:
                await channel.send(item.payload, item.idempotency_key)
            except DeliveryError as exc:
                attempts = item.attempts + 1
                give_up = attempts >= self.max_attempts or not exc.retry
                delay = self.retry_backoff * (2 ** (attempts - 1)) * random.uniform(0.5, 1.5)
                self.store.retry_later(item.id, self.clock() + delay, str(exc), give_up)
                NOTIFICATIONS.labels(item.channel, "failed" if give_up else "retry").inc()
                log.warning(
                    "alert notification not delivered",
                    extra={
                        "channel": item.channel,
                        "attempt": attempts,
                        "error": str(exc),
                        "gave_up": give_up,
                    },
                )
                continue
            self.store.delivered(item.id)
            NOTIFICATIONS.labels(item.channel, "delivered").inc()
            sent += 1
        return sent

    async def run(self) -> None:
        """Deliver until cancelled; wakes on new transitions, polls for retries."""
        while True:
            try:
                await self.deliver_due()
            except Exception:
                log.exception("alert delivery loop error")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 0.5)

    async def close(self) -> None:
        for channel in self.channels.values():
            closer = getattr(channel, "close", None)
            if closer is not None:
                await closer()
