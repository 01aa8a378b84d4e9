"""What a worker takes from a record of the events topic: its events, without those no
gateway would have taken.

The topic is written by carescore's gateways, but a topic is no guarantee (another producer
with write access, a gateway of another version, a partly restored topic). One bad record
must not stop its partition: raised in the agent, it killed the worker, and again after every
restart, the partition stuck behind it for good. The embedded runtime counts an unreadable
line of its log and reads on; a worker does the same with a record. An event time further
from its arrival than the connectors allow (engine.max_future ahead, engine.max_age behind:
engine/timebounds.py) is refused the same way; one of the year 1 made every tick raise
("year 0 is out of range"), and its partition's windows never closed again.
"""

from __future__ import annotations

import logging

import orjson
from pydantic import ValidationError

from carescore.metrics import WORKER_REFUSED, WORKER_UNREADABLE
from engine.events import EventBase, parse_events
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
    future, age = bounds.max_future, bounds.max_age
    for event in batch:
        ahead = event.ts - event.received_time.timestamp()
        if ahead > future or -ahead > age:
            return _within(batch, bounds, partition, offset)
    return batch


def _within(batch: list[EventBase], bounds: TimeBounds, partition: int, offset: int) -> list[EventBase]:
    kept = []
    for event in batch:
        problem = bounds.problem(event.event_time, event.received_time)
        if problem is None:
            kept.append(event)
            continue
        WORKER_REFUSED.inc()
        log.error("events partition %d offset %d: an event is refused: %s", partition, offset, problem)
    return kept


def _why(exc: ValueError | TypeError) -> str:
    """What was wrong, without the input (pydantic's message quotes it)."""
    if isinstance(exc, ValidationError):
        first = exc.errors(include_input=False, include_url=False, include_context=False)[0]
        where = ".".join(str(part) for part in first["loc"])
        return f"{exc.error_count()} error(s), first at {where or 'the record'}: {first['msg']}"
    if isinstance(exc, orjson.JSONDecodeError):
        return f"not JSON at byte {exc.pos}"
    return "no value" if isinstance(exc, TypeError) else type(exc).__name__
