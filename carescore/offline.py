"""The connectors without a server: backfill imports and dead-letter replay, straight into
the data folder (carescore itself must not be running on it: the folder is locked).

Everything goes through the same connector code and the same pipeline
(connectors/pipeline.py) as live traffic, so an import validates, maps, de-duplicates and
dead-letters exactly as MLLP, POST /fhir and the feed upload do.
Backfilled history is exact in period reports (/api/v1/reports); rolling windows that had
already closed count those events as late rather than reopening.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import orjson

from carescore.transports.embedded import REPLAY_ADVANCE_EVERY, EmbeddedRuntime
from connectors.feeds.ingest import FeedReport
from connectors.feeds.reader import FeedFileError, detect
from connectors.fhir.ingest import MAPPED_TYPES
from connectors.fhir.outcome import problems
from connectors.hl7v2.receiver import decode
from connectors.intake import Intake
from connectors.pipeline import Pipeline
from connectors.replay import Replayed, Replayer
from engine.bus import Published
from engine.config import Settings
from engine.events import EventBase
from engine.privacy import pseudonyms_from
from engine.progress import Progress

IN_FLIGHT = 512  # inputs mapped and waiting for their group commit at once
ERRORS_LISTED = 20


@dataclass
class ImportSummary:
    what: str
    counts: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    events: int = 0
    seconds: float = 0.0

    def reject(self, where: str, reason: str) -> None:
        self.counts["rejected"] += 1
        if len(self.errors) < ERRORS_LISTED:
            self.errors.append(f"{where}: {reason}")

    def render(self) -> str:
        parts = ", ".join(f"{n:,} {k}" for k, n in sorted(self.counts.items()) if n)
        lines = [f"{self.what}: {parts}; {self.events:,} events stored in {self.seconds:.1f} s"]
        if self.counts["rejected"]:
            lines.append("rejected (kept as dead letters; `carescore deadletter replay` after a fix):")
            lines += [f"  {e}" for e in self.errors]
            more = self.counts["rejected"] - len(self.errors)
            if more > 0:
                lines.append(f"  ... and {more:,} more (GET /api/v1/dead-letters)")
        return "\n".join(lines)


Item = tuple[str, bytes]  # (where: file:line, payload)
Handler = Callable[[str, bytes], Awaitable[tuple[str, int, str | None]]]  # -> outcome, events, reason


async def _drive(items: Iterable[Item], handle: Handler, summary: ImportSummary, progress: Progress) -> None:
    """Up to IN_FLIGHT inputs at once: mapping stays in order, storage is group-committed."""
    pending: set[asyncio.Task[None]] = set()

    async def one(where: str, payload: bytes) -> None:
        outcome, events, reason = await handle(where, payload)
        summary.counts[outcome] += 1 if outcome != "rejected" else 0
        summary.events += events
        if outcome == "rejected":
            summary.reject(where, reason or "rejected")
        progress.advance(events=events, rejected=int(outcome == "rejected"))

    for where, payload in items:
        pending.add(asyncio.ensure_future(one(where, payload)))
        if len(pending) >= IN_FLIGHT:
            _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
    if pending:
        await asyncio.gather(*pending)


class Offline:
    """A runtime and its connectors over the data folder, for one command."""

    def __init__(self, settings: Settings, out: TextIO | None = None):
        self.settings = settings
        self.runtime = EmbeddedRuntime(settings)
        # a backfill closes windows as it goes, as live streaming does: what `run` finds is
        # the state of now (open windows) and the history of then, not years of open panes
        self.runtime.close_every = REPLAY_ADVANCE_EVERY
        self.intake = Intake(settings, self.runtime, self.runtime.dead_letters)
        self.out = out

    async def close(self) -> str | None:
        """Close the folder; what the history could not store, if anything (unstored()).
        No last closing at the wall clock: the windows since the last 2,000th event stay open
        in the snapshot (`run` closes them at its first tick), so the import closed windows
        exactly where a start replaying its log would (an import whose history lacks windows
        writes no snapshot: the next start replays it)."""
        await self.runtime.close()
        return unstored(self.runtime)

    # -- FHIR bulk NDJSON -------------------------------------------------------------------
    async def import_fhir(self, paths: list[Path]) -> ImportSummary:
        files = _expand(paths, (".ndjson", ".jsonl", ".json"))
        summary = ImportSummary("FHIR import")
        progress = Progress("FHIR", total=sum(_count_lines(f) for f in files), stream=self.out)

        async def handle(where: str, payload: bytes) -> tuple[str, int, str | None]:
            kind = _resource_type(payload)
            if kind is not None and kind not in MAPPED_TYPES:
                return "skipped (no KPI data)", 0, None
            posted = await self.intake.fhir.post_counted(payload)
            if not posted.taken:
                return "rejected", 0, f"{posted.code} {problems(posted.answer)}"
            if not posted.events:
                return "accepted (no KPI events)", 0, None
            return ("accepted" if posted.new else "already stored"), posted.new, None

        await _drive(_ndjson_items(files), handle, summary, progress)
        summary.seconds = progress.close()
        return summary

    # -- HL7 v2 files -----------------------------------------------------------------------
    async def import_hl7(self, paths: list[Path]) -> ImportSummary:
        files = _expand(paths, (".hl7", ".txt", ".er7", ".msg", ".mllp", ".dat"))
        per_file = [_hl7_messages(f) for f in files]
        messages = [m for found in per_file for m in found]
        summary = ImportSummary("HL7 replay")
        summary.counts["empty files"] = sum(1 for found in per_file if not found)
        progress = Progress("HL7", total=len(messages), stream=self.out)

        async def handle(where: str, payload: bytes) -> tuple[str, int, str | None]:
            outcome = await self.intake.hl7.handle(decode(payload))
            if not outcome.taken:
                return "rejected", 0, f"{outcome.code}: {outcome.text}"
            if outcome.duplicate:
                return "already stored", 0, None
            return "accepted", outcome.events, None

        await _drive(messages, handle, summary, progress)
        summary.seconds = progress.close()
        return summary

    # -- feeds ------------------------------------------------------------------------------
    async def import_feed(self, feed: str, paths: list[Path]) -> ImportSummary:
        summary = ImportSummary(f"{feed} feed import")
        progress = Progress(feed, total=len(paths), stream=self.out)
        for path in paths:
            body = path.read_bytes()
            try:
                taken = await self.intake.feeds.ingest(feed, body, detect(None, path.name, body), path.name)
            except FeedFileError as exc:
                summary.reject(str(path), str(exc))
                progress.advance(rejected=1)
                continue
            report: FeedReport = taken.answer
            summary.counts["rows accepted"] += report.accepted
            summary.counts["rows already stored"] += report.duplicates
            summary.events += report.events
            for problem in report.errors:
                summary.reject(f"{path}:{problem.line}", problem.describe())
            summary.counts["rejected"] += report.rejected - len(report.errors)
            progress.advance(events=report.events, rejected=report.rejected)
        summary.seconds = progress.close()
        return summary

    # -- dead letters -----------------------------------------------------------------------
    async def replay(self, ids: list[int], source: str | None, include_replayed: bool) -> list[Replayed]:
        store = self.runtime.dead_letters
        letters = store.select(ids, source, include_replayed)
        return await Replayer(self.settings, self.runtime, store).replay(letters)


def unstored(runtime: EmbeddedRuntime) -> str | None:
    """After a stop: why the history lacks windows the import closed, or None. The stop then
    wrote no snapshot, so the next start replays from the last one and closes them again."""
    history = runtime.history
    if history.settled(history.mark()):
        return None
    parts = []
    if history.held:
        parts.append(f"could not store {history.held:,} closed windows")
    if history.missed_closings:
        parts.append(f"lacks what {history.missed_closings:,} closings that raised had closed")
    return (
        f"the history {' and '.join(parts) or 'is not complete'} ({history.last_error}); the events "
        "are stored, no snapshot was written past them, and the next start replays from the last "
        "snapshot and closes those windows again (after a closing that raised: once the bug is fixed)"
    )


# -- MIMIC-IV tabular import ----------------------------------------------------------------
MIMIC_BATCH = 5000
REFUSALS_SHOWN = 20


def import_mimic(settings: Settings, folder: Path) -> str | None:
    """`carescore import mimic`: the MIMIC-IV tables as events (connectors/feeds/mimic.py),
    stored through the pipeline a batch at a time without an event loop (one commit each;
    a batch imported again is a duplicate). Windows close as they go, as in the other
    imports. An event time outside engine.max_future / max_age is refused and counted, not
    kept as a dead letter: the tables are the record, and no connector could replay it.
    Returns what the history could not store (unstored()), if anything.

    The bounds are held against the start of the import's UTC day, the day the patients are
    moved to end before, not against its time of day: run again on any day with the same
    bounds, the import refuses the same rows (a row and the limit move by the same days), so
    its batches have the same keys and none is
    stored twice (against the clock, a row near the max_age limit refused in the evening and
    kept in the morning moved its batch's first kept event, and the batch's key with it)."""
    from connectors.feeds.mimic import mimic_events  # polars: only for this command

    received = datetime.now(UTC)
    day = datetime(received.year, received.month, received.day, tzinfo=UTC)
    runtime = EmbeddedRuntime(settings)
    runtime.close_every = REPLAY_ADVANCE_EVERY
    pipeline = Pipeline(runtime, runtime.dead_letters, pseudonyms_from(settings.pseudonym_key_file))
    bounds = settings.engine.bounds()
    started = time.monotonic()
    counts = Counter[str]()
    reasons: list[str] = []

    def flush(rows: list[EventBase]) -> None:
        # the batches are every MIMIC_BATCH events, refused or not, so an import run again with
        # the same bounds makes the same appends (keyed by their first and last event) and
        # finds them all already there
        kept = []
        for event in rows:
            problem = bounds.problem(event.event_time, day)
            if problem is None:
                kept.append(event)
            elif len(reasons) < REFUSALS_SHOWN:
                reasons.append(f"{event.source_id}: {problem}")
        counts["refused"] += len(rows) - len(kept)
        if not kept:
            return
        if pipeline.store_now(kept) is Published.duplicate:
            counts["duplicates"] += len(kept)
        else:
            counts["stored"] += len(kept)

    try:
        batch: list[EventBase] = []
        for event in mimic_events(folder, received):
            batch.append(event)
            if len(batch) == MIMIC_BATCH:
                flush(batch)
                batch = []
                _mimic_progress(counts, started)
        if batch:
            flush(batch)
        for reason in reasons:
            print(f"refused {reason}", file=sys.stderr)
        _mimic_progress(counts, started, final=True)
    except BaseException:
        runtime.snapshot_at_stop = False  # see EmbeddedRuntime.snapshot_at_stop
        with contextlib.suppress(Exception):  # the error that stopped the import is the one raised
            asyncio.run(runtime.close())
            problem = unstored(runtime)
            if problem is not None:
                print(f"error: {problem}", file=sys.stderr)
        raise
    asyncio.run(runtime.close())
    return unstored(runtime)


def _mimic_progress(counts: Counter[str], started: float, final: bool = False) -> None:
    stored, again = counts["stored"], counts["duplicates"]
    elapsed = max(time.monotonic() - started, 1e-9)
    line = f"{stored:,} events stored, {again:,} already there, {stored / elapsed:,.0f} events/s"
    if counts["refused"]:
        line += f"; {counts['refused']:,} refused for their time (engine.max_future / max_age)"
    print(("done: " if final else "") + line, file=sys.stderr if not final else sys.stdout, flush=True)


def _expand(paths: list[Path], suffixes: tuple[str, ...]) -> list[Path]:
    """Files as given, and the matching files under folders given (recursively, sorted)."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
            if not found:
                raise FileNotFoundError(f"{path}: no {', '.join(suffixes)} files in this folder")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
    return files


