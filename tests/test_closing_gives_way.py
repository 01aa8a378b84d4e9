"""While messages come in, closing windows gives way to them, still finishes, and does not hold
back the live values and alerts (carescore/transports/embedded.py tick_async).

A burst of old data (a backfill over MLLP, an interface engine's queue after an outage) leaves
years of windows to close. At half the event loop, closing them took the MIMIC replay's
stop-and-wait senders from about 7,000 to 3,600 msg/s; and the tick refreshed the board and the
alerts only once every window was closed, so a backfill hid the live feeds' alerts for as long
as it lasted. Measured here, with a real MLLP sender and 100,000 one-minute windows handed to
the engine at once (tests/test_loop_stalls.py's probe KPI):

- with the sender going, the share of the loop's time spent inside closing slices is at most
  about 1 / (1 + CLOSING_GIVES_WAY) (a ninth), against a half before;
- the live values and the alerts are refreshed while the windows are still closing, at times
  that never go back, and snapshots are still taken (a restart need not replay the burst);
- once the sender stops, closing takes the loop (its share above two thirds) and finishes;
- carescore_windows_closing_behind is 1 while windows wait, 0 once they are all closed, and
  "windows caught up" is logged;
- requests that append nothing (an HTTP client polling) are given way to as well;
- after BEHIND_LIMIT seconds behind, closing takes half the loop again.

Shares are ratios of times measured in the same run, not wall-clock limits.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from carescore.metrics import CLOSING_BEHIND
from carescore.serve import Service
from engine.config import Settings
from tests.test_loop_stalls import WINDOWS, complaints, keep_going, probe_service, sending


class Timed:
    """Time spent inside the runtime's closing slices, and when each slice ran."""

    def __init__(self, closed: Callable[..., Any]) -> None:
        self.closed = closed
        self.slices: list[tuple[float, float]] = []

    def __call__(self, now: float, deadline: float | None = None) -> Any:
        began = time.perf_counter()
        try:
            return self.closed(now, deadline)
        finally:
            self.slices.append((began, time.perf_counter()))

    def share(self, start: float, end: float) -> float:
        inside = sum(min(b, end) - max(a, start) for a, b in self.slices if b > start and a < end)
        return inside / (end - start)


def behind_gauge() -> float:
    return CLOSING_BEHIND._value.get()


GIVES_WAY = 0.3
"""Closing's largest share of the loop while other work comes in: a ninth (1 / (1 + 8)) with
room for the turns of the loop between slices; half the loop (the old 2 ms slice, then 2 ms
for the loop) fails it."""

HOLD = 0.05
"""TRAFFIC_HOLD in these tests: closing stops giving way 50 ms after the last sign of work, so
most of what is left closes with the loop to itself, whatever the machine's speed."""


@pytest.fixture(autouse=True)
def short_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("carescore.transports.embedded.TRAFFIC_HOLD", HOLD)


class Backlog:
    """WINDOWS one-minute windows handed to a running carescore's engine at once (nothing
    closes them until the next tick), and the runtime's closing slices timed."""

    def __init__(self, svc: Service) -> None:
        self.runtime = runtime = svc.runtime
        self.op = runtime.engine.by_kpi["complaints_per_minute"]
        self.timed = Timed(runtime._closed)
        runtime._closed = self.timed  # type: ignore[method-assign]
        self.deadline = time.monotonic() + 300

    def hand(self) -> None:
        for event in complaints():
            self.runtime.engine.process(event)
        # the 400,000 or so new objects (input events, the state they made) would otherwise be
        # scanned by a middle-generation collection while the windows close (225 to 266 ms, a
        # pause of the collector's, tests/test_loop_stalls.py), inside a share measured here
        gc.collect()
        self.handed = time.perf_counter()
        assert self.op.first_index is not None
        self.last = self.op.first_index + WINDOWS - 1

    @property
    def closed(self) -> int:
        return self.op.closed_upto or 0

    async def until(self, closed: int, seconds: float = 0.0) -> float:
        """Wait until `closed` windows are and `seconds` have gone by since handed; the share of
        the loop closing took since then."""
        first = self.op.first_index
        assert first is not None
        while self.closed < first + closed or time.perf_counter() - self.handed < seconds:
            assert time.monotonic() < self.deadline, f"closed up to {self.closed} of {self.last}"
            await asyncio.sleep(0.005)
        assert self.closed < self.last, "closed before the measure ended: more windows needed"
        return self.timed.share(self.handed, time.perf_counter())


