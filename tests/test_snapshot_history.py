"""A snapshot never goes past a window the history lacks.

The engine closes a window once. A snapshot taken after a window closed holds it closed, so
a start from that snapshot never closes it again: if the history's write of that window
failed (a full disk), publishing the snapshot would lose the window for good. So a tick's
snapshot, written by a forked child, replaces the last one only once the history has stored
every window closed before the fork; while a failed write holds windows, no newer snapshot
is published, and a stop writes the held windows once more before its own snapshot (or
writes none, and the next start closes them again from the last one).

The disk is full for real as far as SQLite can tell: the history's connection is held to the
pages its file has (PRAGMA max_page_count), so a write that needs one more fails with SQLite's
own "database or disk is full".
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from carescore.offline import unstored
from carescore.transports.embedded import EmbeddedRuntime
from connectors.pipeline import batch_key
from engine.bus import Published
from engine.config import Settings
from engine.core import Engine
from engine.events import EventBase
from engine.history import History
from engine.samples import Sample
from tests.helpers import enc, every_window

DAY = 24 * 60


@pytest.fixture(autouse=True)
def write_again_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A write after a failed one is tried at once (in service: RETRY_EVERY seconds later)."""
    monkeypatch.setattr("engine.history.RETRY_EVERY", 0.0)


class Days:
    """A runtime fed a stay a day (admitted at midnight, discharged ten hours later), its
    clock an hour after each discharge, then ticked: each day closes that day's windows."""

    def __init__(self, runtime: EmbeddedRuntime):
        self.runtime = runtime
        self.now = 0.0
        runtime.clock = lambda: self.now

    async def day(self, n: int) -> None:
        visit = f"SH{n}"
        stay = [enc("encounter.admit", n * DAY, visit), enc("encounter.discharge", n * DAY + 600, visit)]
        for event in stay:
            assert await self.runtime.publish(event.source_id, [event]) is Published.accepted
        self.now = stay[-1].event_time.timestamp() + 3600
        await self.runtime.tick_async(self.now)
        self.runtime.history.flush()

    def disk(self, full: bool) -> None:
        history = self.runtime.history._file
        with history.lock:
            pages = history.db.execute("PRAGMA page_count").fetchone()[0]
            history.db.execute(f"PRAGMA max_page_count = {pages if full else 1073741823}")


async def published(runtime: EmbeddedRuntime, now: float, than: bytes) -> bytes:
    """Tick until a snapshot other than `than` is published (its child done, the history caught
    up with it): the tick publishes it, not a wait of its own."""
    deadline = time.monotonic() + 60
    while runtime.snapshot_path.read_bytes() == than:
        assert time.monotonic() < deadline, "no snapshot published"
        await runtime.tick_async(now)
        await asyncio.sleep(0.01)
    return runtime.snapshot_path.read_bytes()


def leftovers(runtime: EmbeddedRuntime) -> list[Path]:
    return sorted(runtime.snapshot_path.parent.glob("snapshot.*.tmp"))


