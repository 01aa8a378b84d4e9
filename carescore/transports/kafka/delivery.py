"""Records handed to the worker's agent without Faust's four asyncio tasks per record.

Faust's Consumer._drain_messages awaits `wait_first(callback(message), suspend_flow.wait())`
for every record (wait_first adds tasks for the consumer's stopped and crashed events too),
which cost about a seventh of a worker's time on batched records (issue 17 item 5). While
flow is not suspended, DirectDelivery awaits the callback itself. What that changes: a
callback already running when a rebalance suspends flow is finished instead of cancelled
(the drain task waits for it; Faust's flow control and the stream's queue are released by
the rebalance itself, and the worker's stop cancels the drain task). A record it delivers
then is still skipped by Faust's stream, which drops records of an older generation; the
worker's own check of the partitions it owns (worker.py, run_engine) is a backstop.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from faust.transport.drivers import aiokafka as driver


class DirectDelivery(driver.Consumer):  # type: ignore[misc]
    async def wait_first(self, *coros: Any, timeout: Any = None) -> Any:
        if len(coros) == 2 and timeout is None and not self.suspend_flow.is_set():
            record, suspended = coros
            if _waits_on(suspended, self.suspend_flow):
                suspended.close()  # never started: nothing to cancel
                await record
                return None  # _drain_messages ignores what wait_first returns
        return await super().wait_first(*coros, timeout=timeout)


def _waits_on(coro: Any, event: Any) -> bool:
    """Whether `coro` is `event.wait()` not yet started (Faust's suspend_flow.wait())."""
    if not isinstance(coro, Coroutine) or getattr(coro, "cr_code", None) is not type(event).wait.__code__:
        return False
    frame = getattr(coro, "cr_frame", None)
    return frame is not None and frame.f_locals.get("self") is event


def use_direct_delivery() -> None:
    """Make Faust's Kafka transport build DirectDelivery consumers (one app per worker process)."""
    driver.Transport.Consumer = DirectDelivery