def _count_lines(path: Path) -> int:
    with path.open("rb") as f:
        return sum(1 for line in f if line.strip())


def _ndjson_items(files: list[Path]) -> Iterator[Item]:
    for path in files:
        with path.open("rb") as f:
            for number, line in enumerate(f, start=1):
                if line.strip():
                    yield f"{path.name}:{number}", line


def _resource_type(payload: bytes) -> str | None:
    try:
        value = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None  # let the ingest say why
    return value.get("resourceType") if isinstance(value, dict) else None


def _hl7_messages(path: Path) -> list[Item]:
    """Messages of a file: MLLP-framed, or MSH-started messages separated by CR/LF."""
    raw = path.read_bytes()
    if b"\x0b" in raw:
        frames = [f.split(b"\x1c", 1)[0] for f in raw.split(b"\x0b")[1:]]
        return [(f"{path.name}#{i}", f) for i, f in enumerate(frames, start=1) if f.strip()]
    lines = raw.replace(b"\r\n", b"\r").replace(b"\n", b"\r").split(b"\r")
    messages: list[Item] = []
    current: list[bytes] = []
    start = 0
    for number, line in enumerate(lines, start=1):
        if line.startswith((b"FHS", b"BHS", b"BTS", b"FTS")) or not line.strip():
            continue  # batch envelopes: each message inside is taken on its own
        if line.startswith(b"MSH") and current:
            messages.append((f"{path.name}:{start}", b"\r".join(current) + b"\r"))
            current = []
        if not current:
            start = number
        current.append(line)
    if current:
        messages.append((f"{path.name}:{start}", b"\r".join(current) + b"\r"))
    return messages
