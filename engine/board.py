"""What a runtime shows the API: current KPI values, history, alerts, dead letters.

Both runtimes fill a KpiBoard; the API reads only this, so it does not care which runtime
computed the values.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from typing import Any

from engine.samples import GroupKey, Sample


class KpiBoard:
    """Latest live sample per (KPI, place), and a fan-out of changes for /stream."""

    def __init__(self) -> None:
        self.current: dict[tuple[str, GroupKey], Sample] = {}
        self.updated_at: float | None = None
        self._subscribers: set[asyncio.Queue[dict[str, Any]]] = set()

    def update(self, samples: list[Sample]) -> list[Sample]:
        changed = []
        for s in samples:
            key = (s.kpi, s.group.key)
            old = self.current.get(key)
            self.current[key] = s
            if old is None or old.value != s.value or old.status != s.status:
                changed.append(s)
        self.updated_at = time.time()
        for s in changed:
            self.publish({"type": "kpi", "data": s.model_dump(mode="json")})
        return changed

    def for_kpi(self, kpi: str) -> list[Sample]:
        return [s for (k, _), s in self.current.items() if k == kpi]

    def get(self, kpi: str, key: GroupKey) -> Sample | None:
        return self.current.get((kpi, key))

    def publish(self, message: dict[str, Any]) -> None:
        for queue in list(self._subscribers):
            if queue.qsize() < 1000:
                queue.put_nowait(message)

    def end_subscriptions(self) -> None:
        """Tell every subscriber the stream is over (on shutdown), so a server-sent-events
        response ends at once instead of holding the HTTP server's graceful stop open."""
        for queue in list(self._subscribers):
            queue.put_nowait({"type": "end", "data": {}})

    @contextlib.contextmanager
    def subscribe(self) -> Iterator[asyncio.Queue[dict[str, Any]]]:
        """A queue of what is published from now on, until the with-block ends. (A queue, not
        an async generator: waiting on it with a timeout must not end the subscription.)"""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._subscribers.add(queue)
        try:
            yield queue
        finally:
            self._subscribers.discard(queue)
