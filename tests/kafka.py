"""Helpers for the tests that run against the real Kafka broker (deploy/kafka/kafka.sh):
workers as real `carescore worker` processes, events produced with aiokafka, samples read
back from the samples topic, and the embedded engine as the reference."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from carescore.transports.kafka.topics import ensure_topics, events_topic, samples_topic
from connectors.hl7v2.mapping import MapContext, map_message
from connectors.hl7v2.parser import parse
from demo.hospital import DemoHospital
from engine.config import REPO_ROOT, Settings
from engine.core import Engine
from engine.definitions import load_catalogue
from engine.events import EventBase, dump_event, dump_events
from engine.places import Places
from engine.samples import Sample, load_samples
from tests.conftest import DEMO_PLACES

KAFKA_SH = REPO_ROOT / "deploy" / "kafka" / "kafka.sh"
SampleKey = tuple[str, tuple[str, str | None, str | None], str, str]


async def kafka_settings(
    bootstrap: str,
    tmp_path: Path,
    engine: dict[str, Any] | None = None,
    top: dict[str, Any] | None = None,
    **kafka: Any,
) -> tuple[Settings, Path]:
    """Settings for one test: its own topics and consumer group on the shared broker (top:
    other top-level settings, e.g. kpi_defs or alerts)."""
    name = f"t{uuid.uuid4().hex[:10]}"
    data = {
        "data_dir": str(tmp_path / "data"),
        "places": DEMO_PLACES,
        "demo": {"enabled": False},
        "mllp": {"port": 0},
        "api": {"port": 0},
        "engine": {"tick": 0.5, **(engine or {})},
        "runtime": {
            "kind": "kafka",
            "kafka": {
                "bootstrap": bootstrap,
                "partitions": 4,
                "app_id": name,
                "topic_prefix": name,
                "session_timeout": 10,  # a killed worker's partitions move after 10 s, not 60
                **kafka,
            },
        },
        **(top or {}),
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    settings = Settings.model_validate(data)
    await ensure_topics(settings.runtime.kafka)
    return settings, path


def hospital_events(
    hours: float = 6.0, facilities: tuple[str, ...] = ("DEMO", "EAST", "WEST")
) -> list[EventBase]:
    """The demo hospital's HL7 traffic as canonical events, the same day at several
    facilities (copies under other names), in event-time order. All are received now, as a
    feed replaying its day would be: no source looks idle while the test runs."""
    places = Places.model_validate(DEMO_PLACES)
    end = time.time() - 600
    hospital = DemoHospital(places, seed=5)
    hospital.seed_history(end - hours * 3600, 0)
    received = datetime.now(UTC)
    base: list[EventBase] = []
    for sent_at, text in hospital.due(end):
        if sent_at < end - hours * 3600:
            continue
        base += map_message(parse(text), MapContext(places).at(received))
    ids = ("source_id", "encounter_id", "other_encounter_id", "order_id", "call_id", "patient_id")
    out: list[EventBase] = []
    for facility in facilities:
        for e in base:
            if facility == "DEMO":
                out.append(e)
                continue
            own = {k: f"{facility}:{getattr(e, k)}" for k in ids if getattr(e, k, None) is not None}
            # rebuilt, not model_copy: an event's place is derived when it is built
            out.append(type(e).model_validate({**e.model_dump(), "facility": facility, **own}))
    return sorted(out, key=lambda e: (e.ts, e.source_id))


def reference(settings: Settings, events: list[EventBase]) -> dict[SampleKey, tuple[Any, ...]]:
    """Closed windows as the embedded engine computes them (ticking as events arrive)."""
    engine = Engine(
        load_catalogue(settings.kpi_defs), settings.places, idle_timeout=settings.engine.idle_timeout
    )
    out: list[Sample] = []
    for i, event in enumerate(events):
        engine.process(event)
        if i % 500 == 499:
            out += engine.windows(engine.advance(event.received_time.timestamp()))
    out += engine.windows(engine.advance(events[-1].received_time.timestamp()))
    return _closed(out)


def _closed(samples: list[Sample]) -> dict[SampleKey, tuple[Any, ...]]:
    return {
        (s.kpi, s.group.key, s.window.start.isoformat(), s.window.end.isoformat()): (
            s.value,
            s.n,
            s.numerator,
            s.denominator,
            s.status,
        )
        for s in samples
        if s.final
    }


GROUP_SPAN = 60.0
"""Seconds of event time one produce() group may span: under the smallest grace (2 min)."""


async def produce(
    settings: Settings,
    events: list[EventBase],
    pause_every: int = 0,
    pause: float = 0.0,
    per_record: int = 1,
    stamp: bool = True,
) -> dict[int, int]:
    """Events to the events topic keyed by facility, batched as the gateway batches them
    (carescore/transports/kafka/sink.py): the stream in consecutive groups of up to
    `per_record` events (what one linger gathers), each group one record per facility holding
    its events as a JSON array (one event alone when per_record is 1). A group also ends
    before it would span more than GROUP_SPAN of event time, as a 5 ms linger never gathers
    minutes of it, so events in a partition are out of time order by less than any grace.

    Holding each facility's events until it had `per_record` of its own (as this helper once
    did) put one facility's events minutes of event time behind its partition-mate's, past
    the 2 min grace, and whether a window closed between the two depended on where the
    worker's ticks fell: the SIGKILL test failed one CI run in fifteen that way (a nurse
    call's acknowledgement came after its window had closed).

    Each event is stamped received when it is sent, as the gateway stamps what it takes in
    (stamp False: they keep the received_time they have). Returns each partition's end
    offset after them."""
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.runtime.kafka.bootstrap, acks="all", enable_idempotence=True
    )
    await producer.start()
    topic = events_topic(settings.runtime.kafka)
    sent: list[asyncio.Future[Any]] = []

    async def send(group: list[EventBase]) -> None:
        if stamp:
            now = datetime.now(UTC)
            group = [e.model_copy(update={"received_time": now}) for e in group]
        by_facility: dict[str, list[EventBase]] = {}
        for e in group:
            by_facility.setdefault(e.facility, []).append(e)
        for facility, run in by_facility.items():
            value = dump_event(run[0]) if per_record == 1 else dump_events(run)
            sent.append(await producer.send(topic, value, key=facility.encode()))

    try:
        group: list[EventBase] = []
        for i, e in enumerate(events):
            if group and (len(group) >= per_record or e.ts - group[0].ts > GROUP_SPAN):
                await send(group)
                group = []
            group.append(e)
            if pause_every and i % pause_every == pause_every - 1:
                await send(group)
                group = []
                await producer.flush()
                await asyncio.sleep(pause)
        if group:
            await send(group)
        await producer.flush()
    finally:
        await producer.stop()
    ends: dict[int, int] = {}
    for done in sent:
        meta = done.result()
        ends[meta.partition] = max(ends.get(meta.partition, 0), meta.offset + 1)
    return ends


class Published(dict[SampleKey, list[tuple[Any, ...]]]):
    """Every copy of each closed window, and for each copy when it was published (the samples
    record's Kafka timestamp, ms) and where (partition, offset): a failure names them."""

    def __init__(self) -> None:
        super().__init__()
        self.at: dict[SampleKey, list[tuple[int, int, int]]] = {}

    def copies(self, key: SampleKey) -> list[str]:
        return [
            f"{value} published {datetime.fromtimestamp(ms / 1000, UTC):%H:%M:%S.%f}"
            f" (samples {part}@{offset})"
            for value, (ms, part, offset) in zip(self[key], self.at.get(key, []), strict=False)
        ]


async def closed_samples(settings: Settings, expect: set[SampleKey], timeout: float = 120) -> Published:
    """Every closed sample on the samples topic (all copies of each), read until all the
    expected windows have arrived and nothing new came for a few seconds."""
    consumer = AIOKafkaConsumer(
        samples_topic(settings.runtime.kafka),
        bootstrap_servers=settings.runtime.kafka.bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    # closed windows travel as runs (one sample for windows in a row with the same result)
    runs = Engine(load_catalogue(settings.kpi_defs), settings.places)
    got = Published()
    deadline = time.monotonic() + timeout
    quiet_since = time.monotonic()
    try:
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            new = False
            for records in batch.values():
                for record in records:
                    for key, value in _closed(runs.windows(load_samples(record.value))).items():
                        got.setdefault(key, []).append(value)
                        got.at.setdefault(key, []).append((record.timestamp, record.partition, record.offset))
                        new = True
            if new:
                quiet_since = time.monotonic()
            if expect <= set(got) and time.monotonic() - quiet_since > 4:
                break
    finally:
        await consumer.stop()
    return got


async def until(condition: Any, timeout: float, what: str) -> None:
    """Wait for condition() to hold, checking four times a second; fail saying what."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {what}")
        await asyncio.sleep(0.25)


class Worker:
    """A real `carescore worker` process, its /metrics on a port of its own."""

    def __init__(self, config: Path, log: Path):
        from tests.alerting import free_port

        self.log = log
        self.metrics_url = f"http://127.0.0.1:{free_port()}/metrics"
        metrics = self.metrics_url.split("/")[2]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "carescore.cli", "worker", "--config", str(config), "--metrics", metrics],
            cwd=config.parent,  # whatever it writes outside its data folder shows up beside its config
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def events(self, outcome: str) -> float:
        """carescore_worker_events_total{outcome=...} as the worker reports it now."""
        return self.metric("carescore_worker_events_total", outcome=outcome)

    def partitions(self) -> float:
        return self.metric("carescore_worker_partitions")

    def unsaved(self) -> float:
        """Events read since its partitions' last durable checkpoint."""
        return self.metric("carescore_worker_unsaved_events")

    def gaps(self) -> float:
        return self.metric("carescore_worker_offset_gaps_total")

    def metric(self, name: str, **labels: str) -> float:
        import httpx
        from prometheus_client.parser import text_string_to_metric_families

        try:
            text = httpx.get(self.metrics_url, timeout=5).text
        except httpx.ConnectError:
            return 0.0  # not serving yet
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    return sample.value
        return 0.0

    async def processed_at_least(self, count: int, timeout: float = 60) -> float:
        """Events processed, once at least `count` (or the timeout) and then quiet for 2 s:
        the samples a test waits for can be out before the last events are folded in."""
        deadline = time.monotonic() + timeout
        while self.events("processed") < count and time.monotonic() < deadline:
            await asyncio.sleep(0.25)
        await asyncio.sleep(2)
        return self.events("processed")

    def story(self, lines: int = 60) -> str:
        """The worker's log at info and above, its last lines: what a failure report shows
        (partitions taken, seeks, gaps, stalls), since the log itself is gone after CI."""
        import json

        kept = []
        for line in self.log.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                kept.append(line[:300])
                continue
            if entry.get("level") != "debug":
                when, message = entry.get("time", "")[11:23], entry.get("message", "")[:240]
                kept.append(f"{when} {entry.get('level')} {message}")
        return f"--- {self.log.name} (last {lines} of {len(kept)} lines)\n" + "\n".join(kept[-lines:])

    def kill(self) -> None:
        self.kill_time = datetime.now(UTC)
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.kill()
