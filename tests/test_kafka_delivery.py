"""The worker's consumer (carescore/transports/kafka/delivery.py) delivers a record without
Faust's four tasks only when the record's callback finishes without waiting; a callback that
waits goes through Faust's own wait_first, so a rebalance abandons it as Faust would. These
tests hold it to that with a consumer whose Faust parts are the real ones wait_first uses
(mode's Service.wait_first, Faust's suspend_flow event), and check that Faust still makes the
call the consumer recognises (if not, the worker falls back to the slow path silently: still
correct, 2,713 instead of 3,953 records/s at one event per record in bench/kafka_worker.py's
runs in BENCHMARKS.md before and after direct delivery)."""

from __future__ import annotations

import asyncio
import inspect
import re
from pathlib import Path

import faust.transport.consumer as faust_consumer
import pytest
from mode import Service

from carescore.transports.kafka.delivery import DirectDelivery, Resumed, _waits_on


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


def _consumer() -> DirectDelivery:
    """DirectDelivery with what wait_first reads of a running Faust consumer, no broker."""
    consumer = DirectDelivery.__new__(DirectDelivery)
    consumer._loop = asyncio.get_running_loop()
    consumer.suspend_flow = faust_consumer.Event()
    consumer._stopped = faust_consumer.Event()
    consumer._crashed = faust_consumer.Event()
    return consumer


async def _deliver(consumer: DirectDelivery, callback: object) -> object:
    """One record as Faust's _drain_messages hands it over."""
    return await consumer.wait_first(callback, consumer.suspend_flow.wait())


async def test_a_callback_that_does_not_wait_is_delivered_without_faust_tasks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    consumer, delivered = _consumer(), []
    faust_calls = []
    stock = Service.wait_first

    async def counted(self: Service, *coros: object, **kw: object) -> object:
        faust_calls.append(coros)
        return await stock(self, *coros, **kw)

    monkeypatch.setattr(Service, "wait_first", counted)

    async def on_message(message: int) -> None:  # decode and put_nowait, as Faust's does
        delivered.append(message)

    for message in range(3):
        await _deliver(consumer, on_message(message))
    assert delivered == [0, 1, 2]
    assert faust_calls == []  # no task, no Faust wait_first

    flow = faust_consumer.Event()

    async def waits(message: int) -> None:  # Faust's flow control, suspended for a moment
        await flow.wait()
        delivered.append(message)

    pending = asyncio.create_task(_deliver(consumer, waits(3)))
    for _ in range(100):
        await asyncio.sleep(0)
    assert len(faust_calls) == 1  # waiting: the rest of it went to Faust's wait_first
    flow.set()
    await asyncio.wait_for(pending, 5)
    assert delivered == [0, 1, 2, 3]  # finished in a task of its own


async def test_a_rebalance_abandons_a_waiting_callback_as_faust_does() -> None:
    """A callback waiting on Faust's flow control when a rebalance sets suspend_flow: Faust's
    wait_first returns at once and cancels it, so the drain loop is free to read the
    changelogs the recovery needs; the first direct delivery kept awaiting it (until the
    recovery resumed the flow, which waited for the drain loop: a worker stuck)."""
    consumer, delivered, cancelled = _consumer(), [], []
    flow = faust_consumer.Event()
    started = asyncio.Event()

    async def on_message(message: int) -> None:
        started.set()
        try:
            await flow.wait()
        except asyncio.CancelledError:
            cancelled.append(message)
            raise
        delivered.append(message)

    pending = asyncio.create_task(_deliver(consumer, on_message(1)))
    await started.wait()
    consumer.suspend_flow.set()  # the rebalance: Consumer.stop_flow()
    await asyncio.wait_for(pending, 5)  # returns without the flow resuming
    flow.set()
    for _ in range(10):
        await asyncio.sleep(0)
    assert cancelled == [1] and delivered == []  # cancelled, as Faust cancels it


