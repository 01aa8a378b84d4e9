"""What the alert service's parts hold, seen through the façade: the settings they share
(tests and the runtime change them in place) and the alert store's health (/healthz)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from alerts.channels import Channel
from alerts.channels.alertmanager import AlertmanagerChannel
from alerts.dispatcher import Dispatcher, OnFailed
from alerts.planner import Planner
from alerts.recorder import Recorder
from alerts.retry import Retry, StoreGuard


class PartsView:
    planner: Planner
    dispatcher: Dispatcher
    guard: StoreGuard
    recorder: Recorder
    _alert_retry: dict[str, Retry]

    # -- settings the parts share (tests and the runtime change them in place) -------------
    @property
    def channels(self) -> dict[str, Channel]:
        return self.planner.channels

    @channels.setter
    def channels(self, channels: dict[str, Channel]) -> None:
        self.planner.channels = channels

    @property
    def fence(self) -> Callable[[], bool]:
        """Still the leader? Asked before each delivery pass and each notice."""
        return self.dispatcher.fence

    @fence.setter
    def fence(self, fence: Callable[[], bool]) -> None:
        self.dispatcher.fence = fence

    @property
    def syncs(self) -> list[AlertmanagerChannel]:
        return self.dispatcher.syncs

    @property
    def max_attempts(self) -> int:
        return self.dispatcher.max_attempts

    @max_attempts.setter
    def max_attempts(self, attempts: int) -> None:
        self.dispatcher.max_attempts = attempts

    @property
    def on_failed(self) -> OnFailed:
        return self.dispatcher.on_failed

    @on_failed.setter
    def on_failed(self, on_failed: OnFailed) -> None:
        self.dispatcher.on_failed = on_failed

    # -- store health ----------------------------------------------------------------------
    @property
    def store_failing_since(self) -> float | None:
        return self.guard.failing_since

    @property
    def store_healthy(self) -> bool:
        """False from a failed store operation until every held change has been stored."""
        return self.guard.failing_since is None

    @property
    def unstored(self) -> int:
        """Alert changes held in memory, waiting for the store."""
        return len(self.recorder.unstored)

    def store_health(self) -> dict[str, Any]:
        """For /healthz: is every alert change stored, and since when not."""
        return {
            "healthy": self.store_healthy,
            "failing_since": self.store_failing_since,
            "unstored_changes": self.unstored,
        }

    def _store_ok(self) -> None:
        self.guard.ok(bool(self._alert_retry) or self.planner.retrying)
