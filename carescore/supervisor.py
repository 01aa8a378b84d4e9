"""Components of the running service restarted with backoff instead of stopping the process.

One bad inbox file, a delivery loop that trips on a broken channel, a tick that raises:
each is one component's fault, and stopping the whole process for it would also stop MLLP
and the API, so a hospital's feed would queue up for one bug. A failed component is logged,
restarted after a delay that doubles up to a minute (reset once it has run a minute), and its
state is on /readyz and /metrics (carescore_component_up, carescore_component_restarts).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from engine.backoff import backoff

log = logging.getLogger(__name__)

FIRST_DELAY = 1.0
MAX_DELAY = 60.0
HEALTHY_AFTER = 60.0
"""Seconds a restarted component must run before its backoff starts again from the first delay."""


@dataclass
class ComponentState:
    up: bool = True
    restarts: int = 0
    last_error: str | None = None

    def describe(self) -> dict[str, Any]:
        return {"up": self.up, "restarts": self.restarts, "last_error": self.last_error}


class Supervisor:
    def __init__(self, states: dict[str, ComponentState], first_delay: float = FIRST_DELAY):
        self.states = states
        self.first_delay = first_delay

    def start(self, name: str, run: Callable[[], Awaitable[Any]]) -> asyncio.Task[None]:
        """Run `run()` as a task; if it raises, run it again after the backoff. A normal return
        ends the component (the demo finishing, for one)."""
        self.states[name] = ComponentState()
        return asyncio.create_task(self._keep(name, run), name=name)

    async def _keep(self, name: str, run: Callable[[], Awaitable[Any]]) -> None:
        state = self.states[name]
        loop = asyncio.get_running_loop()
        failures = 0  # in a row, without a healthy spell between
        while True:
            began = loop.time()
            try:
                await run()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures = 1 if loop.time() - began >= HEALTHY_AFTER else failures + 1
                delay = backoff(self.first_delay, failures, MAX_DELAY)
                state.up = False
                state.last_error = f"{type(exc).__name__}: {exc}"[:300]
                log.error(
                    "component failed; restarting it",
                    exc_info=True,
                    extra={"component": name, "restart_in_seconds": delay, "restarts": state.restarts},
                )
            await asyncio.sleep(delay)
            state.restarts += 1
            state.up = True
