"""Records handed to the worker's agent without Faust's four asyncio tasks per record.

Faust's Consumer._drain_messages awaits `wait_first(callback(message), suspend_flow.wait())`
for every record: wait_first wraps the callback, the suspend_flow wait and the consumer's
stopped and crashed waits in four tasks, which cost about a sixth of a worker's time on
batched records (issue 17 item 5; bench/kafka_worker.py: 52.6 -> 44.7 µs per event).
Almost always the callback (Faust's Conductor.on_message) finishes without waiting for
anything: it decodes the record and puts it into the agent's stream buffer, which Faust
keeps from filling by pausing the partition first.

DirectDelivery runs the callback's first step itself. If that finishes it, the record is
delivered with no task at all, and the drain loop gives the event loop one turn before the
next record (Faust's own loop yields only every 100 records; its tasks gave about three turns
a record), so callbacks waiting on the loop, a rebalance's among them, still run between
records; getmany checks the flow and the generation before each record it hands over.
If the callback waits (on Faust's flow control, on a full buffer, on the producer), the rest
of it becomes a task and goes through Faust's own wait_first with the suspend_flow wait, as
Faust does it, so a rebalance abandons it as Faust would. (A first version awaited such a
callback to its end, holding the drain loop, and with it the changelogs a recovery reads,
until the flow resumed.)

The first step runs as the drain task: nothing in Faust's on_message path (the conductor,
mode's flow control and queues, asyncio's Queue and Lock) records the current task or sets
context variables, which would otherwise belong to the drain task instead of the record's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from faust.transport.drivers import aiokafka as driver
from mode.services import WaitResults


class DirectDelivery(driver.Consumer):  # type: ignore[misc]
    async def wait_first(self, *coros: Any, timeout: Any = None) -> Any:
        if len(coros) == 2 and timeout is None and not self.suspend_flow.is_set():
            record, suspended = coros
            if isinstance(record, Coroutine) and _waits_on(suspended, self.suspend_flow):
                try:
                    waits_on = record.send(None)
                except StopIteration:
                    suspended.close()  # never started: nothing to cancel
                    # delivered. Give the loop a turn, as Faust's tasks did for every record:
                    # a rebalance's callbacks then run between records, and getmany sees the
                    # flow stopped before it hands over the next
                    await asyncio.sleep(0)
                    return WaitResults([record], [None], False)  # what mode's would say
                except BaseException:
                    suspended.close()
                    raise  # as Faust's wait_first raises the callback's exception
                rest = asyncio.ensure_future(Resumed(record, waits_on))
                return await super().wait_first(rest, suspended)  # timeout is None here
        return await super().wait_first(*coros, timeout=timeout)


class Resumed(Coroutine[Any, Any, Any]):
    """A coroutine already stepped once, as a coroutine a task can run: its first step hands
    the task what the coroutine waits on; after that, sends and throws (a cancellation, even
    one before the first step) go to the coroutine itself."""

    def __init__(self, coro: Coroutine[Any, Any, Any], waits_on: Any):
        self.coro = coro
        self.waits_on: Any = waits_on
        self.started = False

    def send(self, value: Any) -> Any:
        if not self.started:
            self.started = True
            return self.waits_on
        return self.coro.send(value)

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        self.started = True
        if val is None and tb is None:
            return self.coro.throw(typ)
        return self.coro.throw(typ, val, tb)

    def close(self) -> None:
        self.coro.close()

    # what asyncio's and mode's task dumps read: where the callback waits
    @property
    def cr_frame(self) -> Any:
        return getattr(self.coro, "cr_frame", None)

    @property
    def cr_await(self) -> Any:
        return getattr(self.coro, "cr_await", None)

    @property
    def cr_code(self) -> Any:
        return getattr(self.coro, "cr_code", None)

    def __await__(self) -> Any:
        return self

    def __iter__(self) -> Any:
        return self

    def __next__(self) -> Any:
        return self.send(None)


def _waits_on(coro: Any, event: Any) -> bool:
    """Whether `coro` is `event.wait()` not yet started (Faust's suspend_flow.wait())."""
    if not isinstance(coro, Coroutine) or getattr(coro, "cr_code", None) is not type(event).wait.__code__:
        return False
    frame = getattr(coro, "cr_frame", None)
    return frame is not None and frame.f_locals.get("self") is event


def use_direct_delivery() -> None:
    """Make Faust's Kafka transport build DirectDelivery consumers (one app per worker process)."""
    driver.Transport.Consumer = DirectDelivery
