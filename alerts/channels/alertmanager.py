"""Prometheus Alertmanager, API v2: carescore's alerts as Alertmanager alerts, for sites
whose operations already route and silence there.

Alertmanager forgets a firing alert that is not re-sent (resolve_timeout), so this channel
keeps it in step: every change is pushed at once, and every firing alert again each
`resend_every`; a resolved alert is sent with its endsAt. Pushing the same state twice is
harmless, so a failed push is simply repeated by the next one.
"""

from __future__ import annotations

from typing import Any

import httpx

from alerts.channels import DeliveryError
from alerts.model import Alert
from engine.secrets import redact_url


def am_alert(alert: Alert, generator_url: str | None = None) -> dict[str, Any]:
    labels = {
        "alertname": alert.kpi,
        "severity": alert.severity,
        "facility": alert.facility,
        "department": alert.department,
        "unit": alert.unit,
        "perspective": alert.perspective,
        "feed": alert.name.split(":", 1)[1] if alert.kpi == "feed_stale" and alert.name else None,
        "source": "carescore",
    }
    out: dict[str, Any] = {
        "labels": {k: str(v) for k, v in labels.items() if v not in (None, "")},
        "annotations": {
            "summary": alert.summary,
            "value": "" if alert.value is None else f"{alert.value:.2f}",
            "threshold": "" if alert.threshold is None else f"{alert.threshold:.2f}",
            "carescore_alert_id": alert.id,
        },
        "startsAt": alert.fired_at,
    }
    if alert.state == "resolved" and alert.resolved_at:
        out["endsAt"] = alert.resolved_at
    if generator_url:
        out["generatorURL"] = f"{generator_url}/api/v1/alerts/{alert.id}"
    return out


class AlertmanagerChannel:
    def __init__(
        self,
        url: str,
        *,
        name: str = "alertmanager",
        timeout: float = 5.0,
        resend_every: float = 60.0,
        generator_url: str | None = None,
    ):
        self.name = name
        self.url = url.rstrip("/")
        self.shown = redact_url(self.url)  # basic-auth user:password in it stays out of errors
        self.timeout = timeout
        self.resend_every = resend_every
        self.generator_url = generator_url
        self.last_sync = 0.0
        self._client: httpx.AsyncClient | None = None

    async def push(self, alerts: list[Alert]) -> None:
        if not alerts:
            return
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout)
        body = [am_alert(a, self.generator_url) for a in alerts]
        try:
            response = await self._client.post(f"{self.url}/api/v2/alerts", json=body)
        except httpx.HTTPError as exc:
            said = str(exc).replace(self.url, self.shown)
            raise DeliveryError(f"{self.shown}: {type(exc).__name__}: {said}") from None
        if not response.is_success:
            raise DeliveryError(f"{self.shown}: HTTP {response.status_code}: {response.text[:200]}")

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
