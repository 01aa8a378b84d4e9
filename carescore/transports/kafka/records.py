"""What a worker takes from a record of the events topic: its events, without those no
gateway would have taken.

The topic is written by carescore's gateways, but a topic is no guarantee (another producer
with write access, a gateway of another version, a partly restored topic). One bad record
must not stop its partition: raised in the agent, it killed the worker, and again after every
restart, the partition stuck behind it for good. The embedded runtime counts an unreadable
line of its log and reads on; a worker does the same with a record. An event time further
from its arrival than the connectors allow (engine.max_future ahead, engine.max_age behind:
engine/timebounds.py) is refused the same way, and so is an arrival (the gateway's stamp)
before 1970 or ahead of this worker's clock: one event of the year 1 made every tick raise
("year 0 is out of range"), and its partition's windows never closed again.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta

import orjson
from pydantic import ValidationError

from carescore.metrics import WORKER_REFUSED, WORKER_UNREADABLE
from engine.event_decoder import parse_events
from engine.events import EventBase
from engine.timebounds import TimeBounds

log = logging.getLogger(__name__)


def read_record(value: bytes, bounds: TimeBounds, partition: int, offset: int) -> list[EventBase]:
    """The record's events within the time bounds; [] for a record that is not JSON events
    (counted in carescore_worker_unreadable_records, logged by partition and offset only: the
    content may name patients)."""
    try:
        batch = parse_events(value)
    except (ValueError, TypeError) as exc:  # orjson's and pydantic's are ValueErrors; None: a tombstone
        WORKER_UNREADABLE.inc()
        log.error(
            "events partition %d offset %d: a record that is not JSON events is skipped (%s)",
            partition,
            offset,
            _why(exc),
        )
        return []
    if not batch:
        return batch
    # datetimes compared in the events' own tzinfo (the standard library's UTC from msgspec,
    # pydantic's TzInfo where pydantic read the record): the same object, so no utcoffset()
    # call, which through pydantic's TzInfo costs about a microsecond an event
    zone = batch[0].received_time.tzinfo
    earliest, latest = (
        datetime.fromtimestamp(0, zone),
        datetime.fromtimestamp(time.time() + bounds.max_future, zone),
    )
    future, age = timedelta(seconds=bounds.max_future), timedelta(seconds=bounds.max_age)
    for event in batch:
        arrival = event.received_time
        ahead = event.event_time - arrival
        if ahead > future or -ahead > age or not earliest <= arrival <= latest:
            return _within(batch, bounds, partition, offset)
    return batch


def _within(batch: list[EventBase], bounds: TimeBounds, partition: int, offset: int) -> list[EventBase]:
    """The events within the bounds; each other one counted and logged by its type only (its
    times are the record's content)."""
    kept = []
    latest = time.time() + bounds.max_future
    for event in batch:
        arrival = event.received_time.timestamp()
        if bounds.problem(event.event_time, event.received_time) is None and 0 <= arrival <= latest:
            kept.append(event)
            continue
        WORKER_REFUSED.inc()
        log.error(
            "events partition %d offset %d: a %s event is refused: its time is further from its arrival "
            "than engine.max_future / engine.max_age allow, or its arrival is not between 1970 and now",
            partition,
            offset,
            event.type,
        )
    return kept


def _why(exc: ValueError | TypeError) -> str:
    """What was wrong, without the input: pydantic's messages and locations can quote it (a
    tag's value, an unknown key's name), so only its error types."""
    if isinstance(exc, ValidationError):
        kinds = sorted({error["type"] for error in exc.errors(include_input=False, include_url=False)})
        return f"{exc.error_count()} error(s) of type {', '.join(kinds)}"
    if isinstance(exc, orjson.JSONDecodeError):
        return f"not JSON at byte {exc.pos}"
    return "no value" if isinstance(exc, TypeError) else type(exc).__name__
