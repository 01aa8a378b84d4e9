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

from collections.abc import Callable
from pathlib import Path

from carescore.transports.embedded import EmbeddedRuntime
from engine.bus import Published
from engine.config import Settings
from engine.history import History
from tests.helpers import enc, every_window

DAY = 24 * 60


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


async def test_a_snapshot_waits_for_the_windows_a_failed_write_holds_and_a_stop_writes_them(
    settings_for: Callable[..., Settings], tmp_path: Path
) -> None:
    faulty = Days(EmbeddedRuntime(settings_for()))
    runtime = faulty.runtime
    n = 0
    for n in range(3):
        await faulty.day(n)
    assert runtime.write_snapshot()
    first = runtime.snapshot_path.read_bytes()

    faulty.disk(full=True)
    while runtime.history.held == 0:  # until a day's windows need a page more
        n += 1
        await faulty.day(n)
        assert n < 300, "the history never filled"
    runtime.snapshot_in_background()
    assert runtime._reap_snapshot(wait=True)  # written by the child, waiting for the history
    assert runtime.snapshot_path.read_bytes() == first
    n += 1
    await faulty.day(n)  # still full: the held windows and this day's are held
    assert runtime._reap_snapshot(wait=False)
    assert runtime.snapshot_path.read_bytes() == first

    faulty.disk(full=False)
    n += 1
    await faulty.day(n)  # this write stores what the failed ones held
    assert runtime.history.held == 0
    assert not runtime._reap_snapshot(wait=False)  # published now
    assert runtime.snapshot_path.read_bytes() != first

    faulty.disk(full=True)
    while runtime.history.held == 0:
        n += 1
        await faulty.day(n)
        assert n < 600, "the history never filled"
    faulty.disk(full=False)  # the disk has room by the stop: the stop writes them
    last = n
    runtime.history.write_errors = 0
    await runtime.close()
    assert runtime.history.held == 0 and runtime.history.write_errors == 0

    healthy = Days(EmbeddedRuntime(settings_for(data_dir=tmp_path / "healthy")))
    for n in range(last + 1):
        await healthy.day(n)
    stored = History(runtime.settings.data_dir / "history.sqlite", runtime.engine.pane_clocks())
    try:
        assert every_window(stored) == every_window(healthy.runtime.history) != set()
    finally:
        stored.close()
        await healthy.runtime.close()
