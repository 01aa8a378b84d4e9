"""The worker's consumer skips Faust's per-record wait_first only for the call it recognises:
`wait_first(callback(message), suspend_flow.wait())` while flow runs. If Faust changed that
call or the kind of event it waits on, the worker would fall back to the slow path silently
(still correct, about 2,900 instead of 4,700 records/s at one event per record in
bench/kafka_worker.py): these tests fail then."""

from __future__ import annotations

import asyncio
import inspect
import re

import faust.transport.consumer as faust_consumer

from carescore.transports.kafka.delivery import DirectDelivery, _waits_on


def test_faust_still_hands_each_record_through_the_call_direct_delivery_recognises() -> None:
    source = inspect.getsource(faust_consumer.Consumer._drain_messages)
    call = r"self\.wait_first\(\s*callback\(message\),\s*self\.suspend_flow\.wait\(\)\s*\)"
    assert re.search(call, source), "Faust's _drain_messages no longer makes the call delivery.py skips"
    assert issubclass(DirectDelivery, faust_consumer.Consumer)


async def test_the_suspend_flow_wait_is_recognised_and_nothing_else() -> None:
    flow, other = faust_consumer.Event(), faust_consumer.Event()  # what Faust's suspend_flow is
    waiting = flow.wait()
    assert _waits_on(waiting, flow)
    assert not _waits_on(waiting, other)  # another event's wait (Faust's stopped/crashed events)
    waiting.close()

    async def callback() -> None:
        await asyncio.sleep(0)

    record = callback()
    assert not _waits_on(record, flow)  # the record's callback is never taken for the wait
    record.close()
    assert not _waits_on(flow, flow)  # an Event itself (wait_first accepts those too)