async def test_no_snapshot_is_published_past_windows_a_failed_write_holds(
    settings_for: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = settings_for(engine={"snapshot_every": 0})  # a snapshot at every tick it may
    faulty = Days(EmbeddedRuntime(settings))
    runtime = faulty.runtime
    n = 0

    async def fill() -> None:  # days until a day's windows need a page more than the file has
        nonlocal n
        faulty.disk(full=True)
        while faulty.runtime.history.held == 0:
            n += 1
            await faulty.day(n)
            assert n < 900, "the history never filled"

    async def settled_snapshots() -> bytes:  # every forked snapshot reaped and, if it may, published
        for _ in range(3):
            faulty.runtime._reap_snapshot(wait=True)
            await faulty.runtime.tick_async(faulty.now)
        return faulty.runtime.snapshot_path.read_bytes()

    for n in range(3):
        await faulty.day(n)
    runtime.write_snapshot()

    # 1. windows held: nothing forked before the failure is published, nothing forked after it;
    # once a write stores them, the next tick's snapshot is published
    await fill()
    held_back = await settled_snapshots()
    n += 1
    await faulty.day(n)  # still full: this day's windows held too
    assert await settled_snapshots() == held_back
    assert runtime._snapshot_pid is None and not leftovers(runtime)  # no snapshot file on a full disk
    faulty.disk(full=False)
    n += 1
    await faulty.day(n)  # this write stores what the failed ones held
    assert runtime.history.held == 0
    await published(runtime, faulty.now, held_back)

    # 2. windows held at a stop, the disk has room by then: the stop writes them, then its snapshot
    await fill()
    before_stop = await settled_snapshots()
    faulty.disk(full=False)
    errors = runtime.history.write_errors
    await runtime.close()
    assert runtime.history.held == 0 and runtime.history.write_errors == errors
    assert runtime.snapshot_path.read_bytes() != before_stop and not leftovers(runtime)

    # 3. windows held, then a kill: the start replays from the last snapshot published, which is
    # not past them, and closes and stores them
    faulty = Days(EmbeddedRuntime(settings))
    await fill()
    await settled_snapshots()
    faulty.runtime._lock.close()  # killed: nothing flushed or closed, the lock given up
    last, now = n, faulty.now
    faulty = Days(EmbeddedRuntime(settings))  # the disk has room (the page limit was the connection's)
    faulty.now = now
    await faulty.runtime.tick_async(now)
    await faulty.runtime.close()

    healthy = Days(EmbeddedRuntime(settings_for(data_dir=tmp_path / "healthy")))
    for n in range(last + 1):
        await healthy.day(n)
    stored = History(settings.data_dir / "history.sqlite", runtime.engine.pane_clocks())
    try:
        assert every_window(stored) == every_window(healthy.runtime.history) != set()
    finally:
        stored.close()
        await healthy.runtime.close()


async def test_a_written_snapshot_is_published_at_the_next_tick_not_a_period_later(
    settings_for: Callable[..., Settings],
) -> None:
    # snapshot_every an hour, the clock standing still: the snapshot forked now is published
    # by the ticks that follow as soon as its child is done and the history has stored every
    # window closed before the fork (before, the parent looked at it only when the next one
    # was due, an hour later here).
    days = Days(EmbeddedRuntime(settings_for(engine={"snapshot_every": 3600})))
    runtime = days.runtime
    for n in range(3):
        await days.day(n)
    runtime.write_snapshot()
    before = runtime.snapshot_path.read_bytes()
    await days.day(3)
    runtime.snapshot_in_background()
    try:
        assert await published(runtime, days.now, before) != before
        assert not leftovers(runtime)
    finally:
        await runtime.close()


class FailingClose:
    """An engine whose closing number `fail_at` closes, then raises (a bug in an operator):
    what it closed is lost. (The compiled engine's methods cannot be patched: a wrapper.)"""

    def __init__(self, engine: Engine, fail_at: int | None):
        self._engine, self._fail_at, self._calls = engine, fail_at, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def advance(self, now: float, deadline: float | None = None) -> list[Sample]:
        self._calls += 1
        closed = self._engine.advance(now, deadline)
        if self._calls == self._fail_at:
            raise RuntimeError("a bug in an operator")
        return closed


def test_a_closing_that_raises_holds_snapshots_back_and_the_next_start_closes_its_windows(
    settings_for: Callable[..., Settings], tmp_path: Path
) -> None:
    # an import closing windows after every stay; one closing raises (a bug): the windows it
    # had closed never reach the history, so the stop writes no snapshot and the import says
    # so (held 1); the next start replays the log and closes them again: its history equals
    # that of the same import without the fault.
    stays: list[list[EventBase]] = [
        [enc("encounter.admit", n * DAY, f"R{n}"), enc("encounter.discharge", n * DAY + 600, f"R{n}")]
        for n in range(12)
    ]
    clock = stays[-1][-1].event_time.timestamp() + 3600

    def imported(settings: Settings, fail_at: int | None) -> EmbeddedRuntime:
        runtime = EmbeddedRuntime(settings)
        runtime.close_every = 2
        runtime.engine = FailingClose(runtime.engine, fail_at)  # type: ignore[assignment]
        for stay in stays:
            assert runtime.ingest_now(batch_key(stay), stay) is Published.accepted
        runtime.clock = lambda: clock
        runtime.close_windows(clock)
        asyncio.run(runtime.close())
        return runtime

    faulty_settings = settings_for(data_dir=tmp_path / "faulty")
    faulty = imported(faulty_settings, fail_at=6)
    assert faulty.history.missed_closings == 1 and "a bug in an operator" in (unstored(faulty) or "")
    assert not faulty.snapshot_path.exists()
    healthy = imported(settings_for(data_dir=tmp_path / "healthy"), fail_at=None)
    assert unstored(healthy) is None and healthy.snapshot_path.exists()

    again = EmbeddedRuntime(faulty_settings)
    again.close_windows(clock)
    asyncio.run(again.close())
    histories = [
        History(r.settings.data_dir / "history.sqlite", r.engine.pane_clocks()) for r in (again, healthy)
    ]
    try:
        assert every_window(histories[0]) == every_window(histories[1]) != set()
    finally:
        for history in histories:
            history.close()
