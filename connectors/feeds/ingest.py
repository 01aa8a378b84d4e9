"""One feed file in, a row-by-row account out: good rows stored, bad rows reported with
their line and kept as dead letters (replayable after a fix), nothing silently dropped.
Storing, dead letters and counting go through the one pipeline (connectors/pipeline.py)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from itertools import islice
from typing import Any

from pydantic import ValidationError

from connectors.deadletters import DeadLetterStore
from connectors.feeds.mapping import FeedMapper, RowError
from connectors.feeds.reader import FeedFileError, Format, RawRow, read_rows
from connectors.feeds.schemas import FEEDS, FeedRow
from connectors.metrics import FEED_ROWS
from connectors.pipeline import Pipeline, Result, counted, digest
from engine.bus import EventSink, Published, RawInput
from engine.events import EventBase
from engine.places import PlaceIndex
from engine.privacy import Pseudonyms
from engine.timebounds import DEFAULT_BOUNDS, TimeBounds

log = logging.getLogger(__name__)

CONTENT_TYPES = {"csv": "text/csv", "json": "application/json", "ndjson": "application/x-ndjson"}
ERRORS_SHOWN = 1000
BATCH_ROWS = 500  # rows prepared on a worker thread, then published on the loop, at a time


class UnknownFeed(KeyError):
    def __init__(self, feed: str):
        super().__init__(feed)
        self.feed = feed

    def __str__(self) -> str:
        return f"unknown feed {self.feed!r}; the feeds are {', '.join(FEEDS)}"


@dataclass
class RowProblem:
    line: int
    field: str | None
    message: str
    dead_letter: int | None = None

    def describe(self) -> str:
        return f"{self.field + ': ' if self.field else ''}{self.message}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "line": self.line,
            "field": self.field,
            "message": self.message,
            "dead_letter": self.dead_letter,
        }


@dataclass
class FeedReport:
    """A feed file's account, row by row: what the uploader reads (the answer of its Result)."""

    feed: str
    file: str | None
    rows: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    events: int = 0
    errors: list[RowProblem] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        shown = self.errors[:ERRORS_SHOWN]
        return {
            "feed": self.feed,
            "file": self.file,
            "rows": self.rows,
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "events": self.events,
            "errors": [e.as_dict() for e in shown],
            "errors_not_shown": len(self.errors) - len(shown),
        }

    def result(self) -> Result:
        """The file as the pipeline's Result: 422 when no row in it was usable; taken when no
        row was rejected; duplicate when rows of it had been stored before; events and new
        are the events stored now."""
        usable = not self.rejected or bool(self.accepted or self.duplicates)
        return Result(
            "200" if usable else "422",
            not self.rejected,
            self.errors[0].describe() if self.errors else "",
            self.events,
            self.events,
            bool(self.duplicates),
            answer=self,
        )


