"""The embedded runtime: everything in one process on one asyncio loop, no Kafka.

Connectors publish here; events are appended to the local event log (fsync, group
commit) and handed to the engine in log order as each write becomes durable. A tick closes
windows into the history, refreshes the live board, evaluates alerts and now and then
writes a snapshot. On start the state comes back from the last snapshot plus the log
after it (or the whole log, if the KPI definitions changed since the snapshot).
"""

from __future__ import annotations

import asyncio
import ctypes
import fcntl
import hashlib
import logging
import os
import signal
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import orjson

from carescore.alerting import build_alert_service
from carescore.supervisor import ComponentState
from connectors.deadletters import DeadLetterStore
from engine.board import KpiBoard
from engine.bus import Published, StorageUnavailable
from engine.config import Settings
from engine.core import STATE_VERSION, Engine
from engine.definitions import Catalogue, load_catalogue
from engine.eventframe import log_frame
from engine.eventlog import START, EventLog, Position
from engine.events import EventBase
from engine.history import History
from engine.reports import Level, Reporter, ReportRow
from engine.yamlconf import ConfigError

log = logging.getLogger(__name__)

SEEN_LIMIT = 2_000_000
"""Message keys remembered for de-duplication (oldest forgotten first)."""

SNAPSHOT_SEEN = 200_000
"""Keys kept across a restart: resends after a lost ACK come within minutes, not days."""

TICK_SLICE = 0.005
"""Seconds of window closing at a time; the loop then has as long for itself (an ACK takes
several turns of the loop: read, map, log, fsync, answer). A tick that closes many windows (a
restart after a long stop, a burst of old data) takes twice as long and holds no ACK up."""

REPLAY_ADVANCE_EVERY = 2000
"""Events between two closings of windows while the log is replayed or a backfill imported:
windows close as the data goes by, as they do live, so state holds the open windows only
(not every pane since the first event) and history is written as it would have been."""


