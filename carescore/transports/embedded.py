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
import logging
import os
import signal
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from carescore.metrics import CLOSING_BEHIND, show_watermark_lags
from carescore.shell import RuntimeShell
from carescore.transports import live_engine
from engine.bus import Published, StorageUnavailable, Then
from engine.checkpoint import Checkpoint, catalogue_fingerprint
from engine.config import Settings
from engine.dedupe import IMPORT_KEY, RecentKeys, batch_key, message_key_of
from engine.definitions import Catalogue
from engine.eventframe import log_frame
from engine.eventlog import BATCH_END, BATCH_LINE_END, MESSAGE_END, START, EventLog, Position
from engine.events import EventBase
from engine.reports import Level, Reporter, ReportRow
from engine.samples import Sample

log = logging.getLogger(__name__)

SEEN_LIMIT = 2_000_000
"""Message keys remembered for de-duplication (oldest forgotten first)."""

SNAPSHOT_SEEN = 200_000
"""Keys kept across a restart: resends after a lost ACK come within minutes, not days."""

TICK_SLICE = 0.002
"""Seconds of window closing at a time; the loop is served between two slices (an ACK takes
several turns of the loop: read, map, log, write, answer), so a tick that closes many windows
(a restart after a long stop, a burst of old data) holds no ACK up for longer than a slice."""

CLOSING_GIVES_WAY = 8
"""While other work comes in (messages, requests), closing waits this many slices after each
slice: it takes at most about a ninth of the loop (the rest of a tick, every engine.tick, comes
on top), and an ACK is not held behind it. A burst of old data (a backfill over MLLP, an
interface engine's queue after an outage) has years of windows to close; at half the loop, the
MIMIC replay's stop-and-wait senders got 3,563 msg/s, at a ninth 5,400-7,300 (BENCHMARKS.md).
Live, windows close a few a minute per group, so only such bursts fall behind; with nothing
else to do, closing takes the whole loop (carescore_windows_closing_behind)."""

TRAFFIC_HOLD = 0.5
"""Seconds after the last sign of other work (an append, an MLLP read, an HTTP request) that
closing still gives way. (The loop thread's CPU in the turn between slices was tried as the
sign: an idle turn's p99 was 224 µs and an HTTP request's turns had a median of 27 µs.)"""

BEHIND_LIMIT = 30.0
"""Seconds into a tick (one closing a burst's windows) after which closing no longer gives way
as far: it takes half the loop (a slice, then as long for the rest), so work that never lets up
cannot keep windows open for ever. Events for windows the watermark passed but not yet closed
still count in them: giving way moves where an out-of-order event is counted late by as long
as closing trails."""

REPLAY_ADVANCE_EVERY = 2000
"""Events between two closings of windows while the log is replayed or a backfill imported:
windows close as the data goes by, as they do live, so state holds the open windows only
(not every pane since the first event) and history is written as it would have been. Counted
by the engine's events since the first (_process_closing): an import and a replay of the same
log close at the same events."""


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