class FeedIngest:
    def __init__(
        self,
        sink: EventSink,
        dead_letters: DeadLetterStore,
        index: PlaceIndex,
        zone: tzinfo,
        bounds: TimeBounds = DEFAULT_BOUNDS,
        pseudonyms: Pseudonyms | None = None,
    ):
        self.pipeline = Pipeline(sink, dead_letters, pseudonyms)
        self.index = index
        self.zone = zone
        self.bounds = bounds

    async def ingest(self, feed: str, body: bytes, fmt: Format, filename: str | None = None) -> Result:
        """The file's Result (its answer the FeedReport). Raises UnknownFeed, or FeedFileError
        when the file as a whole cannot be read.

        Reading, validating and mapping rows (and keeping bad ones as dead letters) run on a
        worker thread, a batch at a time: a 50 MB upload would otherwise hold the event loop,
        and with it every MLLP ACK and HTTP answer, for seconds. Publishing
        stays on the loop (the sink is not thread-safe); a batch is being stored while the
        next is prepared, and no more than two are in flight, so event-log commits stay small.
        A file with a stored row is kept as received in the raw topic (when the sink keeps raw
        records) before its account is returned; if that fails, StorageUnavailable.
        """
        received = time.time()
        model = FEEDS.get(feed)
        if model is None:
            raise UnknownFeed(feed)
        known = set(model.model_fields)
        required = {n for n, f in model.model_fields.items() if f.is_required()}
        result = FeedReport(feed, filename)
        mapper = FeedMapper(self.index, self.zone, datetime.now(UTC), self.bounds)
        rows = await asyncio.to_thread(read_rows, body, fmt, known, required)  # whole-file errors
        in_flight: list[tuple[RawRow, list[asyncio.Future[Published]]]] = []
        while batch := await asyncio.to_thread(self._prepare, rows, model, mapper, result, fmt):
            published = []
            for raw, outcome in batch:
                result.rows += 1
                if isinstance(outcome, RowProblem):
                    result.rejected += 1
                    result.errors.append(outcome)
                else:
                    published.append((raw, self.pipeline.publish_each(outcome)))
            await self._settle(result, in_flight, fmt)
            in_flight = published
        await self._settle(result, in_flight, fmt)
        if (result.accepted or result.duplicates) and self.pipeline.keeps_raw:
            detail = json.dumps({"feed": feed, "format": fmt, "file": filename})
            key = f"feed:{feed}:{digest(body.decode('utf-8', 'surrogateescape'))}"
            whole = RawInput("feeds", body, CONTENT_TYPES[fmt], f"feed:{feed}", received, key, detail=detail)
            await self.pipeline.record(whole)  # StorageUnavailable: the uploader is told to send again
        counted(FEED_ROWS, feed, "accepted").inc(result.accepted)
        counted(FEED_ROWS, feed, "duplicate").inc(result.duplicates)
        counted(FEED_ROWS, feed, "rejected").inc(result.rejected)
        log.info(
            "feed file taken",
            extra={k: v for k, v in result.as_dict().items() if k not in ("errors", "errors_not_shown")},
        )
        return result.result()

    def _prepare(
        self,
        rows: Iterator[RawRow],
        model: type[FeedRow],
        mapper: FeedMapper,
        result: FeedReport,
        fmt: Format,
    ) -> list[tuple[RawRow, list[EventBase] | RowProblem]]:
        """The next batch of rows, each with its events or its problem (on a worker thread:
        reads `result` for names only; the loop does the counting)."""
        batch: list[tuple[RawRow, list[EventBase] | RowProblem]] = []
        for raw in islice(rows, BATCH_ROWS):
            try:
                batch.append((raw, self._events(model, mapper, raw)))
            except RowError as exc:
                batch.append((raw, self._keep(result, raw, exc.field, exc.message, fmt)))
        return batch

    async def _settle(
        self, result: FeedReport, in_flight: list[tuple[RawRow, list[asyncio.Future[Published]]]], fmt: Format
    ) -> None:
        """Wait until a batch's rows are stored and count them."""
        for raw, futures in in_flight:
            try:
                outcomes = await asyncio.gather(*futures)
            except Exception as exc:  # storage failed: the row is not stored, say so
                self._reject(result, raw, None, f"could not be stored now ({exc}); send it again", fmt)
                continue
            new = sum(1 for o in outcomes if o is Published.accepted)
            result.events += new
            if new:
                result.accepted += 1
            else:
                result.duplicates += 1

    def _events(self, model: type[FeedRow], mapper: FeedMapper, raw: RawRow) -> list[EventBase]:
        if raw.values is None:
            raise RowError(None, raw.error or "unreadable row")
        try:
            row = model.model_validate(raw.values)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or None
            more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
            message = first["msg"].removeprefix("Value error, ") + more
            raise RowError(where, message) from None
        return mapper.events(row)

    def _reject(self, result: FeedReport, raw: RawRow, where: str | None, message: str, fmt: Format) -> None:
        result.rejected += 1
        result.errors.append(self._keep(result, raw, where, message, fmt))

    def _keep(
        self, result: FeedReport, raw: RawRow, where: str | None, message: str, fmt: Format
    ) -> RowProblem:
        """Keep a rejected row as a dead letter (the store is thread-safe); its problem."""
        reason = f"line {raw.line}: {where + ': ' if where else ''}{message}"
        body, kind = raw.raw, fmt
        if fmt != "csv":  # one JSON object per letter, replayable as NDJSON on its own
            kind = "ndjson"
            try:
                body = json.dumps(raw.values) if raw.values is not None else raw.raw
            except (RecursionError, ValueError):  # nested near the limit: the row's own text
                body = raw.raw
            body = body.replace("\r", " ").replace("\n", " ")  # JSON needs no line breaks
        letter = self.pipeline.keep(
            f"feed:{result.feed}",
            reason,
            body,
            what="feed row",
            detail=result.file,
            content_type=CONTENT_TYPES[kind],
        )
        return RowProblem(raw.line, where, message, letter)


__all__ = ["FeedFileError", "FeedIngest", "FeedReport", "UnknownFeed"]