async def test_with_the_flow_suspended_every_record_goes_through_faust(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    consumer, delivered, faust_calls = _consumer(), [], []
    stock = Service.wait_first

    async def counted(self: Service, *coros: object, **kw: object) -> object:
        faust_calls.append(coros)
        return await stock(self, *coros, **kw)

    monkeypatch.setattr(Service, "wait_first", counted)
    consumer.suspend_flow.set()

    async def on_message(message: int) -> None:
        delivered.append(message)

    await _deliver(consumer, on_message(1))
    assert len(faust_calls) == 1  # Faust decides, as without DirectDelivery


async def test_a_callback_cancelled_before_its_task_ran_sees_the_cancellation() -> None:
    """The rest of a waiting callback runs in a task; cancelled before that task's first step
    (a rebalance at that very moment), the cancellation still reaches the callback."""
    seen = []
    flow = faust_consumer.Event()

    async def on_message() -> None:
        try:
            await flow.wait()
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    callback = on_message()
    task = asyncio.ensure_future(Resumed(callback, callback.send(None)))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == ["cancelled"] and callback.cr_frame is None  # ended, not left suspended


async def test_an_error_in_the_callback_reaches_the_drain_loop_as_with_faust() -> None:
    consumer = _consumer()

    async def on_message() -> None:
        raise KeyError("no callback for this partition")

    with pytest.raises(KeyError):
        await _deliver(consumer, on_message())


async def test_the_loop_gets_its_turn_between_two_records_delivered_directly() -> None:
    """Faust's tasks gave the event loop a turn for every record, so a rebalance's callbacks
    (scheduled from the consumer's thread) ran between two records and getmany saw the flow
    stopped before it handed over the next. Direct delivery keeps that turn; without it the
    drain loop would hand over up to 100 records before a rebalance's callbacks could run.
    (A restarted worker stopping short under load was first blamed on its absence; stock
    Faust does that too: README, Not built yet.)"""
    consumer, turns = _consumer(), []

    async def on_message() -> None:
        return None

    asyncio.get_running_loop().call_soon(turns.append, "rebalance")
    await _deliver(consumer, on_message())
    assert turns == ["rebalance"]


async def test_the_worker_app_takes_records_through_direct_delivery(tmp_path: Path) -> None:
    """make_app, as `carescore worker` builds it: its consumer is a DirectDelivery, and what
    it answers Faust for a delivered record is what mode's wait_first answers."""
    from carescore.transports.kafka.worker import make_app
    from engine.config import Settings

    settings = Settings.model_validate(
        {
            "data_dir": str(tmp_path),
            "demo": {"enabled": False},
            "runtime": {"kind": "kafka", "kafka": {"bootstrap": "127.0.0.1:1", "app_id": "delivery-test"}},
        }
    )
    app = make_app(settings)
    assert isinstance(app.consumer, DirectDelivery)

    async def on_message() -> None:
        return None

    consumer = _consumer()
    answer = await _deliver(consumer, on_message())
    assert (len(answer.done), answer.results, answer.stopped) == (1, [None], False)


async def test_a_waiting_callback_shows_where_it_waits_in_a_task_dump() -> None:
    """mode's task dump (SIGUSR1) and asyncio's Task.get_stack read the coroutine's frame: a
    record stuck in a callback must show the callback's line, not an empty stack."""
    flow = faust_consumer.Event()

    async def waits() -> None:
        await flow.wait()

    coro = waits()
    task = asyncio.ensure_future(Resumed(coro, coro.send(None)))
    await asyncio.sleep(0)
    assert [frame.f_code.co_name for frame in task.get_stack()] == ["waits"]
    flow.set()
    await asyncio.wait_for(task, 5)


@pytest.mark.parametrize("session_timeout", [6, 60, 1800])
async def test_every_allowed_session_timeout_reaches_the_kafka_consumer(
    tmp_path: Path, session_timeout: int
) -> None:
    """runtime.kafka.session_timeout, anywhere in the 6 s - 30 min the setting allows, becomes
    the consumer's session timeout. Faust refuses one longer than its request timeout (90 s by
    default) when it makes the consumer, at the worker's start: make_app raises the request
    timeout with it. The heartbeat stays within a third of the session. No broker: the
    consumer is made as the worker makes it, never started."""
    from carescore.transports.kafka.worker import make_app
    from engine.config import Settings

    kafka = {"bootstrap": "127.0.0.1:1", "app_id": "session-test", "session_timeout": session_timeout}
    settings = Settings.model_validate(
        {
            "data_dir": str(tmp_path / "{data}"),
            "demo": {"enabled": False},
            "runtime": {"kind": "kafka", "kafka": kafka},
        }
    )
    app = make_app(settings)
    consumer = app.consumer._thread._create_worker_consumer(app.transport)
    assert consumer._session_timeout_ms == session_timeout * 1000
    assert consumer._heartbeat_interval_ms <= session_timeout * 1000 / 3
    await consumer.stop()
    assert (tmp_path / "{data}" / "faust").is_dir()  # a data folder whose name has braces
