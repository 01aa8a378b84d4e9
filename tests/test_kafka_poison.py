"""Records no gateway writes cannot stop a worker.

The events topic is written by carescore's gateways, but a topic is no guarantee: another
producer with write access, a gateway of another version, a partly restored topic. The
embedded runtime counts an unreadable line of its log and reads on, never a failed start
(engine/eventlog.py); its connectors refuse an event time more than engine.max_age old or
engine.max_future ahead of its arrival (engine/timebounds.py). A worker is held to the same:

- a record that is not JSON, and one that is JSON but not events, are counted
  (carescore_worker_unreadable_records_total) and skipped; the worker goes on with the next
  record of the partition and does not meet them again after a checkpoint;
- an event of the year 1 (valid JSON, a valid event), stamped received now or in the year 1, is
  refused by the time bounds and counted (carescore_worker_events_total{outcome="refused"}):
  taken into the engine, every tick raised "year 0 is out of range" and its partition's windows
  never closed;

and every real event around them is processed once, the closed windows equal to the embedded
engine's over the real events alone (the reference, computed by tests/kafka.py's reference
engine, not by the worker's code).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from carescore.transports.kafka.topics import events_topic
from engine.events import dump_event, dump_events
from tests.kafka import Worker, closed_samples, hospital_events, kafka_settings, produce
from tests.test_kafka_runtime import assert_same, expected

pytestmark = pytest.mark.kafka


async def test_records_no_gateway_writes_are_counted_and_skipped(kafka_broker: str, tmp_path: Path) -> None:
    settings, config = await kafka_settings(kafka_broker, tmp_path)
    events = hospital_events(hours=3, facilities=("DEMO",))
    want = expected(settings, events)
    half = len(events) // 2
    ancient = events[0].model_copy(
        update={
            "event_time": datetime(1, 1, 1, tzinfo=UTC),
            "received_time": datetime.now(UTC),
            "source_id": "ancient#0",
        }
    )
    # a year-1 event stamped as received in the year 1 too: the stamp is the producer's
    stamped = ancient.model_copy(update={"received_time": ancient.event_time, "source_id": "stamped#0"})
    await produce(settings, events[:half])
    producer = AIOKafkaProducer(bootstrap_servers=settings.runtime.kafka.bootstrap, acks="all")
    await producer.start()
    try:
        not_json, not_events = b"\x00 not json", b'[{"type": "lab.order"}]'
        records = (not_json, not_events, dump_events([ancient]), dump_event(ancient), dump_event(stamped))
        for value in records:
            await producer.send_and_wait(events_topic(settings.runtime.kafka), value, key=b"DEMO")
    finally:
        await producer.stop()
    await produce(settings, events[half:])

    worker = Worker(config, tmp_path / "worker.log")
    try:
        got = await closed_samples(settings, set(want), timeout=180)
        processed = await worker.processed_at_least(len(events))
        unreadable = worker.metric("carescore_worker_unreadable_records_total")
        refused = worker.events("refused")
        running = worker.proc.poll() is None
    finally:
        worker.stop()
    assert running
    assert_same(want, got, (worker,))
    assert processed == len(events)
    assert (unreadable, refused) == (2, 3)
    # the worker logs as carescore does, JSON lines, at its log level (INFO), whatever Faust's
    # own start does to the root logger (it had replaced the handler: text, WARNING only)
    text = (tmp_path / "worker.log").read_text()
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    ours = [e for e in lines if e["logger"].startswith("carescore.transports.kafka")]
    taken = [e for e in ours if e["level"] == "info" and " taken: resumes after offset " in e["message"]]
    assert taken, text[-2000:]
    skipped = [e for e in ours if e["level"] == "error" and "skipped" in e["message"]]
    refusals = [e for e in ours if e["level"] == "error" and "refused" in e["message"]]
    assert (len(skipped), len(refusals)) == (2, 3), text[-2000:]
    assert "not json" not in text  # what a record held is never logged
    assert "\x1b[?25" not in text  # no terminal spinner codes in a service's log