def _find_prctl() -> Any:
    """prctl, looked up once in the parent: a child forked from a process with threads must not
    go through the dynamic loader (another thread may have held its lock at the fork)."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _find_prctl()


def _die_with(parent: int) -> None:
    """A snapshot child killed with its parent (Linux PR_SET_PDEATHSIG): left alive, it could
    replace the snapshot a restarted process has written since with an older one."""
    if _PRCTL is not None:
        _PRCTL(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


class DataDirBusy(RuntimeError):
    """Another carescore process owns this data folder."""


def _lock_data_dir(data: Path) -> IO[bytes]:
    """One process per data folder: two writers would interleave the event log."""
    handle = open(data / ".lock", "ab")  # noqa: SIM115 - held for the runtime's life
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        handle.close()
        raise DataDirBusy(
            f"{data} is in use by another carescore process (stop it, or use another data_dir)"
        ) from exc
    return handle


def catalogue_fingerprint(catalogue: Catalogue, timezone: str = "UTC") -> str:
    """What a snapshot's state depends on: the state version, the KPIs, and the site's time
    zone (day panes are its days: a snapshot from another zone is not restored)."""
    blob = orjson.dumps(
        [STATE_VERSION, timezone, *(k.model_dump(mode="json", by_alias=True) for k in catalogue)],
        option=orjson.OPT_SORT_KEYS,
    )
    return hashlib.sha256(blob).hexdigest()[:16]


class EmbeddedRuntime:
    def __init__(self, settings: Settings, *, catalogue: Catalogue | None = None):
        self.settings = settings
        self.catalogue = catalogue or load_catalogue(settings.kpi_defs)
        self.places = settings.places
        self.scorecard = settings.scorecard
        unknown = sorted(set(settings.scorecard.weights) - set(self.catalogue.kpis))
        if unknown:
            raise ConfigError([f"scorecard.weights: unknown KPI id(s) {', '.join(unknown)}"])
        data = settings.data_dir
        data.mkdir(parents=True, exist_ok=True)
        self._lock = _lock_data_dir(data)
        self.engine = Engine(
            self.catalogue,
            self.places,
            idle_timeout=settings.engine.idle_timeout,
            timezone=settings.timezone,
            wall_clock=True,
        )
        self.board = KpiBoard()
        self.history = History(data / "history.sqlite", self.engine.pane_clocks())
        self.dead_letters = DeadLetterStore(
            data / "deadletters.sqlite",
            max_rows=settings.dead_letters.max_rows,
            retention=settings.dead_letters.retention,
        )
        self.clock: Callable[[], float] = time.time  # tests drive time by replacing both clocks
        self.alerts = build_alert_service(
            settings, self.catalogue, self.engine, self.board, data, self.dead_letters
        )
        self.snapshot_path = data / "snapshot.json"
        self.fingerprint = catalogue_fingerprint(self.catalogue, settings.timezone)
        self.seen: dict[str, None] = {}
        self._reserved: set[str] = set()
        self.processed = START
        self.started_at = time.time()
        self.ready = False
        self._last_snapshot = 0.0
        self._snapshot_pid: int | None = None
        self._reporter: tuple[Position, Reporter] | None = None
        self.components: dict[str, ComponentState] = {}  # the supervisor's, on /readyz and /metrics
        self.engine_errors = 0  # events the engine raised on (counted, logged, skipped)
        self.close_every = 0  # imports: close windows every this many events (ticks do it live)
        self._since_close = 0
        self.log = EventLog(data / "events", fsync=settings.engine.fsync, on_commit=self._on_commit)
        self.recover()

    # -- the bus -------------------------------------------------------------------------
    async def publish(self, message_key: str, events: list[EventBase]) -> Published:
        return await self.publish_nowait(message_key, events)

    def publish_nowait(self, message_key: str, events: list[EventBase]) -> asyncio.Future[Published]:
        """A future that resolves once the events are durable (or at once: a duplicate)."""
        loop = asyncio.get_running_loop()
        result: asyncio.Future[Published] = loop.create_future()
        if message_key in self.seen or message_key in self._reserved:
            result.set_result(Published.duplicate)
            return result
        if not events:
            self._remember(message_key)
            result.set_result(Published.accepted)
            return result
        self._reserved.add(message_key)

        def stored(appended: asyncio.Future[Any]) -> None:
            self._reserved.discard(message_key)
            exc = appended.exception()
            if exc is not None:
                error = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
                result.set_exception(StorageUnavailable(f"event log: {error}"))
                return
            self._remember(message_key)
            result.set_result(Published.accepted)

        self.log.append_nowait(events).add_done_callback(stored)
        return result

    def ingest_now(self, message_key: str, events: list[EventBase]) -> Published:
        """Blocking publish for bulk imports (CLI): same de-duplication, fsync per batch."""
        if message_key in self.seen:
            return Published.duplicate
        if events:
            self.log.append_now(events)
        self._remember(message_key)
        return Published.accepted

    def _remember(self, key: str) -> None:
        self.seen[key] = None
        if len(self.seen) > SEEN_LIMIT:
            for old in list(self.seen)[: SEEN_LIMIT // 10]:
                del self.seen[old]

    def _on_commit(self, events: list[EventBase], position: Position) -> None:
        self._process(events)
        self.processed = position
        try:
            self.alerts.feeds.observe(events, self.clock())
        except Exception:
            log.exception("feed staleness bookkeeping failed")
        if self.close_every:
            self._since_close += len(events)
            if self._since_close >= self.close_every:
                self._since_close = 0
                self.close_windows()

    def _process(self, events: list[EventBase]) -> None:
        """Every event to the engine. One that makes the engine raise is logged and counted
        (carescore_engine_event_errors) and the rest of the batch still goes in: the batch is
        durable and acknowledged, so stopping at the bad event would lose those after it, and
        failing the start on replay would stop the hospital's feed for one bug."""
        process = self.engine.process
        for event in events:
            try:
                process(event)
            except Exception:
                self.engine_errors += 1
                log.exception(
                    "the engine could not process an event; it stays in the log and in period reports",
                    extra={"event_type": event.type, "source": event.source},
                )

    def close_windows(self, now: float | None = None) -> None:
        """Close the windows the watermarks have passed and keep them in the history."""
        closed = self.engine.advance(self.clock() if now is None else now)
        if closed:
            self.history.add(closed)

    # -- recovery ------------------------------------------------------------------------
    def recover(self) -> None:
        for stale in self.snapshot_path.parent.glob("snapshot.*.tmp"):  # from a killed writer
            stale.unlink(missing_ok=True)
        since = START
        snap = self._read_snapshot()
        if snap is not None:
            self.engine.restore(snap["engine"])
            self.seen = dict.fromkeys(snap["seen"])
            since = Position(*snap["position"])
            self.processed = since  # the next snapshot must not point before what this one holds
        replayed = 0
        for event, position in self.log.replay(since):
            self._process([event])
            self._remember(event.source_id.rsplit("#", 1)[0])
            self.processed = position
            replayed += 1
            if replayed % REPLAY_ADVANCE_EVERY == 0:
                self.history.add(self.engine.advance(event.received_time.timestamp()))
        log.info(
            "state recovered",
            extra={
                "from_snapshot": snap is not None,
                "events_replayed": replayed,
                "events_total": self.engine.events_processed,
            },
        )

    def _read_snapshot(self) -> dict[str, Any] | None:
        if not self.snapshot_path.exists():
            return None
        try:
            snap: dict[str, Any] = orjson.loads(self.snapshot_path.read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            log.warning("snapshot unreadable, replaying the whole log", extra={"error": str(exc)})
            return None
        if snap.get("fingerprint") != self.fingerprint:
            log.info("KPI definitions changed since the snapshot: replaying the whole log")
            return None
        return snap

    def write_snapshot(self) -> None:
        """Write the snapshot now (on stop; tests). Ticks use snapshot_in_background()."""
        self._reap_snapshot(wait=True)
        self._write_snapshot_file()
        self._last_snapshot = time.time()

    def snapshot_in_background(self) -> None:
        """Snapshot from a forked child: it sees the state as of the fork (copy-on-write) and
        serialises and fsyncs it while the loop goes on (a large state takes about a second:
        no ACK waits for it). Where fork does not exist, written in place."""
        if self._reap_snapshot(wait=False):
            return  # the last one is still being written
        self._last_snapshot = time.time()
        if not hasattr(os, "fork"):
            self._write_snapshot_file()
            return
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # the child: no logging, no loop, nothing but the file
            code = 1
            try:
                _die_with(parent)
                self._lock.close()  # the lock is the parent's: a killed parent frees the folder
                self._write_snapshot_file()
                code = 0
            finally:
                os._exit(code)
        self._snapshot_pid = pid

    def _reap_snapshot(self, wait: bool) -> bool:
        """True while a forked snapshot is still being written."""
        if self._snapshot_pid is None:
            return False
        pid, status = os.waitpid(self._snapshot_pid, 0 if wait else os.WNOHANG)
        if pid == 0:
            return True
        self._snapshot_pid = None
        if os.waitstatus_to_exitcode(status) != 0:
            log.warning("background snapshot failed; the next tick tries again", extra={"status": status})
            self._last_snapshot = 0.0
        return False

    def _write_snapshot_file(self) -> None:
        snap = {
            "fingerprint": self.fingerprint,
            "position": self.processed.to_list(),
            "engine": self.engine.snapshot(),
            "seen": list(self.seen)[-SNAPSHOT_SEEN:],
            "written_at": time.time(),
        }
        tmp = self.snapshot_path.with_suffix(f".{os.getpid()}.tmp")
        with open(tmp, "wb") as fh:
            fh.write(orjson.dumps(snap))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.snapshot_path)

    # -- the tick ------------------------------------------------------------------------
    def tick(self, now: float | None = None) -> None:
        """One tick, all at once (tests, tools); the running service uses tick_async()."""
        now = self.clock() if now is None else now
        self.close_windows(now)
        self._refresh(now)
        if now - self._last_snapshot >= self.settings.engine.snapshot_every:
            self.write_snapshot()

    async def tick_async(self, now: float | None = None) -> None:
        """Windows close in slices of TICK_SLICE with the loop served in between, history is
        written on its own thread and the snapshot from a forked child: the work of a tick
        does not wait on the disk, and no ACK waits for the whole of it."""
        now = self.clock() if now is None else now
        while True:
            self.history.add_later(self.engine.advance(now, time.perf_counter() + TICK_SLICE))
            if not self.engine.behind:
                break
            await asyncio.sleep(TICK_SLICE)
        self._refresh(now)
        if now - self._last_snapshot >= self.settings.engine.snapshot_every:
            self.snapshot_in_background()

    def _refresh(self, now: float) -> None:
        live = self.engine.live(now)
        self.board.update(live)
        self.alerts.observe(live, now)

    async def run_ticks(self) -> None:
        while True:
            try:
                await self.tick_async()
            except Exception:
                log.exception("tick failed")
            await asyncio.sleep(self.settings.engine.tick)

    async def close(self) -> None:
        await self.log.close()
        self.history.flush()
        self.write_snapshot()
        await self.alerts.close()
        self.alerts.store.close()
        self.history.close()
        self.dead_letters.close()
        self._lock.close()

    # -- reports -----------------------------------------------------------------------------
    def report(self, kpi_id: str, start: datetime, end: datetime, by: Level = "unit") -> list[ReportRow]:
        """A period report computed with polars from the event log (cached per log position)."""
        position = self.log.position
        if self._reporter is None or self._reporter[0] != position:
            frame = log_frame(self.log.segment_paths())
            self._reporter = (position, Reporter(frame, self.places, self.settings.timezone))
        return self._reporter[1].report(self.catalogue[kpi_id], start, end, by)

    # -- health --------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        store = self.alerts.store_health()
        return {
            "status": "ok" if store["healthy"] else "degraded",
            "alert_store": store,
            "runtime": "embedded",
            "events_processed": self.engine.events_processed,
            "uptime_seconds": round(time.time() - self.started_at, 1),
            "kpis": len(self.catalogue),
        }

    def data_dir(self) -> Path:
        return self.settings.data_dir
