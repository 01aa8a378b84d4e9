"""A failing component is restarted with backoff and reported, and the process keeps serving.

Before: any component that raised (the inbox on a bad folder, the delivery loop, the tick)
made the service stop MLLP and the API with it. Now only the HTTP server's death stops the
process; the rest are restarted (carescore/supervisor.py) and shown on /readyz and
/metrics.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from carescore.supervisor import ComponentState, Supervisor
from engine.config import Settings


async def test_a_component_that_raises_is_restarted_with_growing_delays_until_it_runs() -> None:
    states: dict[str, ComponentState] = {}
    supervisor = Supervisor(states, first_delay=0.05)
    starts: list[float] = []

    async def flaky() -> None:
        starts.append(time.monotonic())
        if len(starts) <= 3:
            raise OSError("the folder is gone")
        await asyncio.Event().wait()  # then runs for good

    task = supervisor.start("inbox", flaky)
    try:
        deadline = time.monotonic() + 10
        while len(starts) < 4:
            assert time.monotonic() < deadline, starts
            await asyncio.sleep(0.01)
        state = states["inbox"]
        assert state.up and state.restarts == 3
        assert state.last_error == "OSError: the folder is gone"
        gaps = [b - a for a, b in itertools.pairwise(starts)]
        # 0.05, 0.1, 0.2 s: each wait at least its delay and longer than the one before
        assert gaps[0] >= 0.05 and gaps[1] >= 0.1 and gaps[2] >= 0.2, gaps
    finally:
        task.cancel()


async def test_a_component_that_returns_is_not_restarted() -> None:
    states: dict[str, ComponentState] = {}
    runs = 0

    async def once() -> None:
        nonlocal runs
        runs += 1

    await Supervisor(states, first_delay=0.01).start("demo", once)
    assert runs == 1 and states["demo"].restarts == 0


async def test_a_failing_component_degrades_the_service_instead_of_stopping_it(
    settings_for: Callable[..., Settings], tmp_path: Path
) -> None:
    """The inbox component raises (a bug, injected: the watcher itself now catches every
    file's and every scan's error) on its first two runs. MLLP and the API go on; /readyz
    names the inbox as degraded with its error and restarts, /metrics counts them; after the
    backoff it runs again and /readyz is clean."""
    from carescore.serve import Service

    svc = Service(settings_for(feeds={"poll": 0.05, "inbox": tmp_path / "inbox"}))
    real_run, runs = svc.watcher.run, []

    async def buggy() -> None:
        runs.append(time.monotonic())
        if len(runs) <= 2:
            raise RuntimeError("a bug in the inbox")
        await real_run()

    svc.watcher.run = buggy  # type: ignore[method-assign]
    await svc.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{svc.api_port}", timeout=10) as client:

            async def readyz() -> dict[str, Any]:
                response = await client.get("/readyz")
                assert response.status_code == 200  # degraded, not down: the API and MLLP serve
                body: dict[str, Any] = response.json()
                return body

            deadline = time.monotonic() + 10
            while "inbox" not in (body := await readyz())["degraded"]:
                assert time.monotonic() < deadline, body
                await asyncio.sleep(0.01)
            assert body["components"]["inbox"]["last_error"] == "RuntimeError: a bug in the inbox"
            metrics = (await client.get("/metrics")).text
            assert 'carescore_component_up{component="inbox"} 0.0' in metrics
            assert not svc._tasks[0].done()  # the HTTP server still runs
            _reader, writer = await asyncio.open_connection("127.0.0.1", svc.mllp.port)
            writer.close()  # the MLLP listener still takes connections
            await writer.wait_closed()

            deadline = time.monotonic() + 30  # restarts after 1 s, then 2 s
            while True:
                body = await readyz()
                if not body["degraded"]:
                    break
                assert time.monotonic() < deadline, body
                await asyncio.sleep(0.05)
            assert body["components"]["inbox"] == {
                "up": True,
                "restarts": 2,
                "last_error": body["components"]["inbox"]["last_error"],
            }
            assert len(runs) == 3 and runs[2] - runs[1] >= 2.0 and runs[1] - runs[0] >= 1.0
            metrics = (await client.get("/metrics")).text
            assert 'carescore_component_restarts_total{component="inbox"} 2.0' in metrics
    finally:
        await svc.stop()