@pytest.mark.serial  # shares of the loop's time: a neighbouring test's load would be in them
async def test_closing_gives_way_to_messages_and_still_finishes(
    settings_for: Callable[..., Settings], kpi_dir: Callable[..., Path], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "carescore.transports.embedded")
    svc = await probe_service(settings_for, kpi_dir, snapshot_every=0.5)
    backlog = Backlog(svc)
    runtime, op = svc.runtime, backlog.op
    observed: list[tuple[float, float, bool]] = []  # (when, the tick's time given, behind)
    observe, snapshot = runtime._observe, runtime.snapshot_in_background
    snapshots: list[tuple[float, bool]] = []

    async def counted(now: float) -> None:
        observed.append((time.perf_counter(), now, runtime.engine.behind))
        await observe(now)

    def counted_snapshot() -> None:
        snapshots.append((time.perf_counter(), runtime.engine.behind))
        snapshot()

    runtime._observe = counted  # type: ignore[method-assign]
    runtime.snapshot_in_background = counted_snapshot  # type: ignore[method-assign]
    acks: list[tuple[float, float, bytes]] = []
    try:
        async with sending(svc.mllp.port, acks):
            backlog.hand()
            handed, last, timed = backlog.handed, backlog.last, backlog.timed
            deadline = backlog.deadline
            # with the sender going: until a tenth of the windows are closed and a second has gone by
            with_traffic = await backlog.until(WINDOWS // 10, 1.0)
            assert behind_gauge() == 1.0
        stopped = time.perf_counter()
        while (op.closed_upto or 0) < last:  # the sender stopped: closing goes on alone
            assert time.monotonic() < deadline, f"closed up to {op.closed_upto} of {last}"
            await asyncio.sleep(0.005)
        done = time.perf_counter()
        while behind_gauge() != 0.0:  # set by the slice that closed the last window
            assert time.monotonic() < deadline
            await asyncio.sleep(0.005)
        runtime.history.flush()
        windows = runtime.history.query("complaints_per_minute", unit="4W", limit=2 * WINDOWS)
        assert len(windows) >= WINDOWS - 1 and {w.value for w in windows} == {1.0}
    finally:
        await svc.stop()
    alone_from = stopped + HOLD  # work seen within TRAFFIC_HOLD still counts
    assert len([a for a, _ in timed.slices if alone_from < a < done]) >= 20, "too few slices alone"
    alone = timed.share(alone_from, done)
    refreshed = [at for at, _, behind in observed if handed < at < done and behind]
    taken = [at for at, behind in snapshots if handed < at < done and behind]
    during = [code for sent, got, code in acks if sent >= handed]
    print(
        f"closing's share of the loop: {with_traffic:.3f} with the sender going ({len(during)} ACKs), "
        f"{alone:.3f} after it stopped; {len(refreshed)} refreshes of the live values and "
        f"{len(taken)} snapshots while behind"
    )
    assert set(during) == {b"AA"} and len(during) >= 50
    assert with_traffic < GIVES_WAY, with_traffic
    assert alone > 2 / 3, alone
    assert len(refreshed) >= 3, "the live values and alerts waited for the windows to close"
    assert taken, "no snapshot while the windows closed: a restart would replay the whole burst"
    assert [r for r in caplog.records if r.getMessage() == "windows caught up"], "not logged"
    times = [now for _, now, _ in observed]  # alerts are evaluated at times that never go back
    assert times == sorted(times), times


@pytest.mark.serial
async def test_requests_that_append_nothing_are_given_way_to_as_well(
    settings_for: Callable[..., Settings], kpi_dir: Callable[..., Path]
) -> None:
    """An HTTP client polling /api/v1/kpis (no append): its requests need several turns of the
    loop each, and closing gives way to them too (counted on appends alone, it took 0.9 of the
    loop here; by the loop thread's CPU between slices, 0.48)."""
    svc = await probe_service(settings_for, kpi_dir)
    backlog = Backlog(svc)
    answered = 0

    async def poll(stop: asyncio.Event) -> None:
        nonlocal answered
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{svc.api_port}", timeout=60) as client:
            while not stop.is_set():
                (await client.get("/api/v1/kpis")).raise_for_status()
                answered += 1

    try:
        async with keep_going(poll, lambda: answered >= 5):
            backlog.hand()
            share = await backlog.until(WINDOWS // 20, 1.0)
    finally:
        await svc.stop()
    print(f"closing's share of the loop with an HTTP client polling: {share:.3f}")
    assert share < GIVES_WAY, share


@pytest.mark.serial
async def test_after_behind_limit_closing_takes_half_the_loop_again(
    settings_for: Callable[..., Settings], kpi_dir: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Work that never lets up does not keep windows open for ever: BEHIND_LIMIT (here 1 s)
    into a tick that gives way, closing takes a slice, then as long for the loop; before the
    limit it gave way as far as ever."""
    monkeypatch.setattr("carescore.transports.embedded.BEHIND_LIMIT", 1.0)
    svc = await probe_service(settings_for, kpi_dir)
    backlog = Backlog(svc)
    try:
        async with sending(svc.mllp.port, []):
            backlog.hand()
            timed = backlog.timed
            while not timed.slices or timed.slices[-1][0] < backlog.handed:
                await asyncio.sleep(0.005)
            tick = next(a for a, _ in timed.slices if a >= backlog.handed)  # the tick began
            await backlog.until(0, tick + 1.1 - backlog.handed)  # past the limit
            since = time.perf_counter()
            first = backlog.closed
            while backlog.closed < first + WINDOWS // 10 or time.perf_counter() - since < 0.5:
                assert time.monotonic() < backlog.deadline
                await asyncio.sleep(0.005)
            after = timed.share(since, time.perf_counter())
            before = timed.share(tick + 0.1, tick + 0.9)
    finally:
        await svc.stop()
    print(f"closing's share of the loop, the sender going: {before:.3f} before the limit, {after:.3f} after")
    assert before < GIVES_WAY, before
    assert 0.35 < after < 0.65, after