class EmbeddedRuntime(RuntimeShell):
    kind = "embedded"

    def __init__(self, settings: Settings, *, catalogue: Catalogue | None = None):
        super().__init__(settings, catalogue)
        data = settings.data_dir
        self.engine = live_engine(settings, self.catalogue)
        self._attach(self.engine)
        self.snapshot_path = data / "snapshot.json"
        self.fingerprint = catalogue_fingerprint(self.catalogue, settings.timezone)
        self.seen = RecentKeys(SEEN_LIMIT)
        # import batches' keys, apart and whole: an import of more events than the snapshot
        # keeps keys for (every event's key is in `seen`) run again must still find them all
        self.imported: set[str] = set()
        self.snapshot_at_stop = True
        """False after a failed `import mimic` (an error, Ctrl-C): the next start replays its
        batches as after a kill. (Any stop writes no snapshot while the history lacks windows
        the engine closed: write_snapshot.)"""
        self._inflight: dict[str, asyncio.Future[Any]] = {}  # appends being written, by key
        self.processed = START
        self._last_snapshot = 0.0
        self._snapshot_pid: int | None = None
        self._snapshot_mark = 0  # the history's mark at the fork
        self._ready: tuple[Path, int] | None = None  # a snapshot written, waiting for the history
        self._reporter: tuple[Position, Reporter] | None = None
        self.engine_errors = 0  # events the engine raised on (counted, logged, skipped)
        self.close_every = 0  # imports: close windows every this many events (ticks do it live)
        self._closed_at = -1  # events_processed at the last close (_process_closing)
        self._ticking = asyncio.Lock()  # one tick at a time (tests and tools call tick_async too)
        # a count that grows with other work on the loop (the service adds MLLP reads, requests)
        self.work_seen: Callable[[], int] = lambda: self.log.appended_events
        self.log = EventLog(data / "events", fsync=settings.engine.fsync, on_commit=self._on_commit)
        self.recover()

    # -- the bus -------------------------------------------------------------------------
    async def publish(self, message_key: str, events: list[EventBase]) -> Published:
        return await self.publish_nowait(message_key, events)

    def publish_nowait(
        self, message_key: str, events: list[EventBase], then: Then | None = None
    ) -> asyncio.Future[Published]:
        """A future that resolves once the events are durable (or at once: a duplicate of a
        message already stored). A resend while the first copy is still being written waits
        for that write: answering it AA at once would acknowledge a message that a failed
        write or a kill before the fsync then loses. `then(future)` runs as soon as the
        future is done, in the same callback (a done callback would wait for a turn of the
        loop, and an ACK waits for every such turn)."""
        loop = asyncio.get_running_loop()
        result: asyncio.Future[Published] = loop.create_future()

        def settle(value: Published | None, exc: BaseException | None = None) -> None:
            if result.done():  # the publisher gave up waiting; the outcome stands all the same
                return
            if exc is not None:
                result.set_exception(exc)
            else:
                result.set_result(value)  # type: ignore[arg-type]
            if then is not None:
                try:
                    then(result)
                except Exception:  # one publisher's callback, kept from the others' and the log's
                    log.exception("a publish callback failed")

        if message_key in self.seen:
            settle(Published.duplicate)
            return result
        earlier = self._inflight.get(message_key)
        if earlier is not None:

            def after_first(first: asyncio.Future[Any]) -> None:
                if first.cancelled() or first.exception() is not None:
                    settle(None, StorageUnavailable("event log: the first copy was not stored"))
                else:
                    settle(Published.duplicate)

            earlier.add_done_callback(after_first)
            return result
        if not events:
            self._remember(message_key)
            settle(Published.accepted)
            return result

        def stored(appended: asyncio.Future[Any]) -> None:
            self._inflight.pop(message_key, None)
            exc = None if appended.cancelled() else appended.exception()
            if exc is None and not appended.cancelled():
                self._remember(message_key)
            if appended.cancelled() or exc is not None:
                error = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
                settle(None, StorageUnavailable(f"event log: {error or 'cancelled'}"))
                return
            settle(Published.accepted)

        appended = self.log.append_nowait(events, then=stored)
        if not appended.done():  # (a closed log refuses at once: nothing in flight)
            self._inflight[message_key] = appended
        return result

    def ingest_now(self, message_key: str, events: list[EventBase]) -> Published:
        """Blocking publish for bulk imports (CLI): same de-duplication, fsync per batch."""
        if message_key in self.imported or message_key in self.seen:
            return Published.duplicate
        if not events:
            self._remember(message_key)
            return Published.accepted
        commits = self.log.commits
        try:
            self.log.append_now(events, batch=message_key.startswith(IMPORT_KEY))
        finally:  # stored, also if processing it raised then (a bug, Ctrl-C): its key with it
            if self.log.commits != commits:
                self._remember(message_key)
        return Published.accepted

    def _remember(self, key: str) -> None:
        if key.startswith(IMPORT_KEY):
            self.imported.add(key)
        else:
            self.seen.add(key)

    def _on_commit(self, events: list[EventBase], position: Position) -> None:
        if self.close_every:
            self._process_closing(events, self.close_every)
        else:
            self._process(events)
        self.processed = position
        # the keys with their events, not when the appenders hear (a callback later): a tick
        # can fork a snapshot in between, and a snapshot holding events but not their keys
        # would store them again when a sender that never got its ACK resends after a kill
        remember = self.seen.add
        for event in events:
            remember(message_key_of(event.source_id))
        try:
            self.alerts.saw(events, self.clock())
        except Exception:
            log.exception("feed staleness bookkeeping failed")

    def _process(self, events: list[EventBase] | tuple[EventBase, ...]) -> None:
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

    def _process_closing(self, events: list[EventBase], every: int) -> None:
        """_process(), closing windows after each event that makes the engine's count a multiple
        of `every`, at that event's received time: where the windows close depends on the log
        alone, so an import and a start replaying its events (after a kill, or a stop that
        could not write its snapshot) close them at the same events, and count the same late
        ones. (At the wall clock and a commit's end, a replay's windows differed from the
        import's wherever an event came after its window had closed in one and not the other.)"""
        engine = self.engine
        for event in events:
            self._process((event,))
            count = engine.events_processed
            if count % every == 0 and count != self._closed_at:
                self._closed_at = count
                self.history.add_now(self._closed(event.received_time.timestamp()) or [])

    def _closed(self, now: float, deadline: float | None = None) -> list[Sample] | None:
        """engine.advance(now, deadline). If it raises (a bug), what it had closed is lost to
        the history until a restart replays it: logged, and no snapshot is published in this
        process (History.missed; /metrics and the import say so). None then; the rest of an
        append is still processed."""
        try:
            return self.engine.advance(now, deadline)
        except Exception as exc:
            log.exception("closing windows failed; no snapshot until a restart closes them again")
            self.history.missed(f"closing windows raised {type(exc).__name__}: {exc}")
            return None

    def close_windows(self, now: float | None = None) -> None:
        """Close the windows the watermarks have passed and keep them in the history."""
        self.history.add_now(self._closed(self.clock() if now is None else now) or [])

    # -- recovery ------------------------------------------------------------------------
    def recover(self) -> None:
        for stale in self.snapshot_path.parent.glob("snapshot.*.tmp"):  # from a killed writer
            stale.unlink(missing_ok=True)
        since = START
        snap = self._read_snapshot()
        if snap is not None:
            self.engine.restore(snap.engine)
            self.imported = {k for k in snap.seen if k.startswith(IMPORT_KEY)}
            self.seen = RecentKeys(SEEN_LIMIT, (k for k in snap.seen if not k.startswith(IMPORT_KEY)))
            since = Position(*snap.at)
            self.processed = since  # the next snapshot must not point before what this one holds
            self._closed_at = self.engine.events_processed  # its closing there is in the state
        replayed = 0
        firsts: list[str] = []  # the first event of the append being replayed (_firsts)
        previous = MESSAGE_END  # how the line before ended (replay starts after a whole append)
        mark, before = self.log.marked_from, since  # where the line before ended
        for event, position, ending in self.log.replay(since):
            start = before if before.segment == position.segment else Position(position.segment, 0)
            if mark in (before, start):  # this line starts where an earlier version's lines end
                previous = MESSAGE_END
            before = self.processed = position
            if event is not None:
                self._process_closing([event], REPLAY_ADVANCE_EVERY)
                self._remember(message_key_of(event.source_id))
                replayed += 1
            firsts = self._firsts(firsts, previous, event, ending)
            previous = b"" if event is None and ending == b"\n" else ending
            if ending not in (BATCH_END, MESSAGE_END):
                continue
            if event is None or not firsts:  # its first or last line unreadable: no key is known
                if ending == BATCH_END:
                    log.warning("event log: an import batch with an unreadable first or last line has no key")
                continue
            last = event.source_id
            if ending == BATCH_END:  # an import batch's key: the same batch imported again is a duplicate
                self.imported.update(batch_key(first, last) for first in firsts)
            else:
                # an append of several messages, by an earlier version: an import batch (its key
                # with the recent keys now, with the import keys after the next snapshot's restart:
                # at most one per such batch); a live message's key is remembered above
                for first in firsts:
                    if message_key_of(first) != message_key_of(last):
                        self.seen.add(batch_key(first, last))
        log.info(
            "state recovered",
            extra={
                "from_snapshot": snap is not None,
                "events_replayed": replayed,
                "events_total": self.engine.events_processed,
            },
        )

    @staticmethod
    def _firsts(firsts: list[str], previous: bytes, event: EventBase | None, ending: bytes) -> list[str]:
        """The first event of the append a replayed line belongs to, as a list: an import
        batch's lines end with BATCH_LINE_END but its last, a message's with a plain newline
        but its last, so a line after an append's end, or of the other kind than the line before
        (that append's end unreadable), starts an append. An unreadable line whose ending is
        lost (previous b"") may have ended its append or not: the next line is the first of
        one, or the append goes on, and the batch's key is kept both ways (a wrong one matches
        no batch). Empty when the first line is unreadable: its append has no key."""
        own = [] if event is None else [event.source_id]
        if event is None and ending == b"\n":  # its ending lost: whether it ended an append is not known
            return [] if previous in (BATCH_END, MESSAGE_END) else firsts
        if previous == b"":
            return firsts + own
        batch_line = ending in (BATCH_LINE_END, BATCH_END)
        if previous in (BATCH_END, MESSAGE_END) or batch_line != (previous == BATCH_LINE_END):
            return own
        return firsts

    def _read_snapshot(self) -> Checkpoint | None:
        try:
            blob = self.snapshot_path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("snapshot unreadable, replaying the whole log", extra={"error": str(exc)})
            return None
        snap = Checkpoint.decode(blob, self.fingerprint)
        if snap is None:
            return None
        if not self.log.at_line_start(Position(*snap.at)):
            why = "points where the event log has no line start"
        elif not self.log.same_sizes(snap.extra.get("segments", {})):
            why = "was taken over event-log segments of other sizes"
        else:
            return snap
        log.error(
            f"snapshot {why} (a log restored from an older backup?); replaying the whole log",
            extra={"at": snap.at},
        )
        return None

    def write_snapshot(self) -> bool:
        """Write the snapshot now (on stop; tests), unless the history lacks a window the engine
        has closed (a failed write: settled): the last snapshot stays, so the next start
        closes those windows again and writes them. Ticks use snapshot_in_background()."""
        self._reap_snapshot(wait=True)
        self._discard_ready()
        self.history.flush()
        if not self.history.settled(self.history.mark()):
            log.error(
                "no snapshot: the history could not store %d closed windows (%s); the next start "
                "closes them again from the last snapshot",
                self.history.held,
                self.history.last_error,
            )
            return False
        self._write_snapshot_file(self._tmp(os.getpid()))
        self._last_snapshot = self.clock()  # the clock ticks compare it with
        return True

    def snapshot_in_background(self) -> None:
        """Snapshot from a forked child: it sees the state as of the fork (copy-on-write) and
        serialises and fsyncs it while the loop goes on (a large state takes about a second:
        no ACK waits for it). It replaces the last snapshot only once the history holds every
        window closed before the fork (_publish). Where fork does not exist, written in place."""
        if self._reap_snapshot(wait=False):
            return  # the last one is still being written, or waits for the history
        if self.history.held:
            return  # it could not be published before they are written: no file on a full disk
        self._last_snapshot = self.clock()  # the clock ticks compare it with
        mark = self.history.mark()
        if not hasattr(os, "fork"):
            tmp = self._tmp(os.getpid())
            self._write_snapshot_file(tmp, publish=False)
            self._ready = (tmp, mark)
            self._publish()
            return
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # the child: no logging, no loop, nothing but the file
            code = 1
            try:
                _die_with(parent)
                self._lock.close()  # the lock is the parent's: a killed parent frees the folder
                self._write_snapshot_file(self._tmp(os.getpid()), publish=False)
                code = 0
            finally:
                os._exit(code)
        self._snapshot_pid = pid
        self._snapshot_mark = mark

    def _reap_snapshot(self, wait: bool) -> bool:
        """True while a forked snapshot is still being written or waits for the history."""
        if self._snapshot_pid is not None:
            pid, status = os.waitpid(self._snapshot_pid, 0 if wait else os.WNOHANG)
            if pid == 0:
                return True
            self._snapshot_pid = None
            if os.waitstatus_to_exitcode(status) != 0:
                log.warning("background snapshot failed; tried at snapshot_every", extra={"status": status})
                self._tmp(pid).unlink(missing_ok=True)
                return False
            self._ready = (self._tmp(pid), self._snapshot_mark)
        return self._publish() is False

    def _publish(self) -> bool | None:
        """The written snapshot replaces the last one once the history has stored every window
        closed before it: None (nothing waits), True (replaced), False (still waiting: a write
        under way, or windows a failed write holds; no newer snapshot is taken meanwhile)."""
        if self._ready is None:
            return None
        tmp, mark = self._ready
        if not self.history.settled(mark):
            if self.history.held:  # windows a failed write holds: never publishable, free the disk
                self._discard_ready()
                return None
            return False
        self._ready = None
        try:
            os.replace(tmp, self.snapshot_path)
        except OSError:
            log.exception("a written snapshot could not replace the last one; tried again at snapshot_every")
            tmp.unlink(missing_ok=True)
        return True

    def _tmp(self, pid: int) -> Path:
        return self.snapshot_path.with_suffix(f".{pid}.tmp")  # removed at start when left

    def _discard_ready(self) -> None:
        if self._ready is not None:
            self._ready[0].unlink(missing_ok=True)
            self._ready = None

    def _write_snapshot_file(self, tmp: Path, publish: bool = True) -> None:
        position, engine = self.processed.to_list(), self.engine.snapshot()
        seen = self.seen.newest(SNAPSHOT_SEEN) + sorted(self.imported)
        segments = self.log.sizes_before(self.processed.segment)  # the log it was taken over
        snap = Checkpoint(self.fingerprint, position, engine, seen, {"segments": segments})
        with open(tmp, "wb") as fh:
            fh.write(snap.encode())
            fh.flush()
            os.fsync(fh.fileno())
        if publish:
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
        does not wait on the disk, and no ACK waits for the whole of it. While other work comes
        in, closing gives way to it (CLOSING_GIVES_WAY); while it is behind, the rest of a tick
        (held history writes, live values, alerts, the snapshot) still runs every engine.tick,
        at `now` plus the time the tick has taken. A call while a tick runs waits for it."""
        async with self._ticking:
            await self._tick(self.clock() if now is None else now)

    async def _tick(self, now: float) -> None:
        began = done = time.perf_counter()
        was_behind = False
        engine, work_seen, traffic_until = self.engine, self.work_seen, 0.0
        seen = work_seen()
        while True:
            closed = self._closed(now, time.perf_counter() + TICK_SLICE)
            if closed is None:
                break
            self.history.add_later(closed)
            CLOSING_BEHIND.set(engine.behind)
            if not engine.behind:
                break
            was_behind = True
            await asyncio.sleep(0)  # what came in during the slice is served before the next one
            elapsed = time.perf_counter() - began
            if work_seen() != seen:
                seen = work_seen()
                traffic_until = elapsed + TRAFFIC_HOLD
            if elapsed < traffic_until:
                await asyncio.sleep(TICK_SLICE * (CLOSING_GIVES_WAY if elapsed < BEHIND_LIMIT else 1))
            if time.perf_counter() - done >= self.settings.engine.tick:
                await self._rest_of_tick(now + (time.perf_counter() - began))
                done = time.perf_counter()
        took = time.perf_counter() - began
        if took > 1.0 and not engine.behind:  # a burst's windows: say when they were all closed
            log.info("windows caught up", extra={"seconds": round(took, 3)})
        await self._rest_of_tick(now + took if was_behind else now)

    async def _rest_of_tick(self, now: float) -> None:
        """What a tick does besides closing windows: write held windows again, refresh the live
        values, the board and the alerts, publish or take a snapshot."""
        self.history.retry()
        await self._observe(now)
        # a snapshot written is published at the first tick the history has caught up with it
        waiting = self._reap_snapshot(wait=False)
        if not waiting and now - self._last_snapshot >= self.settings.engine.snapshot_every:
            self.snapshot_in_background()

    async def _observe(self, now: float) -> None:
        """Live values, the board and alert evaluation (up to 7, 3 and 10 ms under load), each
        in a turn of the loop of its own."""
        live = self._live(now)
        await asyncio.sleep(0)
        self.board.update(live)
        await asyncio.sleep(0)
        self.alerts.observe(live, now)

    def _refresh(self, now: float) -> None:
        self._show(self._live(now), now)

    def _live(self, now: float) -> list[Sample]:
        show_watermark_lags([self.engine.watermark_lags(now)])
        return self.engine.live(now)

    def _show(self, live: list[Sample], now: float) -> None:
        """The board and the alerts from these live values (computed at `now`)."""
        self.board.update(live)
        self.alerts.observe(live, now)

    async def run_ticks(self) -> None:
        while True:
            try:
                await self.tick_async()
            except Exception:
                log.exception("tick failed")
            await asyncio.sleep(self.settings.engine.tick)

    async def _stop_transport(self) -> None:
        await self.log.close()
        self.history.settle()
        if self.snapshot_at_stop:
            self.write_snapshot()
        else:
            self._reap_snapshot(wait=True)
            self._discard_ready()

    # -- reports -----------------------------------------------------------------------------
    def report(self, kpi_id: str, start: datetime, end: datetime, by: Level = "unit") -> list[ReportRow]:
        """A period report computed with polars from the event log (cached per log position)."""
        position = self.log.position
        if self._reporter is None or self._reporter[0] != position:
            frame = log_frame(self.log.segment_paths())
            self._reporter = (position, Reporter(frame, self.places, self.settings.timezone))
        return self._reporter[1].report(self.catalogue[kpi_id], start, end, by)

    def _counters(self) -> dict[str, Any]:
        return {"events_processed": self.engine.events_processed}
