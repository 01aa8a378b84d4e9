"""Per-source event-time progress, with a wall-clock idle advance.

A source's watermark is the latest event time it sent; once it has been quiet for
`idle_timeout` it moves on with the wall clock, so a quiet unit's windows still close. It
never moves back: a late event after a quiet spell (a backdated discharge, an interface
engine replaying its queue) is late for the windows already passed, as in any event-time
system, instead of taking the live window back to the late event's month.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any


class Watermarks:
    """The last arrival is kept as the event's received_time and turned into seconds only when
    a watermark is asked for: the per-event cost stays one comparison and one store
    (Engine.process inlines observe())."""

    def __init__(self, idle_timeout: float, capped: bool = False):
        self.idle_timeout = idle_timeout
        self.capped = capped  # no source moves its watermark past the wall clock
        self.max_ts: dict[str, float] = {}
        self.arrival: dict[str, datetime] = {}
        self.held: dict[str, float] = {}  # the highest watermark given out per source

    def observe(self, source: str, ts: float, arrival: datetime) -> None:
        if ts > self.max_ts.get(source, -math.inf):
            self.max_ts[source] = ts
        self.arrival[source] = arrival

    def of(self, source: str, now: float) -> float:
        quiet = now - self.arrival[source].timestamp() - self.idle_timeout
        mark = self.max_ts[source] + max(0.0, quiet)
        held = self.held.get(source, -math.inf)
        if mark < held:
            mark = held  # a late event after a quiet spell does not take the watermark back
        else:
            self.held[source] = mark
        if self.capped and mark > now:
            return now  # one event stamped ahead (years, or a skewed clock) closes nothing ahead of now
        return mark

    def min_of(self, sources: set[str] | frozenset[str], now: float) -> float | None:
        known = [self.of(s, now) for s in sources if s in self.max_ts]
        return min(known) if known else None

    def snapshot(self) -> dict[str, Any]:
        return {
            "max_ts": self.max_ts,
            "arrival": {k: v.isoformat() for k, v in self.arrival.items()},
            "held": self.held,
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.max_ts = dict(state["max_ts"])
        self.arrival = {k: datetime.fromisoformat(v) for k, v in state["arrival"].items()}
        self.held = dict(state.get("held", {}))  # snapshots before it: from the next tick on
