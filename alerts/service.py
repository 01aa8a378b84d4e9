"""The alert service: KPI breaches and stopped feeds become alerts; routes.yaml decides who
hears, when and how; every notice goes through a durable outbox.

    observe(samples, now)  evaluate, record transitions, gather notices (group_wait)
    tick(now)              flush gathered groups, escalate unacknowledged alerts, remind
    deliver_due()          send what is due: silences, mute windows and inhibition hold a
                           notice back; an alert resolved or acknowledged first cancels it

Nothing accepted is lost when the store fails: a change it would not take stays in memory
(in order) and is written again on later ticks with backoff, and the failure is counted
(carescore_alert_store_errors_total), logged at ERROR and readable as `store_failing_since`
and `unstored` for the health endpoint. Nothing hostile stops delivery: a notice whose
rendering or sending raises is retried alone with backoff, then marked failed.

Integrations (webhooks with routed: false) get every alert change, one JSON per alert;
Alertmanager is kept in step with the firing alerts; people get grouped notices.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any

from prometheus_client import Counter, Gauge

from alerts.channels import Channel, DeliveryError
from alerts.channels.alertmanager import AlertmanagerChannel
from alerts.db import unavailable
from alerts.evaluator import Evaluator, Track
from alerts.feeds import FEED_ALERT, UNKNOWN_PLACES_ALERT, FeedWatch
from alerts.model import Change
from alerts.people import Directory
from alerts.routes import Route, RoutesConfig, matches
from alerts.store import AlertStore, Notice, OutboxItem
from engine.definitions import Catalogue
from engine.samples import GroupKey, Sample

log = logging.getLogger(__name__)

NOTIFICATIONS = Counter(
    "carescore_alert_notifications",
    "Alert notifications by channel and outcome.",
    ["channel", "outcome"],
)
TRANSITIONS = Counter("carescore_alert_transitions", "Alert transitions by kind.", ["kind"])
STORE_ERRORS = Counter(
    "carescore_alert_store_errors",
    "Alert store reads and writes that failed (the change is kept and retried), by operation.",
    ["operation"],
)
UNSTORED = Gauge(
    "carescore_alert_changes_unstored",
    "Alert changes held in memory because the alert store has not taken them yet.",
)
NOTICE_ERRORS = Counter(
    "carescore_alert_notice_errors",
    "Notices whose rendering or sending raised (not a refusal by the receiver), by channel.",
    ["channel"],
)
HOLD_RECHECK = 30.0  # a held notice is looked at again this often (silences can be lifted early)
STORE_RETRY_MAX = 30.0  # longest wait between two attempts at a failing store

DependsOn = Callable[[str], tuple[set[str], set[str]]]  # KPI id -> (sources, event types)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


def _ts(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


@dataclass
class Retry:
    """Backoff for something the store would not take: 1, 2, 4 ... retry_backoff, at most
    STORE_RETRY_MAX, so a failing database is not hammered on every tick."""

    failures: int = 0
    at: float = 0.0

    def ready(self, now: float) -> bool:
        return self.at <= now

    def failed(self, now: float, base: float) -> float:
        self.failures += 1
        delay = min(base * 2 ** (self.failures - 1), STORE_RETRY_MAX)
        self.at = now + delay
        return delay


@dataclass
class Unstored:
    """A change the store has not taken yet, recorded later in the order it happened."""

    change: Change
    at: float  # when it happened: fired_at / resolved_at are this, however late it is stored
    alert: dict[str, Any] | None = None  # a fired alert, built once: the same id every attempt
    retry: Retry = field(default_factory=Retry)


@dataclass
class Gathering:
    """Alerts of one route and group, firing within group_wait: one notice per person."""

    route: Route
    event: str
    place: GroupKey
    due: float
    alert_ids: list[str] = field(default_factory=list)
    retry: Retry = field(default_factory=Retry)


class StoreUnavailable(Exception):
    """The store could not be reached or was locked: stop this pass, retry after backoff."""


class AlertService:
    def __init__(
        self,
        catalogue: Catalogue,
        store: AlertStore,
        channels: list[Channel],
        *,
        routes: RoutesConfig | None = None,
        directory: Directory | None = None,
        feeds: FeedWatch | None = None,
        depends_on: DependsOn | None = None,
        syncs: list[AlertmanagerChannel] | None = None,
        zone: tzinfo = UTC,
        max_attempts: int = 8,
        retry_backoff: float = 1.0,
        clock: Callable[[], float] = time.time,
        unit_types: dict[GroupKey, str] | None = None,
        on_change: Callable[[dict[str, Any]], None] | None = None,
        on_failed: Callable[[OutboxItem, str], Any] | None = None,
    ):
        self.catalogue = catalogue
        self.store = store
        self.channels = {c.name: c for c in channels}
        self.routes = routes or RoutesConfig()
        self.directory = directory or Directory(self.routes)
        self.feeds = feeds or FeedWatch([])
        self.depends_on = depends_on or (lambda _kpi: (set(), set()))
        self.syncs = syncs or []
        self.zone = zone
        self.max_attempts = max_attempts
        self.retry_backoff = retry_backoff
        self.clock = clock
        self.on_change = on_change or (lambda _event: None)
        self.on_failed = on_failed or (lambda _item, _error: None)
        self.evaluator = Evaluator(catalogue, unit_types)
        self._active: dict[tuple[str, GroupKey], str] = {}
        self._gathering: dict[tuple[str, str, tuple[Any, ...]], Gathering] = {}
        self._sync_now: list[str] = []
        self._wake = asyncio.Event()
        self._unstored: list[Unstored] = []
        self._store_retry = Retry()  # the whole store: set when it is unavailable
        self._alert_retry: dict[str, Retry] = {}  # escalation/reminder writes that failed
        self.store_failing_since: float | None = None
        self._failures = 0  # store failures so far (a pass without new ones is a clean pass)
        self._restore()

    # -- store health ----------------------------------------------------------------------
    @property
    def store_healthy(self) -> bool:
        """False from a failed store operation until every held change has been stored."""
        return self.store_failing_since is None

    @property
    def unstored(self) -> int:
        """Alert changes held in memory, waiting for the store."""
        return len(self._unstored)

    def store_health(self) -> dict[str, Any]:
        """For /healthz: is every alert change stored, and since when not."""
        return {
            "healthy": self.store_healthy,
            "failing_since": self.store_failing_since,
            "unstored_changes": self.unstored,
        }

    def _store_failed(self, operation: str, exc: BaseException, now: float, retry: Retry) -> None:
        """Count, log at ERROR (exception type and the database's message: places and alert
        ids at most, never a patient) and back off; raise StoreUnavailable when the store as
        a whole is down, so the rest of the pass waits instead of failing the same way."""
        down = unavailable(exc)
        delay = (self._store_retry if down else retry).failed(now, self.retry_backoff)
        STORE_ERRORS.labels(operation).inc()
        self._failures += 1
        UNSTORED.set(len(self._unstored))
        if self.store_failing_since is None:
            self.store_failing_since = now
        log.error(
            "alert store %s failed (%s: %s); %d alert change(s) held in memory, next try in %.1f s",
            operation,
            type(exc).__name__,
            str(exc)[:200],
            len(self._unstored),
            delay,
        )
        if down:
            raise StoreUnavailable(operation) from exc

    def _store_ok(self) -> None:
        """A pass without failures: healthy again once nothing is left to store."""
        self._store_retry = Retry()
        UNSTORED.set(len(self._unstored))
        if self._unstored or self._alert_retry or any(g.retry.failures for g in self._gathering.values()):
            return
        if self.store_failing_since is not None:
            log.warning(
                "alert store writable again; everything held was stored",
                extra={"failing_for": self.clock() - self.store_failing_since},
            )
            self.store_failing_since = None

    def _announce(self, change: dict[str, Any]) -> None:
        """on_change (the live stream) must not undo a transition already stored."""
        try:
            self.on_change(change)
        except Exception:
            log.exception("alert change not published", extra={"kind": change.get("kind")})

    # -- start-up ------------------------------------------------------------------------
    def _restore(self) -> None:
        """Alerts firing before a restart stay firing (no second notice for the episode);
        a firing alert nobody was told about yet is gathered again."""
        self.feeds.seen.update(self.store.load_feeds())
        now = self.clock()
        for alert in self.store.active():
            place = (alert["facility"], alert["department"], alert["unit"])
            name = alert.get("name") or alert["kpi"]
            key = (name, place)
            self._active[key] = alert["id"]
            started = _ts(alert["started_at"])
            if name == UNKNOWN_PLACES_ALERT:  # resolved at the first check unless codes come again
                self.feeds.restored_unknown = (place, started)
            elif alert["kind"] == "feed":
                parts = name.split(":", 1)
                feed_key = (parts[1] if len(parts) > 1 else "", place[0], place[2] or "")
                self.feeds.down[feed_key] = started
            else:
                self.evaluator.tracks[key] = Track(
                    state="firing", since=started, severity=alert["severity"], episode=1, started=started
                )
            if alert["routed_at"] is None:
                self._gather(alert, "fired", now)

    # -- evaluation ------------------------------------------------------------------------
    def observe(self, samples: list[Sample], now: float | None = None) -> list[Change]:
        now = self.clock() if now is None else now
        changes = self.feeds.check(now)
        if self.feeds.down:  # a KPI whose feed has stopped shows stale data: not evaluated
            fresh = []
            for s in samples:
                if self._stale(s.kpi, s.group.key):
                    self.evaluator.suspend((s.kpi, s.group.key))
                else:
                    fresh.append(s)
            samples = fresh
        changes += self.evaluator.evaluate(samples, now)
        for c in changes:
            TRANSITIONS.labels(c.kind).inc()
            self._unstored.append(Unstored(c, now))
        self.tick(now)  # records them (or keeps them, when the store fails)
        if changes:
            self._wake.set()
        return changes

    def _labels(self, alert: dict[str, Any]) -> dict[str, Any]:
        return {
            "kind": alert["kind"],
            "kpi": alert["kpi"],
            "perspective": alert["perspective"],
            "facility": alert["facility"],
            "department": alert["department"],
            "unit": alert["unit"],
            "severity": alert["severity"],
        }

    def _payload(self, alert: dict[str, Any], event: str) -> dict[str, Any]:
        kpi = self.catalogue.kpis.get(alert["kpi"])
        return {
            "alert_id": alert["id"],
            "event": event,
            "kind": alert["kind"],
            "kpi": alert["kpi"],
            "kpi_name": kpi.name
            if kpi
            else f"Data feed stopped: {(alert.get('name') or '').split(':', 1)[-1]}",
            "perspective": alert["perspective"],
            "severity": alert["severity"],
            "facility": alert["facility"],
            "department": alert["department"],
            "unit": alert["unit"],
            "value": alert["value"],
            "unit_of_measure": kpi.unit if kpi else "min quiet",
            "threshold": alert["threshold"],
            "target": kpi.target if kpi else None,
            "direction": kpi.direction.value if kpi else None,
            "window": {"start": alert["window_start"], "end": alert["window_end"]},
            "n": alert["n"],
            "started_at": alert["started_at"],
            "fired_at": alert["fired_at"],
            "resolved_at": alert.get("resolved_at"),
            "acked_by": alert.get("acked_by"),
            "summary": alert["summary"],
        }

    def _broadcast(self, alert: dict[str, Any], event: str, now: float) -> list[Notice]:
        payload = self._payload(alert, event)
        return [
            Notice(name, f"{alert['id']}:{event}:{name}", payload, (alert["id"],), event, not_before=now)
            for name, channel in self.channels.items()
            if not getattr(channel, "routed", False)
        ]

    def _drain(self, now: float) -> None:
        """Record held changes in order. A change the store refuses waits (with the later
        changes of the same alert) and the others go on; an unavailable store stops all."""
        waiting: set[tuple[str, GroupKey]] = set()
        for entry in list(self._unstored):
            key = entry.change.key
            if key in waiting or not entry.retry.ready(now):
                waiting.add(key)
                continue
            try:
                self._record(entry)
            except Exception as exc:
                waiting.add(key)
                self._store_failed(f"record {entry.change.kind}", exc, now, entry.retry)
                continue
            self._unstored.remove(entry)

    def _new_alert(self, c: Change, now: float) -> dict[str, Any]:
        window = c.details.get("window") or {}
        return {
            "id": uuid.uuid4().hex,
            "kind": c.labels["kind"],
            "kpi": c.labels["kpi"],
            "name": c.name,
            "perspective": c.labels["perspective"],
            "source": c.labels.get("source"),
            "facility": c.place[0],
            "department": c.place[1],
            "unit": c.place[2],
            "state": "firing",
            "severity": c.severity,
            "value": c.value,
            "threshold": c.threshold,
            "window_start": window.get("start"),
            "window_end": window.get("end"),
            "n": c.details.get("n"),
            "started_at": _iso(c.started),
            "fired_at": _iso(now),
            "summary": c.summary,
        }

    def _record(self, entry: Unstored) -> None:
        """Store one change, then act on it in memory: if the store raises, nothing here
        has changed and the same entry can simply be recorded again."""
        c, now = entry.change, entry.at
        if c.kind == "fired":
            if entry.alert is None:
                entry.alert = self._new_alert(c, now)
            alert = entry.alert
            self.store.fire(alert, self._broadcast(alert, "fired", now))
            self._active[c.key] = alert["id"]
            self._gather(alert, "fired", now)
            self._sync_now.append(alert["id"])
            self._announce({"kind": "fired", "alert": alert})
            log.info(
                "alert fired",
                extra={"alert": c.name, "place": "/".join(p or "" for p in c.place), "severity": c.severity},
            )
            return
        alert_id = self._active.get(c.key)
        if alert_id is None:
            return
        if c.kind == "resolved":
            changes = {"state": "resolved", "resolved_at": _iso(now), "value": c.value}
            alert = {**(self.store.get(alert_id) or {}), **changes}
            notices = self._broadcast(alert, "resolved", now) + self._resolved_notices(alert, now)
            self.store.update(alert_id, changes, "resolved", notices, detail=c.summary)
            self._drop_gathered(alert_id)
            del self._active[c.key]
            self._sync_now.append(alert_id)
            self._announce({"kind": "resolved", "alert": alert})
            log.info("alert resolved", extra={"alert": c.name, "place": "/".join(p or "" for p in c.place)})
        elif c.kind == "severity_changed":
            changes = {
                "severity": c.severity,
                "value": c.value,
                "threshold": c.threshold,
                "summary": c.summary,
            }
            alert = {**(self.store.get(alert_id) or {}), **changes}
            self.store.update(alert_id, changes, f"severity {c.previous_severity} -> {c.severity}")
            self._sync_now.append(alert_id)
            self._announce({"kind": "severity_changed", "alert": alert})

    # -- gathering and planning notices to people ----------------------------------------------
    def _group_values(self, route: Route, alert: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(alert.get(k) for k in route.group_by)

    def _gather(self, alert: dict[str, Any], event: str, now: float) -> None:
        for route in self.routes.route_for(self._labels(alert)):
            key = (route.name, event, self._group_values(route, alert))
            group = self._gathering.get(key)
            if group is None:
                place = (alert["facility"], alert["department"], alert["unit"])
                group = self._gathering[key] = Gathering(route, event, place, now + route.group_wait)
            if alert["id"] not in group.alert_ids:
                group.alert_ids.append(alert["id"])

    def _drop_gathered(self, alert_id: str) -> None:
        for key, group in list(self._gathering.items()):
            if alert_id in group.alert_ids:
                group.alert_ids.remove(alert_id)
                if not group.alert_ids:
                    del self._gathering[key]

    def _person_notices(
        self,
        route: Route,
        roles: list[str],
        alerts: list[dict[str, Any]],
        event: str,
        tag: str,
        now: float,
        not_before: float,
    ) -> tuple[list[Notice], list[str]]:
        """One notice per person per channel they can be reached on; (notices, who)."""
        place = (alerts[0]["facility"], alerts[0]["department"], alerts[0]["unit"])
        ids = tuple(sorted(a["id"] for a in alerts))
        digest = hashlib.sha1("|".join(ids).encode()).hexdigest()[:16]
        notices: list[Notice] = []
        who: list[str] = []
        seen: set[str] = set()
        for role in roles:
            for contact in self.directory.resolve(role, place):
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
                        "alerts": [self._payload(a, event) for a in alerts],
                    }
                    key = f"{event}:{tag}:{digest}:{name}:{contact.staff_id}"
                    notices.append(
                        Notice(name, key, payload, ids, event, contact.staff_id, route.name, not_before)
                    )
                    reached = True
                who.append(f"{contact.person.name} ({role}{'' if reached else ', no channel'})")
        return notices, who

    def _resolved_notices(self, alert: dict[str, Any], now: float) -> list[Notice]:
        """Whoever was told it fired is told it resolved (and nobody else)."""
        told = {r for c, r in self.store.notified(alert["id"]) if r}
        if not told:
            return []
        out: list[Notice] = []
        for route in self.routes.route_for(self._labels(alert)):
            if not route.send_resolved:
                continue
            roles = list(route.receivers) + [r for t in route.escalate for r in t.to]
            notices, _ = self._person_notices(route, roles, [alert], "resolved", "0", now, now)
            out += [n for n in notices if n.recipient in told]
        return out

    # -- the clock: groups, escalation, reminders ------------------------------------------
    def tick(self, now: float | None = None) -> None:
        """Never raises: what the store would not take is kept and tried again later."""
        now = self.clock() if now is None else now
        try:
            if self._store_retry.ready(now):  # else the store was unavailable a moment ago
                self._tick(now)
        finally:
            UNSTORED.set(len(self._unstored))

    def _tick(self, now: float) -> None:
        failures = self._failures
        try:
            self._drain(now)
            self._flush_due(now)
            self._follow_up(now)
        except StoreUnavailable:
            return
        except Exception as exc:  # outside the per-item guards (none expected): back off all
            with contextlib.suppress(StoreUnavailable):
                self._store_failed("tick", exc, now, self._store_retry)
            return
        if self._failures == failures:
            self._store_ok()

    def _flush_due(self, now: float) -> None:
        for key, group in list(self._gathering.items()):
            if group.due > now or not group.retry.ready(now):
                continue
            try:
                self._flush(group, now)
            except Exception as exc:  # kept in _gathering: flushed again after the backoff
                self._store_failed("route", exc, now, group.retry)
                continue
            del self._gathering[key]

    def _follow_up(self, now: float) -> None:
        """Escalate unacknowledged alerts, remind."""
        active = set(self._active.values())
        self._alert_retry = {k: r for k, r in self._alert_retry.items() if k in active}
        for alert_id in list(self._active.values()):
            retry = self._alert_retry.get(alert_id)
            if retry is not None and not retry.ready(now):
                continue
            try:
                self._follow_up_one(alert_id, now)
            except Exception as exc:
                self._store_failed("escalate", exc, now, self._alert_retry.setdefault(alert_id, Retry()))
                continue
            self._alert_retry.pop(alert_id, None)

    def _follow_up_one(self, alert_id: str, now: float) -> None:
        alert = self.store.get(alert_id)
        if alert is None or alert["state"] != "firing" or alert["acked_at"] is not None:
            return
        told = alert["notified_at"] or alert["routed_at"]
        if told is None or (alert["notified_at"] is None and self._fired_pending(alert["id"])):
            return  # still gathering, or its first notice is held: escalation counts from delivery
        routes = self.routes.route_for(self._labels(alert))
        if not routes:
            return
        route = routes[0]
        tier = alert["tier"]
        fired = _ts(told)
        if tier < len(route.escalate) and now >= fired + route.escalate[tier].after:
            self._escalate(alert, route, tier + 1, now)
        elif now - (alert["last_notified_at"] or fired) >= route.repeat_interval:
            self._remind(alert, route, now)

    def _fired_pending(self, alert_id: str) -> bool:
        return any(i.event == "fired" and i.recipient for i in self.store.pending_for(alert_id))

    def _flush(self, group: Gathering, now: float) -> None:
        alerts = [a for a in (self.store.get(i) for i in group.alert_ids) if a and a["state"] == "firing"]
        if not alerts:
            return
        notices, who = self._person_notices(
            group.route, group.route.receivers, alerts, group.event, "0", now, now
        )
        audits = [
            (a["id"], f"routed ({group.route.name})", ", ".join(who) or "nobody holds the role")
            for a in alerts
        ]
        routed = [
            (a["id"], {"routed_at": a["routed_at"] or _iso(now), "last_notified_at": now}) for a in alerts
        ]
        self.store.queue(notices, audits, routed)  # one transaction: all of it, or none to repeat
        self._wake.set()

    def _escalate(self, alert: dict[str, Any], route: Route, tier: int, now: float) -> None:
        roles = route.escalate[tier - 1].to
        notices, who = self._person_notices(route, roles, [alert], "escalated", str(tier), now, now)
        notices += [
            Notice(
                n.channel,
                f"{alert['id']}:escalated{tier}:{n.channel}",
                n.payload,
                n.alert_ids,
                "escalated",
                None,
                None,
                now,
            )
            for n in self._broadcast(alert, "escalated", now)
        ]
        self.store.update(
            alert["id"],
            {"tier": tier, "last_notified_at": now},
            f"escalated to {', '.join(roles)}",
            notices,
            detail=", ".join(who) or "nobody holds the role",
        )
        self._announce({"kind": "escalated", "alert": {**alert, "tier": tier, "last_notified_at": now}})
        self._wake.set()

    def _remind(self, alert: dict[str, Any], route: Route, now: float) -> None:
        count = alert["reminders"] + 1
        roles = list(route.receivers) + [r for t in route.escalate[: alert["tier"]] for r in t.to]
        notices, who = self._person_notices(route, roles, [alert], "reminder", str(count), now, now)
        self.store.update(
            alert["id"],
            {"reminders": count, "last_notified_at": now},
            "reminder",
            notices,
            detail=", ".join(who),
        )
        self._wake.set()

    # -- people act --------------------------------------------------------------------------
    def acknowledge(self, alert_id: str, who: str, note: str | None = None) -> dict[str, Any] | None:
        alert = self.store.get(alert_id)
        if alert is None:
            return None
        if alert["acked_at"] is None:
            now = self.clock()
            self.store.update(
                alert_id,
                {"acked_at": _iso(now), "acked_by": who, "ack_note": note},
                "acknowledged",
                self._broadcast({**alert, "acked_by": who}, "acknowledged", now),
                actor=who,
                detail=note,
            )
            self._announce({"kind": "acknowledged", "alert": self.store.get(alert_id)})
            self._wake.set()
        return self.store.get(alert_id)

    def silence(
        self, matchers: Mapping[Any, Any], starts: float, ends: float, by: str, comment: str | None
    ) -> dict[str, Any]:
        silence = {
            "id": uuid.uuid4().hex,
            "matchers": dict(matchers),
            "starts_at": starts,
            "ends_at": ends,
            "created_by": by,
            "comment": comment,
        }
        self.store.add_silence(silence)
        return silence

    # -- delivery --------------------------------------------------------------------------
    def _hold_reason(
        self, item: OutboxItem, alerts: list[dict[str, Any]], now: float
    ) -> tuple[float, str] | None:
        """(until, why) when this notice must wait; None when it may go now."""
        if item.event in ("resolved", "acknowledged"):
            return None
        for s in self.store.silences():
            if s["starts_at"] <= now < s["ends_at"] and all(
                matches(s["matchers"], self._labels(a)) for a in alerts
            ):
                return min(s["ends_at"], now + HOLD_RECHECK), f"silenced by {s['id'][:8]} ({s['created_by']})"
        reasons = [self._inhibited(a) for a in alerts]
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

    def _stale(self, kpi: str, place: GroupKey) -> str | None:
        sources, types = self.depends_on(kpi)
        return self.feeds.inhibits(sources, types, place)

    def _inhibited(self, alert: dict[str, Any]) -> str | None:
        if alert["kind"] != "kpi":
            return None
        return self._stale(alert["kpi"], (alert["facility"], alert["department"], alert["unit"]))

    def _still_wanted(self, item: OutboxItem, alerts: list[dict[str, Any]]) -> str | None:
        """Why this notice is no longer wanted, or None."""
        if item.event in ("fired", "escalated", "reminder"):
            if all(a["state"] == "resolved" for a in alerts):
                return "resolved before it was delivered"
            if item.event != "fired" and all(a["acked_at"] for a in alerts):
                return "acknowledged before it was delivered"
        return None

    async def deliver_due(self) -> int:
        """Send what is due. Never raises: one notice that cannot be rendered or sent is
        retried alone (the others go out); a store that fails ends the pass, and what was
        claimed comes back when its lease runs out."""
        now = self.clock()
        if not self._store_retry.ready(now):
            return 0
        failures = self._failures
        sent = 0
        try:
            for item in self.store.due(now):
                sent += await self._deliver(item, now)
        except StoreUnavailable:
            return sent
        except Exception as exc:  # claiming, or marking a notice sent/failed
            with contextlib.suppress(StoreUnavailable):
                self._store_failed("deliver", exc, now, self._store_retry)
            return sent
        try:
            await self._sync(now)
        except Exception as exc:
            if unavailable(exc):
                with contextlib.suppress(StoreUnavailable):
                    self._store_failed("alertmanager sync", exc, now, self._store_retry)
                return sent
            log.exception("alertmanager sync failed")
        if self._failures == failures:
            self._store_ok()
        return sent

    async def _deliver(self, item: OutboxItem, now: float) -> int:
        """One notice: 1 when it went out. Store failures propagate; anything else that goes
        wrong with this notice is a failed attempt of this notice only."""
        try:
            channel = self.channels.get(item.channel)
            if channel is None:
                self.store.retry_later(item.id, now, f"no channel {item.channel!r} configured", True)
                return 0
            alerts = [a for a in (self.store.get(i) for i in item.alert_ids) if a]
            unwanted = self._still_wanted(item, alerts)
            if unwanted:
                self.store.cancel(item, unwanted)
                NOTIFICATIONS.labels(item.channel, "cancelled").inc()
                return 0
            hold = self._hold_reason(item, alerts, now)
            if hold is not None:
                self.store.hold(item, hold[0], hold[1])
                return 0
        except Exception as exc:
            if unavailable(exc):
                raise
            self._attempt_failed(item, now, f"{type(exc).__name__}: {exc}", retry=True, unexpected=True)
            return 0
        try:
            payload = item.payload
            if item.recipient is not None:  # render what is true now (values, severity)
                live = [a for a in alerts if item.event == "resolved" or a["state"] == "firing"]
                payload = {**payload, "alerts": [self._payload(a, item.event or "fired") for a in live]}
            await channel.send(payload, item.idempotency_key)
        except DeliveryError as exc:
            self._attempt_failed(item, now, str(exc), retry=exc.retry, unexpected=False)
            return 0
        except Exception as exc:  # rendering, the email library, a channel's bug: this notice only
            self._attempt_failed(item, now, f"{type(exc).__name__}: {exc}", retry=True, unexpected=True)
            return 0
        self.store.delivered(item.id)
        if item.recipient is not None and item.event == "fired":
            for a in alerts:
                if a["notified_at"] is None:
                    self.store.update(a["id"], {"notified_at": _iso(now), "last_notified_at": now}, None)
        NOTIFICATIONS.labels(item.channel, "delivered").inc()
        return 1

    def _attempt_failed(
        self, item: OutboxItem, now: float, error: str, *, retry: bool, unexpected: bool
    ) -> None:
        """Back off and try again, or give up (failed, dead letter) after max_attempts."""
        attempts = item.attempts + 1
        give_up = attempts >= self.max_attempts or not retry
        delay = self.retry_backoff * (2 ** (attempts - 1)) * random.uniform(0.5, 1.5)
        self.store.retry_later(item.id, now + delay, error, give_up)
        NOTIFICATIONS.labels(item.channel, "failed" if give_up else "retry").inc()
        if unexpected:
            NOTICE_ERRORS.labels(item.channel).inc()
        if give_up:
            try:
                self.on_failed(item, error)
            except Exception:
                log.exception("failed notice not kept as a dead letter", extra={"channel": item.channel})
        (log.error if unexpected else log.warning)(
            "alert notification not delivered",
            extra={"channel": item.channel, "attempt": attempts, "error": error[:300], "gave_up": give_up},
        )

    async def _sync(self, now: float) -> None:
        """Keep Alertmanager in step: changes at once, every firing alert now and then."""
        if not self.syncs:
            self._sync_now.clear()
            return
        changed = [a for a in (self.store.get(i) for i in self._sync_now) if a]
        self._sync_now.clear()
        for sync in self.syncs:
            rows = changed
            if now - sync.last_sync >= sync.resend_every:
                rows = changed + [a for a in self.store.active() if a["id"] not in {c["id"] for c in changed}]
                sync.last_sync = now
            try:
                await sync.push(rows)
                if rows:
                    NOTIFICATIONS.labels(sync.name, "delivered").inc()
            except DeliveryError as exc:
                sync.last_sync = 0.0  # push everything again on the next round
                NOTIFICATIONS.labels(sync.name, "retry").inc()
                log.warning("alertmanager not updated", extra={"error": str(exc)})

    def save_feeds(self) -> None:
        if self.feeds.seen:
            self.store.save_feeds(self.feeds.seen)

    async def run(self) -> None:
        """Deliver until cancelled; wakes on new transitions, polls for retries and holds."""
        last_save = 0.0
        while True:
            try:
                await self.deliver_due()  # never raises but for a bug
            except Exception:
                log.exception("alert delivery loop error")
            if self.clock() - last_save > 60:
                last_save = self.clock()
                try:
                    self.save_feeds()
                except Exception as exc:  # counted; tried again in a minute
                    with contextlib.suppress(StoreUnavailable):
                        self._store_failed("save feeds", exc, last_save, Retry())
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 0.5)

    async def close(self) -> None:
        """A last try at whatever the store has not taken; said loudly if it still fails."""
        if self._unstored:
            self._store_retry = Retry()
            for entry in self._unstored:
                entry.retry = Retry()
            self.tick()
            if self._unstored:
                log.error(
                    "alert store unavailable at shutdown: %d alert change(s) not stored",
                    len(self._unstored),
                )
        try:
            self.save_feeds()
        except Exception as exc:
            log.error("feed last-seen times not saved at shutdown (%s: %s)", type(exc).__name__, exc)
        for channel in [*self.channels.values(), *self.syncs]:
            closer = getattr(channel, "close", None)
            if closer is not None:
                await closer()


__all__ = ["FEED_ALERT", "AlertService"]
