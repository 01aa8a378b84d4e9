"""The local event log: the embedded runtime's durable store of every accepted event.

Append-only NDJSON segments. An append returns only after the bytes are on disk, so an HL7
AA can follow it: a segment is opened O_DSYNC (a write returns once its data and the file's
new length are durable, as write + fdatasync in one system call). One writer thread writes;
appends that arrive while it writes are written together in its next write (group commit),
which keeps the ACK latency low when many senders are busy. A crash can at worst leave the
last append cut short, also between two lines of one message; the start cuts the log back to
the end of the last whole append (MESSAGE_END; an earlier version's whole lines are kept, see
_repair_tail). A write that fails (disk full, I/O error) is cut back
off the segment before the appenders hear of it: what was refused never reaches the log
later, and the next batch does not land after half a line. A line that cannot be read in the
middle of a segment (a disk fault) is copied to quarantine.ndjson and counted, never a failed
start.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from engine.dedupe import message_key_of
from engine.event_decoder import parse_event
from engine.events import EventBase, dump_event

log = logging.getLogger(__name__)

SEGMENT_BYTES = 64 * 1024 * 1024

MESSAGE_END = b" \n"
"""How every append (one message's events, or one import batch) ends: a space before its last
newline, which JSON readers ignore. A process killed inside write() leaves the file cut at any
byte, between two lines of one message too (a lab result is three events). Cut back only to
the last whole line, the message's first events were replayed and its key counted as stored:
the sender's resend, never acknowledged, was answered "duplicate" and the result was lost."""

BATCH_END = b"  \n"
"""How an import batch's append ends: two spaces, so it still ends with MESSAGE_END (the cut-back
and every reader see an append's end as before), and replay tells it from a message. Only an
import batch's append rebuilds an import key (engine/dedupe.py batch_key) on replay: those are
kept whole, and a key for every live message replayed would grow without end."""

BATCH_LINE_END = b"\t\n"
"""How every other line of an import batch's append ends (a tab, which JSON readers ignore):
an import killed inside its write leaves whole lines of several messages, as an earlier
version's unmarked lines look; the tab tells them apart, so the start cuts the batch back (it
was never reported stored) and importing again stores it once, under its key."""

FORMAT_FILE = "format"
"""In an event log folder whose appends end with MESSAGE_END: from which segment and offset
(`{"marked_from": [segment, offset]}`; before it, lines an earlier version wrote, or lines a
restored backup held when its mark could not be trusted)."""


@dataclass(frozen=True, order=True)
class Position:
    """A place in the log: segment number and byte offset within it."""

    segment: int
    offset: int

    def to_list(self) -> list[int]:
        return [self.segment, self.offset]


START = Position(0, 0)


OnCommit = Callable[[list[EventBase], Position], None]
AppendThen = Callable[[asyncio.Future[Position]], None]
"""What an appender has called once its append is settled (engine.bus.Then, one level down)."""
Batch = list[tuple[list[EventBase], bytes, asyncio.Future[Position], AppendThen | None]]
"""Appends written together: each one's events, their bytes, the future its appender awaits
and what to call as soon as that future is done."""


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
        # appends waiting for the writer thread, and what wakes it (see _run_writer)
        self._pending: Batch = []
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._writer: threading.Thread | None = None
        self._closed = False  # close() was called: appends are refused
        self.appended_events = 0
        self.commits = 0
        self._sealing: list[threading.Thread] = []
        segments = self.segments()
        self._segment = segments[-1] if segments else 0
        self._unmarked = False  # FORMAT_FILE is still to be written (_mark_folder)
        self._repair_tail()
        self.corrupt_lines = 0  # read back but unparseable (quarantined)
        self.write_errors = 0
        self._torn: int | None = None  # a size a failed write must still be cut back to
        self._fd = self._open(self._segment)
        self._size = os.fstat(self._fd).st_size
        self._position = Position(self._segment, self._size)

    # -- files ---------------------------------------------------------------------------
    def _path(self, segment: int) -> Path:
        return self.directory / f"events-{segment:08d}.ndjson"

    def segments(self) -> list[int]:
        return sorted(int(p.stem.split("-")[1]) for p in self.directory.glob("events-*.ndjson"))

    def segment_paths(self) -> list[Path]:
        return [self._path(s) for s in self.segments()]

    def _repair_tail(self) -> None:
        """Cut what a crash left of an append not written whole (never acknowledged): back to
        the end of the last whole message. What an earlier version wrote (plain newlines) stays
        whole line by line, as it did then: from before the folder was marked (FORMAT_FILE holds
        where marking began), and after it if that version ran here again (lines of two or more
        messages after the last mark: a cut append is part of one message). Whole lines ending
        with BATCH_LINE_END at the end are an import batch's, cut short, whatever the mark says."""
        path = self._path(self._segment)
        marked_from = self._marked_from()
        data = path.read_bytes() if path.exists() else b""
        stale = marked_from is not None and _past(marked_from, self._segment, data)
        if stale:  # a folder restored from an older backup, the newer mark left: where its own
            # marks began is not known, so its whole lines are kept as an earlier version's are
            log.warning("event log %s: %s points past the log, marked again", self.directory, FORMAT_FILE)
            marked_from = None
        found = data.rfind(MESSAGE_END)
        whole = found + len(MESSAGE_END) if found >= 0 else 0
        if marked_from is None or marked_from[0] != self._segment:
            floor = 0 if marked_from is not None else data.rfind(b"\n") + 1
        else:
            floor = min(marked_from[1], len(data))
        whole = max(whole, floor)
        lines = data[whole : data.rfind(b"\n") + 1]
        unmarked = marked_from is None or len(_messages(lines)) >= 2
        if unmarked and lines:  # an earlier version's lines (see above): whole as they are
            whole += len(lines)
        while data.endswith(BATCH_LINE_END, 0, whole):  # an import batch's lines never end an append
            whole = data.rfind(b"\n", 0, whole - 1) + 1
        if whole < len(data):
            log.warning("event log %s: cutting an append cut short (%d bytes)", path, len(data) - whole)
            with open(path, "rb+") as fh:
                fh.truncate(whole)
                if self.fsync:
                    os.fsync(fh.fileno())
        if marked_from is None or (unmarked and lines):
            self._unmarked = not self._mark_folder(self._segment, whole)
            marked_from = (self._segment, whole)
        self.marked_from = Position(*marked_from)  # lines before it: an earlier version's

    def sizes_before(self, segment: int) -> dict[str, int]:
        """The size of each segment before `segment` (those no longer grow): a snapshot keeps
        them to know its own log again (same_sizes)."""
        return {str(s): self._path(s).stat().st_size for s in self.segments() if s < segment}

    def same_sizes(self, sizes: dict[str, int]) -> bool:
        """Whether each segment in `sizes` is here with that size: a snapshot whose earlier
        segments differ was taken over another log (an older segment restored from a backup
        under a newer one still whole)."""
        for segment, size in sizes.items():
            path = self._path(int(segment))
            if not path.exists() or path.stat().st_size != size:
                return False
        return True

    def at_line_start(self, position: Position) -> bool:
        """Whether `position` can be where a reader of the log stopped: in a segment there is,
        not past its end, after a whole line (a snapshot pointing elsewhere belongs to another
        log: a folder restored from a backup older than the snapshot)."""
        path = self._path(position.segment)
        if not path.exists() or position.offset > path.stat().st_size:
            return False
        if position.offset == 0:
            return True
        with open(path, "rb") as fh:
            fh.seek(position.offset - 1)
            return fh.read(1) == b"\n"

    def _marked_from(self) -> tuple[int, int] | None:
        try:
            at = orjson.loads((self.directory / FORMAT_FILE).read_bytes())["marked_from"]
        except FileNotFoundError:
            return None
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return (0, 0)  # written by this version, half: marks began at its first start
        return int(at[0]), int(at[1])

    def _mark_folder(self, segment: int, offset: int) -> bool:
        """FORMAT_FILE (written whole: temporary file, fsync, rename): appends end with
        MESSAGE_END from this segment and offset on. A disk too full for it is logged, not a
        failed start; the first append marks it then, or is refused (_write): without the
        mark, a kill's cut append would be kept whole as an earlier version's lines."""
        tmp = self.directory / f"{FORMAT_FILE}.tmp"
        try:
            with open(tmp, "wb") as fh:
                fh.write(orjson.dumps({"marked_from": [segment, offset]}) + b"\n")
                fh.flush()
                if self.fsync:
                    os.fsync(fh.fileno())
            os.replace(tmp, self.directory / FORMAT_FILE)
            if self.fsync:
                folder = os.open(self.directory, os.O_RDONLY)
                try:
                    os.fsync(folder)
                finally:
                    os.close(folder)
        except OSError as exc:
            log.error("event log %s: could not write %s: %s", self.directory, FORMAT_FILE, exc)
            return False
        return True

    @property
    def position(self) -> Position:
        """End of what has been written (safe to read from other threads)."""
        return self._position

    # -- writing -------------------------------------------------------------------------
    def _open(self, segment: int) -> int:
        """Unbuffered: a failed write leaves nothing in a buffer to be written later. O_DSYNC
        (with fsync on): each write is durable when it returns, without a second call."""
        return os.open(
            self._path(segment),
            os.O_WRONLY | os.O_APPEND | os.O_CREAT | (os.O_DSYNC if self.fsync else 0),
            0o600,
        )

    def _write(self, blob: bytes) -> Position:
        """Append blob whole, or not at all: on an error the segment is cut back to where it
        was (and the error raised), so a refused batch cannot surface after a later one."""
        if self._torn is not None:  # a failed write could not be cut back: try again first
            self._cut_back(self._torn)
            if self._torn is not None:
                raise OSError(errno.EIO, "event log: a failed write is still to be cut back")
        if self._size + len(blob) > self.segment_bytes and self._size > 0:
            self._sync()
            fd = self._open(self._segment + 1)  # opened first: on failure the old one stays
            old, self._fd = self._fd, fd
            os.close(old)
            self._seal_later(self._path(self._segment))
            self._segment += 1
            self._size = os.fstat(self._fd).st_size
            self._position = Position(self._segment, self._size)
        if self._unmarked:  # the start could not mark the folder: before the first append, or none
            if not self._mark_folder(self._segment, self._size):
                self.write_errors += 1
                raise OSError(errno.EIO, f"event log: could not write {FORMAT_FILE}")
            self._unmarked = False
        before = self._size
        try:
            view = memoryview(blob)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
        except OSError:
            self._cut_back(before)
            raise
        self._size = before + len(blob)
        self._position = Position(self._segment, self._size)
        return self._position

    def _cut_back(self, size: int) -> None:
        """Undo a batch that was not made durable: truncate the segment to `size`. If even
        that fails, nothing more is appended until it succeeds (O_APPEND would put the next
        batch after the half-written one)."""
        if self._torn is None:
            self.write_errors += 1
        try:
            os.ftruncate(self._fd, size)
            if self.fsync:
                os.fsync(self._fd)
        except OSError as exc:
            log.error("event log: cutting back a failed write failed: %s", exc)
            self._torn = size
            return
        self._torn = None
        self._size = size
        self._position = Position(self._segment, size)

    def _write_durable(self, blob: bytes) -> Position:
        """Write and fsync; if either fails, nothing of blob stays in the log."""
        pos = self._write(blob)
        try:
            self._sync()
        except OSError:
            self._cut_back(pos.offset - len(blob))
            raise
        return pos

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
            os.fsync(self._fd)

    def append_now(self, events: list[EventBase], batch: bool = False) -> Position:
        """Blocking durable append (CLI imports, tests); `batch`: an import batch (BATCH_END)."""
        pos = self._write_durable(_blob(events, BATCH_END if batch else MESSAGE_END))
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

    def append_nowait(
        self, events: list[EventBase], then: AppendThen | None = None
    ) -> asyncio.Future[Position]:
        """A future of the position after these events, resolved once they are durable;
        `then(future)` is called right after, in the same callback (not a turn of the loop
        later, as a done callback would be). After close() the future fails at once."""
        fut: asyncio.Future[Position] = asyncio.get_running_loop().create_future()
        blob = _blob(events)
        with self._lock:
            if self._closed:
                refused: OSError | None = OSError(errno.EBADF, "event log: closed")
            else:
                refused = None
                self._pending.append((events, blob, fut, then))
                if self._writer is None:
                    writer = threading.Thread(target=self._run_writer, name="eventlog-writer", daemon=True)
                    try:
                        writer.start()
                    except BaseException:  # no thread: the next append tries again
                        self._pending.pop()
                        raise
                    self._writer = writer
                self._wake.notify()
        if refused is not None:
            self._failed([(events, blob, fut, then)], refused)
        else:
            self.appended_events += len(events)
        return fut

    def _run_writer(self) -> None:
        """The writer thread: write whatever is pending, again and again (group commit; each
        write durable when it returns, O_DSYNC), then hand each batch to the loop. The next
        batch's write starts as soon as the last one returns, while the loop runs on_commit
        and answers the last batch's appenders: a round trip through the loop between two
        fsyncs (an executor hop and the wake-ups after it) made an ACK wait two fsyncs and the
        hops between them, and the fsync waited for any thread of the shared pool."""
        while True:
            with self._lock:
                while not self._pending and not self._closed:
                    self._wake.wait()
                if not self._pending:
                    return  # closed, nothing left
                batch, self._pending = self._pending, []
            loop = batch[0][2].get_loop()
            try:
                pos = self._write_batch(batch)
            except Exception as exc:  # told to the appenders; the thread goes on with the next
                if not isinstance(exc, OSError):
                    log.exception("event log writer failed")
                self._deliver(loop, self._failed, batch, exc)
                continue
            self._deliver(loop, self._committed, batch, pos)

    def _write_batch(self, batch: Batch) -> Position:
        try:
            return self._write(b"".join(blob for _, blob, _, _ in batch))
        except OSError as exc:
            log.error("event log write failed: %s", exc)
            raise

    @staticmethod
    def _deliver(loop: asyncio.AbstractEventLoop, *call: Any) -> None:
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits for these appends
            loop.call_soon_threadsafe(*call)

    def _committed(self, batch: Batch, pos: Position) -> None:
        """On the loop, in log order: on_commit, then each appender hears its events are stored."""
        self.commits += 1
        if self.on_commit is not None:
            committed = [e for events, _, _, _ in batch for e in events]
            try:
                self.on_commit(committed, pos)
            except Exception:  # the events are stored; replay will see them
                log.exception("processing committed events failed")
        for _, _, fut, then in batch:
            if not fut.done():
                fut.set_result(pos)
            _then(then, fut)  # also when its waiter cancelled it: the events are stored all the same

    @staticmethod
    def _failed(batch: Batch, exc: Exception) -> None:
        for _, _, fut, then in batch:
            if not fut.done():
                fut.set_exception(exc)
            _then(then, fut)

    async def close(self) -> None:
        """Refuse new appends, write what is pending, hand it to the loop, close the segment."""
        with self._lock:
            self._closed = True
            self._wake.notify()
        writer = self._writer
        if writer is not None:
            while writer.is_alive():
                await asyncio.sleep(0.005)
            self._writer = None
            await asyncio.sleep(0)  # the writer's last call_soon_threadsafe calls run first
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    # -- reading -------------------------------------------------------------------------
    def replay(self, since: Position = START) -> Iterator[tuple[EventBase | None, Position, bytes]]:
        """Every event after `since`, in log order, with the position after it and how its line
        ends (ENDINGS): an append's last line MESSAGE_END (a message, or an import batch an
        earlier version wrote) or BATCH_END (an import batch), the others BATCH_LINE_END (in an
        import batch) or a plain newline. An unreadable line (quarantined) comes as None in
        place of its event, so a reader still sees where appends end."""
        for segment in self.segments():
            if segment < since.segment:
                continue
            with open(self._path(segment), "rb") as fh:
                if segment == since.segment:
                    fh.seek(since.offset)
                offset = fh.tell()
                for line in fh:
                    start = offset
                    offset += len(line)
                    if not line.endswith(b"\n"):
                        break  # torn tail: never acknowledged
                    event: EventBase | None
                    try:
                        event = parse_event(line)
                    except ValueError:  # orjson and pydantic errors both are
                        self._quarantine(line, Position(segment, start))
                        event = None
                    yield event, Position(segment, offset), _ending(line)

    def _quarantine(self, line: bytes, where: Position) -> None:
        """Keep an unreadable line aside (with where it was) and go on: one bad sector must
        not stop the start. Counted on /metrics (each start that reads past it counts it);
        the line stays in its segment and is copied to quarantine.ndjson once."""
        self.corrupt_lines += 1
        log.error(
            "event log: unreadable line at segment %d offset %d quarantined", where.segment, where.offset
        )
        path = self.directory / "quarantine.ndjson"
        key = orjson.dumps({"segment": where.segment, "offset": where.offset})[:-1] + b","
        try:
            if path.exists() and key in path.read_bytes():
                return
            record = orjson.dumps(
                {"segment": where.segment, "offset": where.offset, "line": line.decode("latin-1")}
            )
            with open(path, "ab") as fh:
                fh.write(record + b"\n")
        except OSError as exc:  # a full disk: the line is still in its segment
            log.error("event log: could not copy an unreadable line to %s: %s", path, exc)

    def raw_records(self) -> Iterator[dict[str, object]]:
        for path in self.segment_paths():
            with open(path, "rb") as fh:
                for line in fh:
                    if line.endswith(b"\n"):
                        try:
                            yield orjson.loads(line)
                        except orjson.JSONDecodeError:
                            continue  # quarantined by replay


def _past(mark: tuple[int, int], segment: int, data: bytes) -> bool:
    """Whether a format mark points where the log (its last segment `segment`, holding
    `data`) has no line start: a later segment, past the end, inside a line."""
    if mark[0] != segment:
        return mark[0] > segment
    return mark[1] > len(data) or (mark[1] > 0 and data[mark[1] - 1 : mark[1]] != b"\n")


def _then(then: AppendThen | None, fut: asyncio.Future[Position]) -> None:
    """One appender's `then`, kept from the others' (as the loop keeps done callbacks apart)."""
    if then is None:
        return
    try:
        then(fut)
    except Exception:
        log.exception("an event log append's callback failed")


ENDINGS = (BATCH_END, MESSAGE_END, BATCH_LINE_END, b"\n")
"""How a line can end, in the order to test them (BATCH_END ends with MESSAGE_END)."""


def _ending(line: bytes) -> bytes:
    for ending in ENDINGS:
        if line.endswith(ending):
            return ending
    raise ValueError("a line without its newline")


def _blob(events: list[EventBase], end: bytes = MESSAGE_END) -> bytes:
    """One append as written: a line per event, the last ending with `end` (MESSAGE_END, or
    BATCH_END for an import batch, whose other lines end with BATCH_LINE_END)."""
    if not events:
        raise ValueError("an append holds at least one event")
    return (BATCH_LINE_END if end == BATCH_END else b"\n").join([dump_event(e) for e in events]) + end


def _messages(lines: bytes) -> set[str]:
    """The messages (keys) these complete lines belong to; unreadable lines name none."""
    keys = set()
    for line in lines.splitlines():
        try:
            keys.add(message_key_of(orjson.loads(line)["source_id"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
            continue
    return keys
