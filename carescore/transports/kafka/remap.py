"""`carescore remap`: map a time range of the raw inbound topic again, with today's mapping,
and publish what that adds.

The raw records of `<prefix>.raw.<source>` received in [from, to) (offsets_for_times on their
timestamp, which is the receive time) go through the same connectors and pipeline as live
traffic (connectors/intake.py: parsing, mapping, pseudonyms), in receive order, into a sink
that publishes only **new** events: an event whose source_id the events topic already holds
(read from `lookback` before `from` to its end) is not published again.

Why only new ones: an event's source_id derives from its input (an HL7 message's sender,
control id and content; a FHIR resource's id and version time; a feed row's content), so a
remapped event has its original's id. The workers drop an id they have counted (a bounded
window, engine/dedupe.py) and the engine has no retraction of an event it counted: a
corrected event under the old id would be dropped, or, past the window, counted twice. So a
remap adds events the old mapping did not make (a segment it skipped, a trigger or a
resource it refused) and reports, but does not publish, events whose content changed.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from carescore.transports.kafka.security import client_options
from carescore.transports.kafka.sink import KafkaSink
from carescore.transports.kafka.topics import events_topic, partitions_of, raw_topic
from connectors.deadletters import DeadLetterStore
from connectors.hl7v2.receiver import decode
from connectors.intake import Intake
from connectors.pipeline import Result, digest
from engine.bus import Published, RawSource
from engine.config import KafkaSettings, Settings
from engine.events import EventBase, dump_event

log = logging.getLogger(__name__)

SHOWN = 20  # ids and rejections listed in the report


def content_of(event: dict[str, Any]) -> str:
    """What makes two events with one source_id the same: every field but when it was
    received (a remap receives it again)."""
    fields = {k: v for k, v in event.items() if k != "received_time"}
    return digest(orjson.dumps(fields, option=orjson.OPT_SORT_KEYS).decode())


@dataclass
class RemapReport:
    source: str
    start: str
    end: str
    messages: int = 0
    accepted: int = 0
    rejected: int = 0
    events: int = 0
    unchanged: int = 0
    changed: int = 0
    new: int = 0
    rejections: list[dict[str, Any]] = field(default_factory=list)
    changed_ids: list[str] = field(default_factory=list)
    new_ids: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class NewEventsSink:
    """The remap's sink: events the events topic does not hold yet go out through a
    KafkaSink (acks=all) with their original receive time; the rest are counted. It keeps no
    raw records (keeps_raw is absent), so a remap adds nothing to the raw topic."""

    def __init__(self, kafka: KafkaSettings, known: dict[str, str], report: RemapReport):
        self.out = KafkaSink(kafka)
        self.known = known
        self.report = report
        self.received: datetime | None = None  # the raw record's receive time

    async def publish(self, message_key: str, events: list[EventBase]) -> Published:
        fresh: list[EventBase] = []
        for e in events:
            self.report.events += 1
            was = self.known.get(e.source_id)
            if was is None:
                fresh.append(e.model_copy(update={"received_time": self.received}))
                self.known[e.source_id] = content_of(orjson.loads(dump_event(e)))
                self.report.new += 1
                _note(self.report.new_ids, e.source_id)
            elif was == content_of(orjson.loads(dump_event(e))):
                self.report.unchanged += 1
            else:
                self.report.changed += 1
                _note(self.report.changed_ids, e.source_id)
        if fresh:
            await self.out.publish(f"remap:{message_key}", fresh)
        return Published.accepted if fresh else Published.duplicate


def _note(shown: list[str], item: str) -> None:
    if len(shown) < SHOWN:
        shown.append(item)


async def _consumer(kafka: KafkaSettings) -> AIOKafkaConsumer:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka.bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_bytes=64 * 1024 * 1024,
        max_partition_fetch_bytes=kafka.raw.max_bytes,
        **client_options(kafka),
    )
    await consumer.start()
    return consumer


async def read_range(
    kafka: KafkaSettings, topic: str, start_ms: int, end_ms: int | None
) -> list[ConsumerRecord]:
    """The records of `topic` with a timestamp in [start_ms, end_ms) (end None: up to now),
    by partition offsets_for_times; in timestamp order across partitions."""
    tps = [TopicPartition(topic, p) for p in await partitions_of(kafka, topic)]
    if not tps:
        return []
    consumer = await _consumer(kafka)
    try:
        consumer.assign(tps)
        firsts = await consumer.offsets_for_times(dict.fromkeys(tps, start_ms))
        lasts = await consumer.end_offsets(tps)
        if end_ms is not None:
            ends = await consumer.offsets_for_times(dict.fromkeys(tps, end_ms))
            lasts = {tp: (ends[tp].offset if ends[tp] is not None else lasts[tp]) for tp in tps}
        todo: dict[TopicPartition, int] = {}
        for tp in tps:
            first = firsts[tp]
            if first is not None and first.offset < lasts[tp]:
                consumer.seek(tp, first.offset)
                todo[tp] = lasts[tp]
        out: list[ConsumerRecord] = []
        while todo:
            batch = await consumer.getmany(*todo, timeout_ms=1000)
            for tp, records in batch.items():
                for r in records:
                    end = todo.get(tp)
                    if end is not None and r.offset < end and start_ms <= r.timestamp < (end_ms or 2**62):
                        out.append(r)
            for tp in list(todo):
                if await consumer.position(tp) >= todo[tp]:
                    del todo[tp]
        out.sort(key=lambda r: (r.timestamp, r.partition, r.offset))
        return out
    finally:
        await consumer.stop()


async def known_events(kafka: KafkaSettings, since_ms: int) -> dict[str, str]:
    """source_id -> content of every event in the events topic from since_ms to its end."""
    known: dict[str, str] = {}
    for record in await read_range(kafka, events_topic(kafka), since_ms, None):
        value = orjson.loads(record.value)
        for event in value if isinstance(value, list) else [value]:
            known[event["source_id"]] = content_of(event)
    return known


async def remap(
    settings: Settings, source: RawSource, start: datetime, end: datetime, lookback: float
) -> RemapReport:
    """Map the raw records of `source` received in [start, end) again (datetimes, aware)."""
    kafka = settings.runtime.kafka
    if not kafka.raw.enabled:
        raise ValueError("runtime.kafka.raw.enabled is false: there is no raw topic to remap from")
    start_ms, end_ms = int(start.timestamp() * 1000), int(end.timestamp() * 1000)
    report = RemapReport(source, start.isoformat(), end.isoformat())
    records = await read_range(kafka, raw_topic(kafka, source), start_ms, end_ms)
    known = await known_events(kafka, start_ms - int(lookback * 1000))
    sink = NewEventsSink(kafka, known, report)
    await sink.out.start()
    began = time.monotonic()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            dead = DeadLetterStore(Path(tmp) / "remap-rejections.sqlite")  # counted, not kept
            intake = Intake(settings, sink, dead)
            for record in records:
                sink.received = _when(record.timestamp, start.tzinfo)
                result = await _map(intake, source, record)
                report.messages += 1
                if result.taken:
                    report.accepted += 1
                else:
                    report.rejected += 1
                    if len(report.rejections) < SHOWN:
                        where = {"partition": record.partition, "offset": record.offset}
                        report.rejections.append({**where, "code": result.code, "reason": result.text})
            dead.close()
    finally:
        await sink.out.close()
    counts = {k: v for k, v in report.as_dict().items() if isinstance(v, int | str)}
    log.info("remap done", extra={**counts, "seconds": round(time.monotonic() - began, 1)})
    return report


def _when(ms: int, zone: tzinfo | None) -> datetime:
    return datetime.fromtimestamp(ms / 1000, zone)


def _headers(record: ConsumerRecord) -> dict[str, str]:
    return {k: v.decode("utf-8", "surrogateescape") for k, v in record.headers or ()}


async def _map(intake: Intake, source: RawSource, record: ConsumerRecord) -> Result:
    """One raw record through its connector, as if it were received now."""
    body: bytes = record.value
    detail = _headers(record).get("detail", "")
    if source == "hl7":
        outcome = intake.hl7.receive(decode(body), None, body)
        return outcome if isinstance(outcome, Result) else await outcome
    if source == "fhir":
        return await intake.fhir.post_counted(body, detail or None)
    meta = json.loads(detail)
    return await intake.feeds.ingest(meta["feed"], body, meta["format"], meta.get("file"))
