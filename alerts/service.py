"""The alert service: KPI breaches and stopped feeds become alerts; routes.yaml decides who
hears, when and how; every notice goes through a durable outbox. The one thing the rest of
carescore uses of alerts/.

    observe(samples, now)  evaluate, record transitions, gather notices (group_wait)
    tick(now)              flush gathered groups, escalate unacknowledged alerts, remind
    deliver_due()          send what is due: silences, mute windows and inhibition hold a
                           notice back; an alert resolved or acknowledged first cancels it
    acknowledge, silence   what people do; query, get, audit, notices, silences: what they read

Behind it: alerts/lifecycle.py (one alert's transitions), alerts/planner.py (who gets what,
when), alerts/dispatcher.py (delivery, Alertmanager), alerts/retry.py (holding on while the
store fails: nothing accepted is lost), alerts/store.py (the durable state).

Integrations (webhooks with routed: false) get every alert change, one JSON per alert;
Alertmanager is kept in step with the firing alerts; people get grouped notices.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from datetime import UTC, tzinfo
from typing import Any

from alerts import lifecycle
from alerts.channels import Channel
from alerts.channels.alertmanager import AlertmanagerChannel
from alerts.db import open_database
from alerts.dispatcher import Dispatcher, OnFailed
from alerts.evaluator import Evaluator
from alerts.feeds import FEED_ALERT, FeedWatch
from alerts.metrics import TRANSITIONS, UNSTORED
from alerts.model import Alert, Change
from alerts.people import Directory
from alerts.planner import Gathering, Planner, Step
from alerts.plans.store import PlanStore
from alerts.plans.watch import PlanWatch
from alerts.recorder import Recorder
from alerts.retry import Retry, StoreGuard, StoreUnavailable, log
from alerts.routes import RoutesConfig
from alerts.service_parts import PartsView
from alerts.store import AlertStore
from engine.definitions import Catalogue
from engine.events import EventBase
from engine.samples import GroupKey, Sample

DependsOn = Callable[[str], tuple[set[str], set[str]]]  # KPI id -> (sources, event types)


class AlertService(PartsView):
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
        on_failed: OnFailed | None = None,
    ):
        self.catalogue = catalogue
        self.store = store
        self.routes = routes or RoutesConfig()
        self.feeds = feeds or FeedWatch([])
        self.depends_on = depends_on or (lambda _kpi: (set(), set()))
        self.clock = clock
        self.on_change = on_change or (lambda _event: None)
        self.evaluator = Evaluator(catalogue, unit_types)
        self.planner = Planner(
            catalogue,
            self.routes,
            directory or Directory(self.routes),
            {c.name: c for c in channels},
            zone,
            self._stale,
        )
        self.guard = StoreGuard(lambda: len(self.recorder.unstored), lambda: self.clock(), retry_backoff)
        self.dispatcher = Dispatcher(
            store,
            self.planner,
            self.guard,
            syncs or [],
            max_attempts=max_attempts,
            retry_backoff=retry_backoff,
            on_failed=on_failed,
        )
        self.recorder = Recorder(store, self.planner, self.guard, self.dispatcher.sync_now, self._announce)
        self._wake = asyncio.Event()
        self._alert_retry: dict[str, Retry] = {}  # escalation/reminder writes that failed
        self.feeds.seen.update(store.load_feeds())
        self.recorder.restore(self.evaluator, self.feeds, self.clock())
        # action plans live in the alert store's database, on a connection of their own: the API's
        # writes and the overdue check neither wait on nor hide the alert store's faults
        self.plans = PlanStore(open_database(store.target, store.busy_timeout), clock)
        self.plan_watch = PlanWatch(self.plans, catalogue)
        self.plan_watch.restore(store.active())

    def resume(self, now: float | None = None) -> None:
        """Take over evaluation from the shared store, another process having evaluated until
        now: firing alerts stay firing (no second notice), each is gathered again for the
        routes whose notice is not queued yet, and a breach only pending starts over."""
        now = self.clock() if now is None else now
        self.evaluator = Evaluator(self.catalogue, self.evaluator.unit_types)
        self.recorder.active.clear()
        self.recorder.unstored.clear()  # evaluated under a lead since lost: evaluated again
        self.planner.gathering.clear()
        self._alert_retry.clear()
        self.feeds.down.clear()
        self.feeds.restored_unknown = None
        self.share_feeds()
        self.recorder.restore(self.evaluator, self.feeds, now)
        self.plan_watch.firing.clear()
        self.plan_watch.restore(self.store.active())

    def share_feeds(self) -> None:
        """Feeds heard here to the store, and those heard by other processes from it (each
        gateway takes some of the traffic; the leader judges which feeds went quiet)."""
        self.save_feeds()
        for key, last in self.store.load_feeds().items():
            if last > self.feeds.seen.get(key, 0.0):
                self.feeds.seen[key] = last

    def _announce(self, kind: str, alert: Alert | Mapping[str, Any]) -> None:
        """on_change (the live stream) must not undo a transition already stored."""
        row = alert.as_json() if isinstance(alert, Alert) else dict(alert)
        try:
            self.on_change({"kind": kind, "alert": row})
        except Exception:
            log.exception("alert change not published", extra={"kind": kind})

    # -- evaluation ------------------------------------------------------------------------
    def observe(self, samples: list[Sample], now: float | None = None) -> list[Change]:
        now = self.clock() if now is None else now
        changes = self.feeds.check(now) + self.plan_watch.check(now)
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
        self.recorder.hold(changes, now)
        self.tick(now)  # records them (or keeps them, when the store fails)
        if changes:
            self._wake.set()
        return changes

    def take(self, changes: list[Change], now: float | None = None) -> None:
        """Changes made elsewhere (forecast alerts, alerts/forecasts.py): recorded and routed
        like the evaluator's."""
        if not changes:
            return
        now = self.clock() if now is None else now
        for c in changes:
            TRANSITIONS.labels(c.kind).inc()
        self.recorder.hold(changes, now)
        self.tick(now)
        self._wake.set()

    def _stale(self, kpi: str, place: GroupKey) -> str | None:
        sources, types = self.depends_on(kpi)
        return self.feeds.inhibits(sources, types, place)

    # -- the clock: groups, escalation, reminders ------------------------------------------
    def tick(self, now: float | None = None) -> None:
        """Never raises: what the store would not take is kept and tried again later."""
        now = self.clock() if now is None else now
        try:
            if self.guard.retry.ready(now):  # else the store was unavailable a moment ago
                self._tick(now)
        finally:
            UNSTORED.set(len(self.recorder.unstored))

    def _tick(self, now: float) -> None:
        failures = self.guard.failures
        try:
            self.recorder.drain(now)
            self._flush_due(now)
            self._follow_up(now)
        except StoreUnavailable:
            return
        except Exception as exc:  # outside the per-item guards (none expected): back off all
            with contextlib.suppress(StoreUnavailable):
                self.guard.failed("tick", exc, now, self.guard.retry)
            return
        if self.guard.failures == failures:
            self._store_ok()

    def _flush_due(self, now: float) -> None:
        for key, group in self.planner.due(now):
            try:
                self._flush(group, now)
            except Exception as exc:  # kept while gathering: flushed again after the backoff
                self.guard.failed("route", exc, now, group.retry)
                continue
            self.planner.flushed(key)

    def _flush(self, group: Gathering, now: float) -> None:
        alerts = [a for a in (self.store.get(i) for i in group.alert_ids) if a and a.state == "firing"]
        if not alerts:
            return
        # one transaction: all of it, or none to repeat
        self.store.queue(*self.planner.first_notices(group, alerts, now))
        self._wake.set()

    def _follow_up(self, now: float) -> None:
        """Escalate unacknowledged alerts, remind."""
        active = list(self.recorder.active.values())
        firing = set(active)
        self._alert_retry = {k: r for k, r in self._alert_retry.items() if k in firing}
        for alert_id in active:
            retry = self._alert_retry.get(alert_id)
            if retry is not None and not retry.ready(now):
                continue
            try:
                self._follow_up_one(alert_id, now)
            except Exception as exc:
                self.guard.failed("escalate", exc, now, self._alert_retry.setdefault(alert_id, Retry()))
                continue
            self._alert_retry.pop(alert_id, None)

    def _follow_up_one(self, alert_id: str, now: float) -> None:
        alert = self.store.get(alert_id)
        if alert is None:
            return
        step = self.planner.next_step(alert, now, lambda: self._first_pending(alert_id))
        if step is None:
            return
        if step.kind == "escalate":
            self._escalate(alert, step, now)
        else:
            self._remind(alert, step, now)

    def _first_pending(self, alert_id: str) -> bool:
        return any(i.event == "fired" and i.recipient for i in self.store.pending_for(alert_id))

    def _escalate(self, alert: Alert, step: Step, now: float) -> None:
        notices, action, detail = self.planner.escalation(alert, step, now)
        changes = lifecycle.escalated(step.tier, now)
        self.store.update(alert.id, changes, action, notices, detail=detail)
        self._announce("escalated", alert.but(**changes))
        self._wake.set()

    def _remind(self, alert: Alert, step: Step, now: float) -> None:
        notices, detail = self.planner.reminder(alert, step, now)
        self.store.update(alert.id, lifecycle.reminded(alert, now), "reminder", notices, detail=detail)
        self._wake.set()

    # -- people act, people read ---------------------------------------------------------------
    def acknowledge(self, alert_id: str, who: str, note: str | None = None) -> Alert | None:
        alert = self.store.get(alert_id)
        if alert is None:
            return None
        if alert.acked_at is None:
            now = self.clock()
            self.store.update(
                alert_id,
                lifecycle.acknowledged(who, note, now),
                "acknowledged",
                self.planner.broadcast(alert.but(acked_by=who), "acknowledged", now),
                actor=who,
                detail=note,
            )
            acked = self.store.get(alert_id)
            self._announce("acknowledged", acked if acked is not None else {})
            self._wake.set()
        return self.store.get(alert_id)

    def silence(
        self, matchers: Mapping[Any, Any], starts: float, ends: float, by: str, comment: str | None
    ) -> dict[str, Any]:
        silence = lifecycle.silence(matchers, starts, ends, by, comment)
        self.store.add_silence(silence)
        return silence

    def expire_silence(self, silence_id: str, by: str) -> bool:
        return self.store.expire_silence(silence_id, by)

    def silences(self, include_expired: bool = False) -> list[dict[str, Any]]:
        return self.store.silences(include_expired)

    def query(self, state: str | None = None, limit: int = 200) -> list[Alert]:
        """Alerts, newest first (state: firing or resolved)."""
        return self.store.query(state, limit)

    def started_between(self, start: str, end: str) -> list[Alert]:
        return self.store.started_between(start, end)

    def get(self, alert_id: str) -> Alert | None:
        return self.store.get(alert_id)

    def firing(self) -> list[Alert]:
        return self.store.active()

    def audit(self, alert_id: str) -> list[dict[str, Any]]:
        return self.store.audit(alert_id)

    def notices(self, alert_id: str) -> list[dict[str, Any]]:
        return self.store.notices(alert_id)

    # -- delivery --------------------------------------------------------------------------
    async def deliver_due(self) -> int:
        """Send what is due. Never raises: one notice that cannot be rendered or sent is
        retried alone (the others go out); a store that fails ends the pass, and what was
        claimed comes back when its lease runs out."""
        now = self.clock()
        if not self.guard.retry.ready(now):
            return 0
        if not self.fence():  # the lead was lost: another process may be delivering now
            return 0
        failures = self.guard.failures
        sent = await self.dispatcher.deliver_due(now)
        if self.guard.failures == failures:
            self._store_ok()
        return sent

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
                        self.guard.failed("save feeds", exc, last_save, Retry())
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 0.5)

    def saw(self, events: list[EventBase], now: float) -> None:
        """Events accepted from the feeds: when each feed was last heard from (stale feeds)."""
        self.feeds.observe(events, now)

    def close_store(self) -> None:
        """Last, after close(): the store's connections."""
        self.plans.db.close()
        self.store.close()

    async def close(self) -> None:
        """A last try at whatever the store has not taken; said loudly if it still fails."""
        if self.recorder.unstored:
            self.guard.retry = Retry()
            self.recorder.retry_all_now()
            self.tick()
            if self.recorder.unstored:
                log.error(
                    "alert store unavailable at shutdown: %d alert change(s) not stored",
                    len(self.recorder.unstored),
                )
        try:
            self.save_feeds()
        except Exception as exc:
            log.error("feed last-seen times not saved at shutdown (%s: %s)", type(exc).__name__, exc)
        await self.dispatcher.close()


__all__ = ["FEED_ALERT", "AlertService"]
