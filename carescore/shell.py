"""The runtime shell: what a running carescore owns whatever carries its events.

One data folder (locked: two writers would interleave its files), the live board, the
history of closed windows, the dead letters, the alert service, health, and the order things
stop in. The two transports subclass it: `EmbeddedRuntime` (events through the local log into
an engine in this process) and `KafkaGateway` (events to Kafka, samples back from workers).
Connectors and the API see only this interface: publish, tick, report, health, close.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from alerts.forecasts import ForecastWatch
from alerts.metrics import LEADER
from carescore.alerting import build_alert_service
from carescore.supervisor import ComponentState
from connectors.deadletters import DeadLetterStore
from engine.benchmarks import load_peer_benchmarks
from engine.board import KpiBoard
from engine.bus import Published
from engine.config import Settings
from engine.core import Engine
from engine.definitions import Catalogue, load_catalogue
from engine.events import EventBase
from engine.forecast import MAX_GAP, MAX_POINTS
from engine.history import History
from engine.reports import Level, ReportRow
from engine.samples import GroupKey, Sample
from engine.yamlconf import ConfigError

log = logging.getLogger(__name__)
FORECAST_WINDOWS = MAX_POINTS + MAX_GAP


class DataDirBusy(RuntimeError):
    """Another carescore process owns this data folder."""


def lock_data_dir(data: Path) -> IO[bytes]:
    """One process per data folder: two writers would interleave the event log, the history
    and the alert store."""
    handle = open(data / ".lock", "ab")  # noqa: SIM115 - held for the runtime's life
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        handle.close()
        raise DataDirBusy(
            f"{data} is in use by another carescore process (stop it, or use another data_dir)"
        ) from exc
    return handle


class RuntimeShell:
    kind = ""

    def __init__(self, settings: Settings, catalogue: Catalogue | None = None):
        self.settings = settings
        self.catalogue = catalogue or load_catalogue(settings.kpi_defs)
        self.places = settings.places
        self.scorecard = settings.scorecard
        self.small_cell_min = settings.privacy.small_cell_min
        unknown = sorted(set(settings.scorecard.weights) - set(self.catalogue.kpis))
        if unknown:
            raise ConfigError([f"scorecard.weights: unknown KPI id(s) {', '.join(unknown)}"])
        self.peers = load_peer_benchmarks(settings.scorecard.benchmarks, self.catalogue.kpis)
        data = settings.data_dir
        data.mkdir(parents=True, exist_ok=True)
        try:
            data.chmod(0o700)  # also a folder made before (or by another tool): it holds PHI
        except PermissionError:  # another user's folder (a mounted volume): say so, run on
            log.warning("data folder mode not changed to 0700 (not its owner)", extra={"data_dir": str(data)})
        self._lock = lock_data_dir(data)
        self.board = KpiBoard()
        self.dead_letters = DeadLetterStore(
            data / "deadletters.sqlite",
            max_rows=settings.dead_letters.max_rows,
            retention=settings.dead_letters.retention,
            prune_every=settings.privacy.purge_every,
        )
        self.clock: Callable[[], float] = time.time  # tests drive time by replacing it
        self.ready = False
        self.started_at = time.time()
        self.components: dict[str, ComponentState] = {}  # the supervisor's, on /readyz and /metrics
        self.leading = True  # evaluates alerts and delivers notices (a Kafka gateway: while it leads)

    @property
    def leading(self) -> bool:
        return self._leading

    @leading.setter
    def leading(self, leading: bool) -> None:
        self._leading = leading
        LEADER.set(1 if leading else 0)

    def _attach(self, engine: Engine, sources_of: Callable[[str], set[str]] | None = None) -> None:
        """History and alerts, once the transport has the engine whose panes and roster they use."""
        data = self.settings.data_dir
        self.history = History(data / "history.sqlite", engine.pane_clocks())
        self.alerts = build_alert_service(
            self.settings, self.catalogue, engine, self.board, data, self.dead_letters, sources_of
        )
        self.forecasts = ForecastWatch(
            self.settings.forecasts, self.catalogue, self._history_of, self.places.unit_types()
        )
        self.forecasts.restore(self.alerts.firing())

    def _history_of(self, kpi: str, place: GroupKey) -> list[Sample]:
        """A place's closed windows of a KPI, as many as a forecast uses."""
        level = "unit" if place[2] else "department" if place[1] else "facility"
        f, d, u = place
        return self.history.query(kpi, facility=f, department=d, unit=u, level=level, limit=FORECAST_WINDOWS)

    async def run_forecasts(self) -> None:
        """Forecast alerts (settings forecasts:), every `forecasts.every`, fitted in a thread."""
        every = self.settings.forecasts.every
        while True:
            live = list(self.board.current)  # copied here: the loop changes the board
            if self.leading:
                changes = await asyncio.to_thread(self.forecasts.check, self.clock(), live)
                self.alerts.take(changes)
            await asyncio.sleep(every)

    # -- what a transport provides -------------------------------------------------------------
    async def start(self) -> None:
        """Connect what the transport needs before connectors publish (nothing, embedded)."""

    async def publish(self, message_key: str, events: list[EventBase]) -> Published:
        raise NotImplementedError

    async def run_ticks(self) -> None:
        raise NotImplementedError

    def tick(self, now: float | None = None) -> None:
        raise NotImplementedError

    def background(self) -> dict[str, Callable[[], Awaitable[None]]]:
        """The transport's own long-running parts, each kept running by the supervisor."""
        return {}

    async def run_alerts(self) -> None:
        """Deliver notices until cancelled (a Kafka gateway: while it leads)."""
        await self.alerts.run()

    def report(self, kpi_id: str, start: datetime, end: datetime, by: Level = "unit") -> list[ReportRow]:
        raise NotImplementedError

    def _counters(self) -> dict[str, Any]:
        """The transport's own figures for /healthz."""
        return {}

    async def _stop_transport(self) -> None:
        """Stop taking input and make what was accepted durable."""

    # -- the shell -----------------------------------------------------------------------------
    async def close(self) -> None:
        """In order: no more input (and its state made durable), alerts (their last notices and
        changes), then the stores, and the data folder's lock last."""
        await self._stop_transport()
        await self.alerts.close()
        self.alerts.close_store()
        self.history.close()
        self.dead_letters.close()
        self._lock.close()

    def health(self) -> dict[str, Any]:
        store = self.alerts.store_health()
        return {
            "status": "ok" if store["healthy"] else "degraded",
            "alert_store": store,
            "runtime": self.kind,
            "alerting": "leader" if self.leading else "follower",
            **self._counters(),
            "uptime_seconds": round(time.time() - self.started_at, 1),
            "kpis": len(self.catalogue),
        }

    def data_dir(self) -> Path:
        return self.settings.data_dir
