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
import threading
from collections.abc import Callable
from pathlib import Path

from carescore.transports.embedded import EmbeddedRuntime
from engine.bus import Published
from engine.config import Settings
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
