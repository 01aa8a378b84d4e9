"""Alert changes into the store, in the order they happened. A change the store will not
take yet is held in memory (with the later changes of the same alert) and written again on
later ticks with backoff: nothing accepted is lost. Each change stored is then acted on:
integrations told, people's notice gathered, Alertmanager and the live stream updated."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from alerts import lifecycle
from alerts.evaluator import Evaluator
from alerts.feeds import FeedWatch
from alerts.model import Alert, Change
from alerts.planner import Planner
from alerts.retry import Retry, StoreGuard, log
from alerts.store import AlertStore
from engine.samples import GroupKey

Announce = Callable[[str, Alert | Mapping[str, Any]], None]  # (kind, alert) to the live stream


@dataclass
class Unstored:
    """A change the store has not taken yet, recorded later in the order it happened."""

    change: Change
    at: float  # when it happened: fired_at / resolved_at are this, however late it is stored
    alert: Alert | None = None  # a fired alert, built once: the same id every attempt
    retry: Retry = field(default_factory=Retry)


class Recorder:
    def __init__(
        self,
        store: AlertStore,
        planner: Planner,
        guard: StoreGuard,
        sync_now: list[str],
        announce: Announce,
    ):
        self.store = store
        self.planner = planner
        self.guard = guard
        self.sync_now = sync_now  # alerts Alertmanager is to hear about
        self.announce = announce
        self.active: dict[tuple[str, GroupKey], str] = {}  # (name, place) -> id of the firing alert
        self.unstored: list[Unstored] = []

    def restore(self, evaluator: Evaluator, feeds: FeedWatch, now: float) -> None:
        """Alerts firing before a restart stay firing (no second notice for the episode);
        a firing alert is gathered again for each route whose notice was not queued yet."""
        for alert in self.store.active():
            self.active[lifecycle.restore(alert, evaluator, feeds)] = alert.id
            self.planner.gather(alert, "fired", now, self.store.routes_told(alert.id))

    def hold(self, changes: list[Change], now: float) -> None:
        """Changes that happened now, to be recorded by the next drain()."""
        self.unstored += [Unstored(c, now) for c in changes]

    def retry_all_now(self) -> None:
        for entry in self.unstored:
            entry.retry = Retry()

    def drain(self, now: float) -> None:
        """Record held changes in order. A change the store refuses waits (with the later
        changes of the same alert) and the others go on; an unavailable store stops all."""
        waiting: set[tuple[str, GroupKey]] = set()
        for entry in list(self.unstored):
            key = entry.change.key
            if key in waiting or not entry.retry.ready(now):
                waiting.add(key)
                continue
            try:
                self._record(entry)
            except Exception as exc:
                waiting.add(key)
                self.guard.failed(f"record {entry.change.kind}", exc, now, entry.retry)
                continue
            self.unstored.remove(entry)

    def _record(self, entry: Unstored) -> None:
        """Store one change, then act on it in memory: if the store raises, nothing here
        has changed and the same entry can simply be recorded again."""
        c, now = entry.change, entry.at
        if c.kind == "fired":
            if entry.alert is None:
                entry.alert = lifecycle.fired(c, now)
            alert = entry.alert
            self.store.fire(alert, self.planner.broadcast(alert, "fired", now))
            self.active[c.key] = alert.id
            self.planner.gather(alert, "fired", now)
            self.sync_now.append(alert.id)
            self.announce("fired", alert)
            log.info(
                "alert fired",
                extra={"alert": c.name, "place": "/".join(p or "" for p in c.place), "severity": c.severity},
            )
            return
        alert_id = self.active.get(c.key)
        if alert_id is None:
            return
        stored = self.store.get(alert_id)
        if c.kind == "resolved":
            changes = lifecycle.resolved(c, now)
            notices = []
            if stored is not None:
                alert = stored.but(**changes)
                told = {r for _, r in self.store.notified(alert_id) if r}
                notices = self.planner.broadcast(alert, "resolved", now)
                notices += self.planner.resolved_notices(alert, told, now)
            self.store.update(alert_id, changes, "resolved", notices, detail=c.summary)
            self.planner.drop(alert_id)
            del self.active[c.key]
            self.sync_now.append(alert_id)
            self.announce("resolved", alert if stored is not None else changes)
            log.info("alert resolved", extra={"alert": c.name, "place": "/".join(p or "" for p in c.place)})
        elif c.kind == "severity_changed":
            changes = lifecycle.severity_changed(c)
            self.store.update(alert_id, changes, f"severity {c.previous_severity} -> {c.severity}")
            self.sync_now.append(alert_id)
            self.announce("severity_changed", stored.but(**changes) if stored is not None else changes)
