"""How long the event loop was blocked.

Everything in a carescore process shares one asyncio loop: MLLP ACKs, HTTP, ticks. A callback
that runs long (closing windows, writing history, parsing a big upload) delays all of them, and
an interface engine waiting for an ACK sees only the delay. A timer that asks to wake every
`interval` and records how late it woke measures exactly that; /metrics exports it.
"""

from __future__ import annotations

import asyncio

from carescore.metrics import LOOP_LAG, LOOP_STALL_MAX


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
