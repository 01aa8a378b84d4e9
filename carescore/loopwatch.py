"""How long the event loop was blocked.

Everything in a carescore process shares one asyncio loop: MLLP ACKs, HTTP, ticks. A callback
that runs long (closing windows, writing history, parsing a big upload) delays all of them, and
an interface engine waiting for an ACK sees only the delay. A timer that asks to wake every
`interval` and records how late it woke measures exactly that; /metrics exports it.
"""

from __future__ import annotations

import asyncio

from prometheus_client import Gauge, Histogram

LOOP_LAG = Histogram(
    "carescore_event_loop_lag_seconds",
    "How late a 50 ms timer on the event loop fired: time the loop was blocked by other work.",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
LOOP_STALL_MAX = Gauge(
    "carescore_event_loop_stall_max_seconds", "The longest event-loop stall since the process started."
)


class LoopWatch:
    def __init__(self, interval: float = 0.05):
        self.interval = interval
        self.longest = 0.0

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            asked = loop.time()
            await asyncio.sleep(self.interval)
            lag = max(0.0, loop.time() - asked - self.interval)
            LOOP_LAG.observe(lag)
            if lag > self.longest:
                self.longest = lag
                LOOP_STALL_MAX.set(lag)
