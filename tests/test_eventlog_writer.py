"""The event log's writer does not share a thread pool with anything else.

Reports over the whole log, review PDFs, feed files, emails to an SMTP server and forecast
checks all run in the event loop's default thread pool (asyncio.to_thread), which has a handful
of threads. When the log's fsync ran there too, a few slow ones (an SMTP server that does not
answer, several large reports at once) held every ACK until one of them finished. The log now
writes and syncs on its own thread: an append is stored, processed and answered while every
thread of that pool is busy.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from carescore.transports.embedded import EmbeddedRuntime
from engine.bus import Published
from engine.config import Settings
from engine.eventlog import EventLog
from engine.events import EventBase
from tests.helpers import lab
from tests.labserver import logged

BUSY = 40
"""More tasks than the default pool has threads (min(32, cores + 4)): all of them wait."""


async def test_an_append_is_stored_while_the_default_thread_pool_is_busy(
    tmp_path: Path, settings_for: Callable[..., Settings]
) -> None:
    runtime = EmbeddedRuntime(settings_for(data_dir=tmp_path / "data"))
    loop = asyncio.get_running_loop()
    release = threading.Event()
    busy = [loop.run_in_executor(None, release.wait) for _ in range(BUSY)]
    try:
        processed = runtime.engine.events_processed
        events: list[EventBase] = [lab("lab.order", 0, "POOL1"), lab("lab.result", 9, "POOL1")]
        stored = await asyncio.wait_for(runtime.publish_nowait("MSG-POOL1", events), 20)
        assert stored is Published.accepted
        assert not any(task.done() for task in busy)  # the pool was busy the whole time
        assert runtime.engine.events_processed == processed + 2  # on_commit ran, in order
    finally:
        release.set()
        await asyncio.gather(*busy)
        await runtime.close()
    assert logged(tmp_path / "data") == {"lab.order": 1, "lab.result": 1}


async def test_an_append_after_close_is_refused_and_writes_nowhere(tmp_path: Path) -> None:
    """A late append (a connector still answering while the runtime stops) must not be
    answered as stored, nor be written to whatever file reuses the closed descriptor."""
    log = EventLog(tmp_path / "events")
    await asyncio.wait_for(log.append([lab("lab.order", 0, "LATE1")]), 20)
    await log.close()
    other = os.open(tmp_path / "other", os.O_WRONLY | os.O_CREAT, 0o600)  # the lowest free number
    try:
        with pytest.raises(OSError):
            await asyncio.wait_for(log.append([lab("lab.result", 9, "LATE1")]), 20)
    finally:
        os.close(other)
    assert (tmp_path / "other").read_bytes() == b""
    assert logged(tmp_path) == {"lab.order": 1}
