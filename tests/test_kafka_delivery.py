"""The worker's consumer skips Faust's per-record wait_first only for the call it recognises:
`wait_first(callback(message), suspend_flow.wait())` while flow runs. A change in Faust or
mode that this check no longer recognises would silently fall back to the slow path (still
correct, 0.45 instead of 0.50 of the embedded engine in bench/kafka_worker.py): these tests
fail then."""

from __future__ import annotations

import asyncio

from mode.utils.locks import Event

from carescore.transports.kafka.delivery import _waits_on


async def test_the_suspend_flow_wait_faust_passes_is_recognised_and_nothing_else() -> None:
    flow, other = Event(), Event()
    waiting = flow.wait()
    assert _waits_on(waiting, flow)
    assert not _waits_on(waiting, other)  # another event's wait: Faust's stop/crash events
    waiting.close()

    async def callback() -> None:
        await asyncio.sleep(0)

    record = callback()
    assert not _waits_on(record, flow)  # the record's callback is never taken for the wait
    record.close()
    assert not _waits_on(flow, flow)  # an Event itself (wait_first accepts those too)
