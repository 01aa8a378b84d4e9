"""What the demo's simulated systems share: a seeded queue of future happenings, each
turned into messages or rows when due, and state that survives a restart."""

from __future__ import annotations

import heapq
import itertools
import math
import random
from datetime import UTC, datetime
from typing import Any


def at_time(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC).replace(microsecond=0)


class Simulation:
    def __init__(self, seed: int, rate: float):
        self.rng = random.Random(seed)
        self.rate = rate
        self.queue: list[tuple[float, int, str, dict[str, Any]]] = []
        self.seq = itertools.count()
        self.clock = 0.0

    def at(self, ts: float, action: str, **data: Any) -> None:
        heapq.heappush(self.queue, (ts, next(self.seq), action, data))

    def next_time(self) -> float | None:
        return self.queue[0][0] if self.queue else None

    def due(self, now: float) -> list[tuple[float, Any]]:
        """What everything due by now produces, in time order, with its time."""
        out: list[tuple[float, Any]] = []
        while self.queue and self.queue[0][0] <= now:
            ts, _, action, data = heapq.heappop(self.queue)
            self.clock = ts
            out.extend((ts, item) for item in getattr(self, f"_{action}")(ts, **data))
        return out

    def _exp(self, mean_minutes: float) -> float:
        return self.rng.expovariate(1.0 / (mean_minutes * 60.0 / self.rate))

    def _lognormal_minutes(self, median: float, sigma: float) -> float:
        return median * math.exp(self.rng.gauss(0, sigma)) * 60.0

    def state(self) -> dict[str, Any]:
        version, internal, gauss = self.rng.getstate()
        return {"queue": self.queue, "clock": self.clock, "rng": [*internal, version, gauss]}

    def load(self, state: dict[str, Any]) -> None:
        self.queue = [tuple(item) for item in state["queue"]]  # type: ignore[misc]
        heapq.heapify(self.queue)
        self.seq = itertools.count(max((item[1] for item in self.queue), default=0) + 1)
        self.clock = state["clock"]
        rng = state["rng"]
        self.rng.setstate((rng[-2], tuple(rng[:-2]), rng[-1]))
