"""Subscription notifications (R4B SubscriptionStatus, or the R4 backport's Parameters, as a
history Bundle's first entry): each event number is checked against the last one seen for
its subscription, and a gap is reported and counted, not ignored."""

from __future__ import annotations

import logging
from typing import Any

from connectors.fhir.outcome import Issue, issue
from connectors.metrics import NOTIFICATION_GAPS

log = logging.getLogger(__name__)


class Notifications:
    """The last event number seen per subscription."""

    def __init__(self) -> None:
        self.last: dict[str, int] = {}  # subscription -> last event number

    def check(self, entries: list[dict[str, Any]]) -> list[Issue]:
        """Subscriptions backport: count events since subscription start; report gaps."""
        if not entries:
            return []
        status = entries[0].get("resource") or {}
        subscription, first, last = _notification_numbers(status)
        if subscription is None or first is None:
            return []
        previous = self.last.get(subscription)
        self.last[subscription] = max(last or first, previous or 0)
        if previous is not None and first > previous + 1:
            missing = first - previous - 1
            NOTIFICATION_GAPS.inc(missing)
            log.warning(
                "fhir subscription notifications missing",
                extra={"subscription": subscription, "missing": missing},
            )
            return [
                issue(
                    "warning",
                    "incomplete",
                    f"{subscription}: {missing} notification(s) missing between {previous} and {first}; "
                    "query the server for what changed",
                )
            ]
        return []


def _notification_numbers(status: dict[str, Any]) -> tuple[str | None, int | None, int | None]:
    """(subscription, first event number, last event number) of a notification's status."""
    if status.get("resourceType") == "SubscriptionStatus":
        subscription = (status.get("subscription") or {}).get("reference")
        numbers = [int(e["eventNumber"]) for e in status.get("notificationEvent") or [] if "eventNumber" in e]
        total = status.get("eventsSinceSubscriptionStart")
        if not numbers and total is not None:
            numbers = [int(total)]
        return subscription, min(numbers, default=None), max(numbers, default=None)
    if status.get("resourceType") == "Parameters":
        params = {p.get("name"): p for p in status.get("parameter") or []}
        subscription = (params.get("subscription") or {}).get("valueReference", {}).get("reference")
        numbers = []
        for p in status.get("parameter") or []:
            if p.get("name") == "notification-event":
                for part in p.get("part") or []:
                    if part.get("name") == "event-number":
                        numbers.append(int(part.get("valueString") or part.get("valueInteger64") or 0))
        since = params.get("events-since-subscription-start")
        if not numbers and since is not None:
            numbers = [int(since.get("valueString") or since.get("valueInteger64") or 0)]
        return subscription, min(numbers, default=None), max(numbers, default=None)
    return None, None, None
