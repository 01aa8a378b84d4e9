"""Holding on when the alert store fails: nothing accepted is lost. A write the store would
not take is kept and tried again with backoff; the failure is counted
(carescore_alert_store_errors_total), logged at ERROR and readable as `failing_since` for
the health endpoint, until everything held has been stored."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from alerts.db import unavailable
from alerts.metrics import STORE_ERRORS, UNSTORED
from engine.backoff import backoff

log = logging.getLogger("alerts.service")  # one logger for the alert service, whichever part

STORE_RETRY_MAX = 30.0  # longest wait between two attempts at a failing store


class StoreUnavailable(Exception):
    """The store could not be reached or was locked: stop this pass, retry after backoff."""


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
        delay = backoff(base, self.failures, STORE_RETRY_MAX)
        self.at = now + delay
        return delay


class StoreGuard:
    """The alert store's health as the service sees it: failures, backoff, what is held."""

    def __init__(self, held: Callable[[], int], clock: Callable[[], float], backoff: float = 1.0):
        self.held = held  # alert changes held in memory now
        self.clock = clock
        self.backoff = backoff
        self.retry = Retry()  # the whole store: set when it is unavailable
        self.failing_since: float | None = None
        self.failures = 0  # store failures so far (a pass without new ones is a clean pass)

    def failed(self, operation: str, exc: BaseException, now: float, retry: Retry) -> None:
        """Count, log at ERROR (exception type and the database's message: places and alert
        ids at most, never a patient) and back off; raise StoreUnavailable when the store as
        a whole is down, so the rest of the pass waits instead of failing the same way."""
        down = unavailable(exc)
        delay = (self.retry if down else retry).failed(now, self.backoff)
        STORE_ERRORS.labels(operation).inc()
        self.failures += 1
        held = self.held()
        UNSTORED.set(held)
        if self.failing_since is None:
            self.failing_since = now
        log.error(
            "alert store %s failed (%s: %s); %d alert change(s) held in memory, next try in %.1f s",
            operation,
            type(exc).__name__,
            str(exc)[:200],
            held,
            delay,
        )
        if down:
            raise StoreUnavailable(operation) from exc

    def ok(self, retrying: bool) -> None:
        """A pass without failures: healthy again once nothing is left to store
        (`retrying`: some write other than a held change still waits for its retry)."""
        self.retry = Retry()
        held = self.held()
        UNSTORED.set(held)
        if held or retrying:
            return
        if self.failing_since is not None:
            log.warning(
                "alert store writable again; everything held was stored",
                extra={"failing_for": self.clock() - self.failing_since},
            )
            self.failing_since = None
