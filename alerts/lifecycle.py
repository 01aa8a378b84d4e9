"""The transitions of one alert: fired -> (severity changed) -> acknowledged, escalated,
reminded -> resolved; silences. Each step answers what changes (the new Alert, or the
columns to set) and touches nothing: the service stores it and acts on it. Only restore()
has an effect: it puts a restored alert's breach or outage back in the evaluator or feeds.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from alerts.evaluator import Evaluator, Track
from alerts.feeds import UNKNOWN_PLACES_ALERT, FeedWatch
from alerts.model import Alert, Change
from engine.samples import GroupKey

Columns = dict[str, Any]  # alert columns to set, by name


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


def ts(iso_time: str) -> float:
    return datetime.fromisoformat(iso_time).timestamp()


def fired(c: Change, now: float) -> Alert:
    """A new alert for a change of kind fired, with an id of its own (kept across retries)."""
    window = c.details.get("window") or {}
    return Alert(
        id=uuid.uuid4().hex,
        kind=c.labels["kind"],
        kpi=c.labels["kpi"],
        name=c.name,
        perspective=c.labels["perspective"],
        source=c.labels.get("source"),
        facility=c.place[0],
        department=c.place[1],
        unit=c.place[2],
        state="firing",
        severity=c.severity,
        value=c.value,
        threshold=c.threshold,
        window_start=window.get("start"),
        window_end=window.get("end"),
        n=c.details.get("n"),
        started_at=iso(c.started),
        fired_at=iso(now),
        summary=c.summary,
        owner=c.labels.get("owner"),
    )


def resolved(c: Change, now: float) -> Columns:
    return {"state": "resolved", "resolved_at": iso(now), "value": c.value}


def severity_changed(c: Change) -> Columns:
    return {"severity": c.severity, "value": c.value, "threshold": c.threshold, "summary": c.summary}


def acknowledged(who: str, note: str | None, now: float) -> Columns:
    return {"acked_at": iso(now), "acked_by": who, "ack_note": note}


def escalated(tier: int, now: float) -> Columns:
    return {"tier": tier, "last_notified_at": now}


def reminded(alert: Alert, now: float) -> Columns:
    return {"reminders": alert.reminders + 1, "last_notified_at": now}


def notified(now: float) -> Columns:
    """People's first notice about it was delivered: escalation counts from here."""
    return {"notified_at": iso(now), "last_notified_at": now}


def routed(alert: Alert, now: float) -> Columns:
    """People's first notice about it was queued (its group_wait is over)."""
    return {"routed_at": alert.routed_at or iso(now), "last_notified_at": now}


def unwanted(event: str | None, alerts: list[Alert]) -> str | None:
    """Why a notice about these alerts is no longer wanted (resolved, or acknowledged before
    it was delivered), or None."""
    if event in ("fired", "escalated", "reminder"):
        if all(a.state == "resolved" for a in alerts):
            return "resolved before it was delivered"
        if event != "fired" and all(a.acked_at for a in alerts):
            return "acknowledged before it was delivered"
    return None


def silence(
    matchers: Mapping[Any, Any], starts: float, ends: float, by: str, comment: str | None
) -> dict[str, Any]:
    """A new silence: notices about alerts whose labels match wait from starts to ends."""
    return {
        "id": uuid.uuid4().hex,
        "matchers": dict(matchers),
        "starts_at": starts,
        "ends_at": ends,
        "created_by": by,
        "comment": comment,
    }


def restore(alert: Alert, evaluator: Evaluator, feeds: FeedWatch) -> tuple[str, GroupKey]:
    """An alert firing before a restart stays firing: its breach or outage is tracked again
    (no second notice for the episode). Returns the key the service knows it by."""
    place = alert.place
    name = alert.alert_name
    started = ts(alert.started_at)
    if name == UNKNOWN_PLACES_ALERT:  # resolved at the first check unless codes come again
        feeds.restored_unknown = (place, started)
    elif alert.kind == "action":  # the plan watch takes it from the store's firing alerts
        pass
    elif alert.kind == "feed":
        parts = name.split(":", 1)
        feed_key = (parts[1] if len(parts) > 1 else "", place[0], place[2] or "")
        feeds.down[feed_key] = started
    else:
        evaluator.tracks[(name, place)] = Track(
            state="firing", since=started, severity=alert.severity, episode=1, started=started
        )
    return (name, place)
