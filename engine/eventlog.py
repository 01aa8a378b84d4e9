"""The local event log: the embedded runtime's durable store of every accepted event.

Append-only NDJSON segments. An append returns only after the bytes are written and
fsync'd, so an HL7 AA can follow it; appends that arrive while an fsync is running are
written together in the next one (group commit), which keeps the ACK latency low when many
senders are busy. A crash can at worst leave a torn last line, which replay skips and
truncates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

from engine.events import EventBase, dump_event, parse_event

log = logging.getLogger(__name__)

SEGMENT_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, order=True)
class Position:
    """A place in the log: segment number and byte offset within it."""

    segment: int
    offset: int

    def to_list(self) -> list[int]:
        return [self.segment, self.offset]


START = Position(0, 0)


OnCommit = Callable[[list[EventBase], Position], None]


class EventLog:
    """on_commit(events, position) runs after each durable write, in log order, before any
    appender is told its events are stored: the engine sees events exactly as logged."""

    def __init__(
        self,
        directory: Path,
        *,
        fsync: bool = True,
        segment_bytes: int = SEGMENT_BYTES,
        on_commit: OnCommit | None = None,
    ):
        self.directory = directory
        self.on_commit = on_commit
        self.directory.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync
        self.segment_bytes = segment_bytes
        self._pending: list[tuple[list[EventBase], bytes, asyncio.Future[Position]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self.appended_events = 0
        self.commits = 0
        self._sealing: list[threading.Thread] = []
        segments = self.segments()
        self._segment = segments[-1] if segments else 0
        self._repair_tail()
        self._fh = open(self._path(self._segment), "ab")  # noqa: SIM115 - held open for appends
        self._position = Position(self._segment, self._fh.tell())

    # -- files ---------------------------------------------------------------------------
    def _path(self, segment: int) -> Path:
        return self.directory / f"events-{segment:08d}.ndjson"

    def segments(self) -> list[int]:
        return sorted(int(p.stem.split("-")[1]) for p in self.directory.glob("events-*.ndjson"))

    def segment_paths(self) -> list[Path]:
        return [self._path(s) for s in self.segments()]

    def _repair_tail(self) -> None:
        """Cut a torn last line left by a crash mid-write (it was never acknowledged)."""
        path = self._path(self._segment)
        if not path.exists() or path.stat().st_size == 0:
            return
        with open(path, "rb+") as fh:
            data = fh.read()
            if data.endswith(b"\n"):
                return
            cut = data.rfind(b"\n") + 1
            log.warning("event log %s: removing a torn last record (%d bytes)", path, len(data) - cut)
            fh.truncate(cut)

    @property
    def position(self) -> Position:
        """End of what has been written (safe to read from other threads)."""
        return self._position

    # -- writing -------------------------------------------------------------------------
    def _write(self, blob: bytes) -> Position:
        if self._fh.tell() + len(blob) > self.segment_bytes and self._fh.tell() > 0:
            self._sync()
            self._fh.close()
            self._seal_later(self._path(self._segment))
            self._segment += 1
            self._fh = open(self._path(self._segment), "ab")  # noqa: SIM115
        self._fh.write(blob)
        self._fh.flush()
        self._position = Position(self._segment, self._fh.tell())
        return self._position

    def _seal_later(self, path: Path) -> None:
        """Write the finished segment's Parquet copy in the background (reports read it)."""
        from engine.eventframe import seal

        def run() -> None:
            try:
                seal(path)
            except Exception:
                log.exception("sealing %s as Parquet failed; reports read its NDJSON", path)

        thread = threading.Thread(target=run, name=f"seal-{path.stem}", daemon=True)
        thread.start()
        self._sealing.append(thread)

    def wait_sealed(self, timeout: float = 60.0) -> None:
        for thread in self._sealing:
            thread.join(timeout)
        self._sealing = [t for t in self._sealing if t.is_alive()]

    def _sync(self) -> None:
        if self.fsync:
            os.fsync(self._fh.fileno())

    def append_now(self, events: list[EventBase]) -> Position:
        """Blocking append + fsync (CLI imports, tests)."""
        pos = self._write(b"".join(dump_event(e) + b"\n" for e in events))
        self._sync()
        self.appended_events += len(events)
        self.commits += 1
        if self.on_commit is not None:
            self.on_commit(events, pos)
        return pos

    async def append(self, events: list[EventBase]) -> Position:
        """Append and wait until durable; returns the log position after these events."""
        if not events:
            return self.position
        return await self.append_nowait(events)

    def append_nowait(self, events: list[EventBase]) -> asyncio.Future[Position]:
        """A future of the position after these events, resolved once they are durable."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Position] = loop.create_future()
        self._pending.append((events, b"".join(dump_event(e) + b"\n" for e in events), fut))
        self.appended_events += len(events)
        if self._writer is None or self._writer.done():
            self._wake = asyncio.Event()
            self._writer = asyncio.create_task(self._run_writer(), name="eventlog-writer")
        assert self._wake is not None
        self._wake.set()
        return fut

    async def _run_writer(self) -> None:
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._pending = self._pending, []
            if not batch:
                continue
            try:
                pos = self._write(b"".join(blob for _, blob, _ in batch))
                await loop.run_in_executor(None, self._sync)
            except OSError as exc:
                log.error("event log write failed: %s", exc)
                for _, _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            self.commits += 1
            if self.on_commit is not None:
                committed = [e for events, _, _ in batch for e in events]
                try:
                    self.on_commit(committed, pos)
                except Exception:  # the events are stored; replay will see them
                    log.exception("processing committed events failed")
            for _, _, fut in batch:
                if not fut.done():
                    fut.set_result(pos)

    async def close(self) -> None:
        if self._writer is not None:
            while self._pending:
                await asyncio.sleep(0.01)
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        self._fh.close()

    # -- reading -------------------------------------------------------------------------
    def replay(self, since: Position = START) -> Iterator[tuple[EventBase, Position]]:
        """Every event after `since`, in log order, with the position after it."""
        for segment in self.segments():
            if segment < since.segment:
                continue
            with open(self._path(segment), "rb") as fh:
                if segment == since.segment:
                    fh.seek(since.offset)
                offset = fh.tell()
                for line in fh:
                    offset += len(line)
                    if not line.endswith(b"\n"):
                        break  # torn tail: never acknowledged
                    yield parse_event(line), Position(segment, offset)

    def raw_records(self) -> Iterator[dict[str, object]]:
        for path in self.segment_paths():
            with open(path, "rb") as fh:
                for line in fh:
                    if line.endswith(b"\n"):
                        yield orjson.loads(line)
