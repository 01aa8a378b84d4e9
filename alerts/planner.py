"""Who hears what, and when: routes.yaml's routing, grouping (group_wait), escalation and
reminder schedule, silences, mute windows and inhibition, turned into notices. No I/O: the
service gives it the alerts (and what the store knows of them) and stores what it plans.

    gather / due       alerts of one route and group firing within group_wait go out as one
    first_notices      the grouped notice to each person the route names
    next_step          escalate an unacknowledged alert to the next tier, or remind
    hold_reason        a notice that must wait (silence, inhibition, mute window), and until when
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any, Literal

from alerts.channels import Channel
from alerts.lifecycle import routed, ts
from alerts.model import Alert
from alerts.people import Directory
from alerts.retry import Retry
from alerts.routes import Route, RoutesConfig, matches
from alerts.store import Notice, OutboxItem
from engine.definitions import Catalogue
from engine.samples import GroupKey

HOLD_RECHECK = 30.0  # a held notice is looked at again this often (silences can be lifted early)

Stale = Callable[[str, GroupKey], str | None]  # (KPI id, place) -> why its data is stale, or None
Audit = tuple[str | None, str, str | None]  # alert id, action, detail
GroupId = tuple[str, str, tuple[Any, ...]]  # route, event, the alert's values of route.group_by


@dataclass
class Gathering:
    """Alerts of one route and group, firing within group_wait: one notice per person."""

    route: Route
    event: str
    place: GroupKey
    due: float
    alert_ids: list[str] = field(default_factory=list)
    retry: Retry = field(default_factory=Retry)


@dataclass(frozen=True)
class Step:
    """What an unacknowledged firing alert is due: escalation to `tier`, or a reminder."""

    kind: Literal["escalate", "remind"]
    route: Route
    tier: int


class Planner:
    def __init__(
        self,
        catalogue: Catalogue,
        routes: RoutesConfig,
        directory: Directory,
        channels: dict[str, Channel],
        zone: tzinfo,
        stale: Stale,
    ):
        self.catalogue = catalogue
        self.routes = routes
        self.directory = directory
        self.channels = channels
        self.zone = zone
        self.stale = stale
        self.gathering: dict[GroupId, Gathering] = {}

    # -- what a notice says --------------------------------------------------------------
    def payload(self, alert: Alert, event: str) -> dict[str, Any]:
        kpi = self.catalogue.kpis.get(alert.kpi)
        return {
            "alert_id": alert.id,
            "event": event,
            "kind": alert.kind,
            "kpi": alert.kpi,
            "kpi_name": kpi.name if kpi else _title(alert),
            "perspective": alert.perspective,
            "severity": alert.severity,
            "facility": alert.facility,
            "department": alert.department,
            "unit": alert.unit,
            "value": alert.value,
            "unit_of_measure": kpi.unit if kpi else ("min quiet" if alert.kind == "feed" else "h overdue"),
            "threshold": alert.threshold,
            "target": kpi.target if kpi else None,
            "direction": kpi.direction.value if kpi else None,
            "window": {"start": alert.window_start, "end": alert.window_end},
            "n": alert.n,
            "started_at": alert.started_at,
            "fired_at": alert.fired_at,
            "resolved_at": alert.resolved_at,
            "acked_by": alert.acked_by,
            "summary": alert.summary,
        }

    def broadcast(self, alert: Alert, event: str, now: float, tag: str = "") -> list[Notice]:
        """Every alert change to each integration (channels with routed: false)."""
        payload = self.payload(alert, event)
        return [
            Notice(name, f"{alert.id}:{event}{tag}:{name}", payload, (alert.id,), event, not_before=now)
            for name, channel in self.channels.items()
            if not getattr(channel, "routed", False)
        ]

    def person_notices(
        self, route: Route, roles: list[str], alerts: list[Alert], event: str, tag: str, now: float
    ) -> tuple[list[Notice], list[str]]:
        """One notice per person per channel they can be reached on; (notices, who)."""
        place = alerts[0].place
        ids = tuple(sorted(a.id for a in alerts))
        digest = hashlib.sha1("|".join(ids).encode()).hexdigest()[:16]
        notices: list[Notice] = []
        who: list[str] = []
        seen: set[str] = set()
        for role in roles:
            for contact in self.directory.resolve(role, place, alerts[0].owner):
                if contact.staff_id in seen:
                    continue
                seen.add(contact.staff_id)
                recipient = {**contact.as_dict(), "email": contact.person.email}
                reached = False
                for name, channel in self.channels.items():
                    if not getattr(channel, "routed", False) or not channel.address(recipient):
                        continue
                    payload = {
                        "event": event,
                        "route": route.name,
                        "recipient": recipient,
                        "alerts": [self.payload(a, event) for a in alerts],
                    }
                    key = f"{event}:{tag}:{digest}:{name}:{contact.staff_id}"
                    notices.append(Notice(name, key, payload, ids, event, contact.staff_id, route.name, now))
                    reached = True
                who.append(f"{contact.person.name} ({role}{'' if reached else ', no channel'})")
        return notices, who

    # -- grouping ------------------------------------------------------------------------
    def gather(self, alert: Alert, event: str, now: float, told: set[str] | None = None) -> None:
        """Hold a firing alert for its routes' group_wait, with others of the same group
        (`told`: routes whose notices are queued already, after a restart or takeover)."""
        for route in self.routes.route_for(alert.labels):
            if told and route.name in told:
                continue
            key = (route.name, event, tuple(alert.get(k) for k in route.group_by))
            group = self.gathering.get(key)
            if group is None:
                group = self.gathering[key] = Gathering(route, event, alert.place, now + route.group_wait)
            if alert.id not in group.alert_ids:
                group.alert_ids.append(alert.id)

    def drop(self, alert_id: str) -> None:
        """A resolved alert leaves the groups it waits in."""
        for key, group in list(self.gathering.items()):
            if alert_id in group.alert_ids:
                group.alert_ids.remove(alert_id)
                if not group.alert_ids:
                    del self.gathering[key]

    def due(self, now: float) -> list[tuple[GroupId, Gathering]]:
        """Groups whose group_wait is over (and whose last failed write has waited enough)."""
        return [(k, g) for k, g in self.gathering.items() if g.due <= now and g.retry.ready(now)]

    def flushed(self, key: GroupId) -> None:
        """The group's notices are queued: it is gathered no longer."""
        del self.gathering[key]

    @property
    def retrying(self) -> bool:
        return any(g.retry.failures for g in self.gathering.values())

    def first_notices(
        self, group: Gathering, alerts: list[Alert], now: float
    ) -> tuple[list[Notice], list[Audit], list[tuple[str, dict[str, Any]]]]:
        """The group's notices to people, the audit lines, and the alerts' routed columns."""
        route = group.route
        notices, who = self.person_notices(route, route.receivers, alerts, group.event, "0", now)
        detail = ", ".join(who) or "nobody holds the role"
        audits: list[Audit] = [(a.id, f"routed ({route.name})", detail) for a in alerts]
        changes = [(a.id, routed(a, now)) for a in alerts]
        return notices, audits, changes

    # -- escalation and reminders --------------------------------------------------------
    def next_step(self, alert: Alert, now: float, first_pending: Callable[[], bool]) -> Step | None:
        """Escalate an unacknowledged firing alert, or remind, counting from its first
        delivered notice (`first_pending()`: its first notice is still held; asked only when
        nothing has been delivered yet)."""
        if alert.state != "firing" or alert.acked_at is not None:
            return None
        told = alert.notified_at or alert.routed_at
        if told is None or (alert.notified_at is None and first_pending()):
            return None  # still gathering, or its first notice is held: escalation counts from delivery
        routes = self.routes.route_for(alert.labels)
        if not routes:
            return None
        route = routes[0]
        fired = ts(told)
        if alert.tier < len(route.escalate) and now >= fired + route.escalate[alert.tier].after:
            return Step("escalate", route, alert.tier + 1)
        if now - (alert.last_notified_at or fired) >= route.repeat_interval:
            return Step("remind", route, alert.tier)
        return None

    def escalation(self, alert: Alert, step: Step, now: float) -> tuple[list[Notice], str, str]:
        """Notices to the tier's roles and to integrations; (notices, audit action, detail)."""
        roles = step.route.escalate[step.tier - 1].to
        notices, who = self.person_notices(step.route, roles, [alert], "escalated", str(step.tier), now)
        notices += self.broadcast(alert, "escalated", now, tag=str(step.tier))
        return notices, f"escalated to {', '.join(roles)}", ", ".join(who) or "nobody holds the role"

    def reminder(self, alert: Alert, step: Step, now: float) -> tuple[list[Notice], str]:
        """A reminder to everyone told so far; (notices, detail)."""
        route = step.route
        roles = list(route.receivers) + [r for t in route.escalate[: alert.tier] for r in t.to]
        notices, who = self.person_notices(route, roles, [alert], "reminder", str(alert.reminders + 1), now)
        return notices, ", ".join(who)

    def resolved_notices(self, alert: Alert, told: set[str], now: float) -> list[Notice]:
        """Whoever was told it fired (`told`: staff ids) is told it resolved, nobody else."""
        if not told:
            return []
        out: list[Notice] = []
        for route in self.routes.route_for(alert.labels):
            if not route.send_resolved:
                continue
            roles = list(route.receivers) + [r for t in route.escalate for r in t.to]
            notices, _ = self.person_notices(route, roles, [alert], "resolved", "0", now)
            out += [n for n in notices if n.recipient in told]
        return out

    # -- holding back --------------------------------------------------------------------
    def inhibited(self, alert: Alert) -> str | None:
        """Why a KPI or forecast alert says nothing now (a feed it depends on has stopped), or None."""
        if alert.kind not in ("kpi", "forecast"):
            return None
        return self.stale(alert.kpi, alert.place)

    def hold_reason(
        self,
        item: OutboxItem,
        alerts: list[Alert],
        silences: Callable[[], list[dict[str, Any]]],
        now: float,
    ) -> tuple[float, str] | None:
        """(until, why) when this notice must wait; None when it may go now. `silences()`
        reads the active silences (only for notices a silence can hold)."""
        if item.event in ("resolved", "acknowledged"):
            return None
        for s in silences():
            if s["starts_at"] <= now < s["ends_at"] and all(matches(s["matchers"], a.labels) for a in alerts):
                return min(s["ends_at"], now + HOLD_RECHECK), f"silenced by {s['id'][:8]} ({s['created_by']})"
        reasons = [self.inhibited(a) for a in alerts]
        if reasons and all(reasons):
            return now + HOLD_RECHECK, f"inhibited: {reasons[0]}"
        if item.route is not None:
            route = next((r for r in self.routes.routes if r.name == item.route), None)
            moment = datetime.fromtimestamp(now, UTC)
            if route is not None and self.routes.muted(route, moment, self.zone):
                return self.routes.mute_ends(
                    route, moment, self.zone
                ), f"mute window ({', '.join(route.mute)})"
        return None


def _title(alert: Alert) -> str:
    """What a notice calls an alert that is not a KPI's: a stopped feed; an overdue action or
    missed milestone by its summary (which one, due when: the owner must know which)."""
    if alert.kind == "feed":
        return f"Data feed stopped: {(alert.name or '').split(':', 1)[-1]}"
    return alert.summary
