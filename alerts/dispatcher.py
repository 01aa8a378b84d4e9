"""Delivery: what the outbox says is due goes out over its channel, unless the planner holds
it back (silence, mute window, inhibition) or it is no longer wanted (the alert resolved or
was acknowledged first); Alertmanager is kept in step with the firing alerts.

Nothing hostile stops delivery: a notice whose rendering or sending raises is retried alone
with backoff, then marked failed (and handed to on_failed, e.g. the dead-letter store).
A store that fails ends the pass; what was claimed comes back when its lease runs out.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from alerts import lifecycle
from alerts.channels import Channel, DeliveryError
from alerts.channels.alertmanager import AlertmanagerChannel
from alerts.db import unavailable
from alerts.metrics import NOTICE_ERRORS, NOTIFICATIONS
from alerts.model import Alert
from alerts.planner import Planner
from alerts.retry import StoreGuard, StoreUnavailable, log
from alerts.store import AlertStore, OutboxItem
from engine.backoff import backoff

OnFailed = Callable[[OutboxItem, str], Any]


class Dispatcher:
    def __init__(
        self,
        store: AlertStore,
        planner: Planner,
        guard: StoreGuard,
        syncs: list[AlertmanagerChannel],
        *,
        max_attempts: int = 8,
        retry_backoff: float = 1.0,
        on_failed: OnFailed | None = None,
    ):
        self.store = store
        self.planner = planner
        self.guard = guard
        self.syncs = syncs
        self.max_attempts = max_attempts
        self.retry_backoff = retry_backoff
        self.on_failed: OnFailed = on_failed or (lambda _item, _error: None)
        self.sync_now: list[str] = []  # alerts changed since Alertmanager was last told
        # still the one to deliver? (several processes, one leader: alerts/leader.py) asked
        # before each notice, so a leader that lost its lock sends nothing more it claimed
        self.fence: Callable[[], bool] = lambda: True

    @property
    def channels(self) -> dict[str, Channel]:
        return self.planner.channels

    async def deliver_due(self, now: float) -> int:
        """Send what is due, then sync Alertmanager. Never raises: a store failure is counted
        by the guard and ends the pass."""
        sent = 0
        try:
            for item in self.store.due(now):
                if not self.fence():  # the rest of the claim goes to the new leader after its lease
                    return sent
                sent += await self._deliver(item, now)
        except StoreUnavailable:
            return sent
        except Exception as exc:  # claiming, or marking a notice sent/failed
            with contextlib.suppress(StoreUnavailable):
                self.guard.failed("deliver", exc, now, self.guard.retry)
            return sent
        try:
            await self._sync(now)
        except Exception as exc:
            if unavailable(exc):
                with contextlib.suppress(StoreUnavailable):
                    self.guard.failed("alertmanager sync", exc, now, self.guard.retry)
                return sent
            log.exception("alertmanager sync failed")
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
            unwanted = lifecycle.unwanted(item.event, alerts)
            if unwanted:
                self.store.cancel(item, unwanted)
                NOTIFICATIONS.labels(item.channel, "cancelled").inc()
                return 0
            hold = self.planner.hold_reason(item, alerts, self.store.silences, now)
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
                live = [a for a in alerts if item.event == "resolved" or a.state == "firing"]
                payload = {
                    **payload,
                    "alerts": [self.planner.payload(a, item.event or "fired") for a in live],
                }
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
                if a.notified_at is None:
                    self.store.update(a.id, lifecycle.notified(now), None)
        NOTIFICATIONS.labels(item.channel, "delivered").inc()
        return 1

    def _attempt_failed(
        self, item: OutboxItem, now: float, error: str, *, retry: bool, unexpected: bool
    ) -> None:
        """Back off and try again, or give up (failed, dead letter) after max_attempts."""
        attempts = item.attempts + 1
        give_up = attempts >= self.max_attempts or not retry
        delay = backoff(self.retry_backoff, attempts, jitter=0.5)
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
            self.sync_now.clear()
            return
        changed = [a for a in (self.store.get(i) for i in self.sync_now) if a]
        self.sync_now.clear()
        for sync in self.syncs:
            alerts: list[Alert] = changed
            if now - sync.last_sync >= sync.resend_every:
                ids = {c.id for c in changed}
                alerts = changed + [a for a in self.store.active() if a.id not in ids]
                sync.last_sync = now
            try:
                await sync.push(alerts)
                if alerts:
                    NOTIFICATIONS.labels(sync.name, "delivered").inc()
            except DeliveryError as exc:
                sync.last_sync = 0.0  # push everything again on the next round
                NOTIFICATIONS.labels(sync.name, "retry").inc()
                log.warning("alertmanager not updated", extra={"error": str(exc)})

    async def close(self) -> None:
        for channel in [*self.channels.values(), *self.syncs]:
            closer = getattr(channel, "close", None)
            if closer is not None:
                await closer()
