"""The Kafka runtime against a real Apache Kafka broker (deploy/kafka/kafka.sh), with real
`carescore worker` processes: the same KPI samples as the embedded engine, a SIGKILLed
worker's partitions taken over with nothing lost or counted twice, a SIGKILLed worker's
restart resuming from the changelog, a backlog read without closing windows ahead of it,
MLLP senders riding out a broker outage (until each is refused three times, about 10 s),
and a worker stopping on SIGTERM while the broker is down."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.kafka import (
    Published,
    Worker,
    closed_samples,
    hospital_events,
    kafka_settings,
    produce,
    reference,
    until,
)

pytestmark = pytest.mark.kafka


def expected(settings: Any, events: list[Any]) -> dict[Any, Any]:
    """Reference windows that both runtimes have surely closed (an hour before the last event)."""
    ref = reference(settings, events)
    cut = max(e.ts for e in events) - 3600
    from datetime import datetime

    return {k: v for k, v in ref.items() if datetime.fromisoformat(k[3]).timestamp() <= cut}


def assert_same(want: dict[Any, Any], got: Published, workers: tuple[Worker, ...] = ()) -> None:
    """Every reference window published, every copy of it equal to it. A failure names each
    copy with when it was published, the kill, and the workers' logs: a race seen once in
    CI must leave enough behind to be found."""
    missing = [k for k in want if k not in got]
    wrong = [k for k in want if k in got and any(v != want[k] for v in got[k])]
    if not missing and not wrong:
        return
    report = [f"{len(missing)} windows never published" + (f", e.g. {missing[:3]}" if missing else "")]
    report.append(f"{len(wrong)} windows differ")
    for k in wrong[:3]:
        report += [f"{k}: want {want[k]}", *(f"  {copy}" for copy in got.copies(k))]
    for worker in workers:
        if getattr(worker, "kill_time", None):
            report.append(f"{worker.log.name} SIGKILLed at {worker.kill_time:%H:%M:%S.%f}")
        report.append(worker.story())
    raise AssertionError("\n".join(report))


async def test_the_same_stream_gives_the_same_samples_as_the_embedded_engine(
    kafka_broker: str, tmp_path: Path
) -> None:
    settings, config = await kafka_settings(kafka_broker, tmp_path)
    events = hospital_events(hours=4)
    want = expected(settings, events)
    assert len(want) > 500
    worker = Worker(config, tmp_path / "worker.log")
    try:
        await produce(settings, events)
        got = await closed_samples(settings, set(want))
        processed = await worker.processed_at_least(len(events))
    finally:
        worker.stop()
    assert_same(want, got, (worker,))
    assert processed == len(events)  # its /metrics counts what it folded in
    # Faust's folder is in the data folder, not in the directory the worker was started from
    assert (settings.data_dir / "faust").is_dir()
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith("-data")]


async def test_a_worker_starting_on_a_backlog_closes_no_window_ahead_of_it(
    kafka_broker: str, tmp_path: Path
) -> None:
    """Four hours of events, each received a second after it happened, wait in Kafka until a
    worker starts ten minutes after the last one (a worker down for the afternoon). Every
    source looks quiet on the wall clock: ten minutes past its last arrival, hours past its
    first. The embedded engine took them in as they came, so its watermarks never jumped; the
    worker must not jump them either while it reads the backlog (worker._backlog_clock), or its first
    tick closes every window up to ~4 h ahead and drops nearly all the events as late."""
    from datetime import UTC, datetime, timedelta

    # checkpoints every 100 events: the worker waits on the broker often, so ticks come while
    # it is still reading the backlog, as they would on a backlog too large to read in one go
    settings, config = await kafka_settings(kafka_broker, tmp_path, snapshot_every=100)
    events = [
        e.model_copy(update={"received_time": datetime.fromtimestamp(e.ts, UTC) + timedelta(seconds=1)})
        for e in hospital_events(hours=8, facilities=("DEMO", "EAST", "WEST", "NORTH", "SOUTH"))
    ]
    want = expected(settings, events)
    assert len(want) > 500
    await produce(settings, events, stamp=False)
    worker = Worker(config, tmp_path / "worker.log")
    try:
        got = await closed_samples(settings, set(want), timeout=120)
    finally:
        worker.stop()
    assert_same(want, got, (worker,))


async def test_a_killed_worker_loses_nothing_and_double_counts_nothing(
    kafka_broker: str, tmp_path: Path
) -> None:
    """The first worker is SIGKILLed while it holds partitions with events read since its last
    checkpoint (its /metrics say so just before the kill). The survivor takes them over only
    when the group notices, after the 20 s session timeout (runtime.kafka.session_timeout; it
    must hold every partition well before Faust's default 60 s would have let it): longer than
    this test's 10 s idle timeout, so the taken-over partitions are replayed while their
    sources look quiet (worker._backlog_clock keeps their watermarks at the backlog). 20 s of
    quiet is less than lab windows' 2 min grace, so a jump this size closes nothing early: the
    test that fails when watermarks jump ahead of a backlog is
    test_a_worker_starting_on_a_backlog_closes_no_window_ahead_of_it."""
    settings, config = await kafka_settings(
        kafka_broker, tmp_path, engine={"idle_timeout": 10}, snapshot_every=300, session_timeout=20
    )
    events = hospital_events(hours=4, facilities=("DEMO", "EAST", "WEST", "NORTH", "SOUTH"))
    want = expected(settings, events)
    first, second = Worker(config, tmp_path / "w1.log"), Worker(config, tmp_path / "w2.log")
    try:
        # a third before both workers hold partitions, a third while they do, the last third after the
        # kill, led by the quarter of the stream before the kill sent again (senders retrying
        # what they had no answer for): the survivor counts those once
        third, kill_at = len(events) // 3, 2 * len(events) // 3
        resent = kill_at - len(events) // 4
        # records of up to 7 events, as the gateway batches them
        await produce(settings, events[:third], per_record=7)
        await until(
            lambda: first.partitions() > 0 and second.partitions() > 0, 120, "both workers hold partitions"
        )
        await produce(settings, events[third:kill_at], pause_every=300, pause=0.2, per_record=7)
        await until(
            lambda: first.unsaved() > 0 and first.events("processed") > 0,
            60,
            "the first worker has read events since its last checkpoint",
        )
        held, unsaved = first.partitions(), first.unsaved()
        first.kill()  # SIGKILL mid-stream: no chance to checkpoint or commit
        # partitions() counts those the survivor has had records of: all 4 get records here
        takeover = asyncio.create_task(
            until(lambda: second.partitions() == 4, 45, "the survivor holds all 4 partitions (session 20 s)")
        )
        try:
            await produce(settings, events[resent:], pause_every=300, pause=0.2, per_record=7)
            await takeover
        finally:
            takeover.cancel()
        got = await closed_samples(settings, set(want), timeout=240)
        gaps, duplicates = second.gaps(), second.events("duplicate")
    finally:
        first.stop()
        second.stop()
    assert held >= 1 and unsaved > 0, (held, unsaved)
    assert duplicates > 0  # the resent events reached the survivor and were dropped there
    # no records given up as gone (worker.skipped gives a seek-back GAP_GRACE seconds, then
    # goes on without them): on a slow machine that would be a loss this test must name
    assert gaps == 0
    assert_same(want, got, (first, second))


async def test_a_worker_joining_mid_stream_takes_partitions_without_losing_records(
    kafka_broker: str, tmp_path: Path
) -> None:
    """The second worker arrives while the first is busy and before any checkpoint (no
    partition has a committed offset yet). Faust drops what it fetched during a rebalance and
    does not seek back partitions without a committed offset; the worker starts those from
    the beginning (rebalance.seek_uncommitted_to_start). This test does not hit that race
    every run; `make bench` (two workers starting apart on 400,000 events) lost whole
    partitions without the fix."""
    settings, config = await kafka_settings(kafka_broker, tmp_path, snapshot_every=100_000)
    events = hospital_events(hours=4, facilities=("DEMO", "EAST", "WEST", "NORTH", "SOUTH"))
    want = expected(settings, events)
    await produce(settings, events, per_record=3)
    first = Worker(config, tmp_path / "w1.log")
    second = None
    try:
        for _ in range(240):
            await asyncio.sleep(0.25)
            if first.events("processed") or first.proc.poll() is not None:
                break
        second = Worker(config, tmp_path / "w2.log")  # joins: the group rebalances mid-stream
        got = await closed_samples(settings, set(want), timeout=180)
        processed = first.events("processed") + second.events("processed")
    finally:
        first.stop()
        if second is not None:
            second.stop()
    assert_same(want, got, (first, second))
    assert processed >= len(events)


async def test_restarting_every_worker_resumes_from_the_changelog(kafka_broker: str, tmp_path: Path) -> None:
    """The only worker is SIGKILLed with events read past its partitions' last checkpoints; a
    new one resumes from the changelog and is handed again exactly those events."""
    settings, config = await kafka_settings(kafka_broker, tmp_path, snapshot_every=200)
    events = hospital_events(hours=4)
    want = expected(settings, events)
    worker = Worker(config, tmp_path / "w1.log")
    half = len(events) // 2
    try:
        await produce(settings, events[:half])
        await until(lambda: worker.events("processed") >= half, 90, "the first half is processed")
        unsaved = worker.unsaved()
        worker.kill()
    finally:
        worker.stop()
    again = Worker(config, tmp_path / "w2.log")  # nothing of the first half is produced again
    try:
        await produce(settings, events[half:])
        got = await closed_samples(settings, set(want), timeout=180)
        processed = await again.processed_at_least(len(events) - half + unsaved)
        counts = {o: again.events(o) for o in ("processed", "in_checkpoint", "duplicate")}
    finally:
        again.stop()
    assert_same(want, got, (worker, again))  # the first half's state came back from the changelog...
    # ...and was not recomputed by reading the topic again: only the events read after the
    # last checkpoint of each partition (at most 200 each, 3 facilities) are handed out again
    assert 0 < unsaved < 3 * 200, unsaved
    assert processed == len(events) - half + unsaved, (half, len(events), unsaved, counts)


async def test_a_restarted_worker_closes_the_windows_of_partitions_that_get_no_new_record(
    kafka_broker: str, tmp_path: Path
) -> None:
    """Every event of every partition is in a checkpoint and committed, then the worker dies
    before any tick (its tick is an hour): none of the closed windows was published. Its
    successor gets no new record, so only the stall watch's restore (the partition's engine
    from its checkpoint, before any record) lets its ticks close and publish them; it reads
    nothing from the events topic."""
    import yaml
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from carescore.transports.kafka.topics import events_topic

    settings, config = await kafka_settings(
        kafka_broker, tmp_path, engine={"tick": 3600}, snapshot_every=1
    )  # a checkpoint after every record, and no tick
    events = hospital_events(hours=2)
    want = expected(settings, events)
    assert len(want) > 100
    ends = await produce(settings, events, per_record=50)
    kafka = settings.runtime.kafka
    first = Worker(config, tmp_path / "w1.log")
    group = AIOKafkaConsumer(
        bootstrap_servers=kafka.bootstrap, group_id=kafka.app_id, enable_auto_commit=False
    )
    await group.start()
    try:

        async def committed() -> dict[int, int]:
            return {
                p: await group.committed(TopicPartition(events_topic(kafka), p)) or 0
                for p in range(kafka.partitions)
            }

        await until(lambda: first.events("processed") >= len(events), 90, "every event is processed")
        deadline = asyncio.get_running_loop().time() + 60
        while (done := await committed()) != {p: ends.get(p, 0) for p in range(kafka.partitions)}:
            assert asyncio.get_running_loop().time() < deadline, (done, ends)
            await asyncio.sleep(0.25)
        assert first.unsaved() == 0 and first.metric("carescore_worker_samples_total") == 0
        first.kill()
    finally:
        await group.stop()
        first.stop()
    ticking = tmp_path / "ticking.yaml"
    data = yaml.safe_load(config.read_text())
    data["engine"]["tick"] = 0.5
    ticking.write_text(yaml.safe_dump(data))
    again = Worker(ticking, tmp_path / "w2.log")
    try:
        # the killed worker holds its partitions until its session times out (10 s here)
        got = await closed_samples(settings, set(want), timeout=240)
        read = {o: again.events(o) for o in ("processed", "in_checkpoint", "duplicate")}
    finally:
        again.stop()
    assert_same(want, got, (first, again))
    assert read == {"processed": 0, "in_checkpoint": 0, "duplicate": 0}, read  # nothing read again


async def test_mllp_senders_ride_out_a_broker_outage(tmp_path: Path) -> None:
    """The broker stops while 4 senders keep sending through `carescore run` on the Kafka
    runtime, until every sender has had its message refused three times (2 s publish timeout
    each): what was not stored gets no AA (AE, they send again), everything that got AA is in
    Kafka, and ingestion resumes by itself when the broker is back. A worker then
    reads the topic: every event counted once, any copy (a timed-out publish that landed, and
    its resend) counted by its duplicate counter."""
    import subprocess
    from datetime import UTC, datetime, timedelta

    from aiokafka import AIOKafkaConsumer

    from carescore.serve import Service
    from carescore.transports.kafka.topics import events_topic
    from connectors.hl7v2 import messages as m
    from connectors.hl7v2.client import MLLPClient, ack_code
    from engine.event_decoder import parse_events
    from tests.alerting import free_port
    from tests.kafka import KAFKA_SH

    folder, port, controller = tmp_path / "broker", free_port(), free_port()
    start = [str(KAFKA_SH), "start", str(folder), str(port), str(controller)]
    subprocess.run(start, check=True, capture_output=True)
    try:
        settings, config = await kafka_settings(f"127.0.0.1:{port}", tmp_path, publish_timeout=2.0)
        svc = Service(settings)
        await svc.start()
        acked: dict[str, int] = {}
        refused = [0, 0, 0, 0]  # AE (or AR) answers, per sender
        stop_sending = asyncio.Event()

        async def sender(n: int) -> None:
            async with MLLPClient("127.0.0.1", svc.mllp.port) as client:
                i = 0
                while not stop_sending.is_set():
                    when = datetime.now(UTC) - timedelta(minutes=1)
                    patient = m.Patient(f"MRN{n}{i}", "Roe", "Ann", "19600101", "F")
                    visit = m.Visit(patient, "I", m.Location("4W", "1", "A", "DEMO"), f"V{n}-{i}", "DEMO")
                    control = f"S{n}-{i:05d}"
                    text = m.adt("A01", when, visit, control_id=control, admit=when)
                    while True:  # an interface engine resends until it gets AA
                        code = ack_code(await client.send(text))
                        if code == "AA":
                            acked[control] = acked.get(control, 0) + 1
                            break
                        refused[n] += 1
                        await asyncio.sleep(0.5)
                    i += 1
                    await asyncio.sleep(0.05)

        senders = [asyncio.create_task(sender(n)) for n in range(4)]
        await until(lambda: len(acked) > 40, 60, "the senders get AA")
        before = len(acked)
        subprocess.run([str(KAFKA_SH), "stop", str(folder)], check=True, capture_output=True)
        refused_before = list(refused)  # AE from a slow publish before the stop does not count
        await until(
            lambda: all(r - b >= 3 for r, b in zip(refused, refused_before, strict=True)),
            90,
            "every sender refused three times, broker down",
        )
        during = len(acked) - before
        subprocess.run(start, check=True, capture_output=True)
        back = len(acked)
        await until(lambda: len(acked) > back + 40, 90, "AA again once the broker is back")
        stop_sending.set()
        await asyncio.gather(*senders)
        await svc.stop()

        consumer = AIOKafkaConsumer(
            events_topic(settings.runtime.kafka),
            bootstrap_servers=f"127.0.0.1:{port}",
            group_id=None,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        copies: list[str] = []  # every event's source_id, as often as Kafka holds it
        while batch := await consumer.getmany(timeout_ms=3000):
            for records in batch.values():
                copies += [e.source_id for r in records for e in parse_events(r.value)]
        await consumer.stop()
        stored = {source_id.split("|")[1] for source_id in copies}
        # a publish that timed out during the outage may have landed after all, and its resend
        # too: a worker reading the topic counts each event once and the copies as duplicates
        worker = Worker(config, tmp_path / "worker.log")
        try:
            processed = await worker.processed_at_least(len(set(copies)), timeout=120)
            duplicates = worker.events("duplicate")
        finally:
            worker.stop()
    finally:
        subprocess.run([str(KAFKA_SH), "stop", str(folder)], capture_output=True)

    assert during <= 4  # at most what was in flight when the broker went away
    missing = set(acked) - stored
    assert not missing, f"{len(missing)} messages got AA but are not in Kafka"
    assert processed == len(set(copies))
    assert duplicates == len(copies) - len(set(copies)), (len(copies), len(set(copies)))


async def test_a_worker_stops_on_sigterm_with_the_broker_down_and_loses_nothing(tmp_path: Path) -> None:
    """SIGTERM while the broker is down: Faust's graceful stop waits for the broker (a worker
    kept running, reconnecting, for minutes). It exits after stopping.STOP_DEADLINE with status
    STOPPED_HARD, and the next worker redoes exactly the events read after the checkpoints:
    none lost, none counted twice."""
    import subprocess

    from carescore.transports.kafka.stopping import STOP_DEADLINE, STOPPED_HARD
    from tests.alerting import free_port
    from tests.kafka import KAFKA_SH

    folder, port, controller = tmp_path / "broker", free_port(), free_port()
    start = [str(KAFKA_SH), "start", str(folder), str(port), str(controller)]
    subprocess.run(start, check=True, capture_output=True)
    try:
        settings, config = await kafka_settings(f"127.0.0.1:{port}", tmp_path, snapshot_every=40)
        events = hospital_events(hours=1)  # ~300 events, 3 facilities
        await produce(settings, events, per_record=5)
        first = Worker(config, tmp_path / "w1.log")
        try:
            await until(lambda: first.events("processed") >= len(events), 120, "every event read")
            unsaved = first.unsaved()  # read since their partition's last checkpoint
            subprocess.run([str(KAFKA_SH), "stop", str(folder)], check=True, capture_output=True)
            first.proc.terminate()
            status = first.proc.wait(timeout=STOP_DEADLINE + 45)  # raises if it is still running
        finally:
            first.stop()
        subprocess.run(start, check=True, capture_output=True)
        second = Worker(config, tmp_path / "w2.log")
        try:
            redone = await second.processed_at_least(int(unsaved), timeout=180)
            duplicates = second.events("duplicate")
        finally:
            second.stop()
    finally:
        subprocess.run([str(KAFKA_SH), "stop", str(folder)], capture_output=True)
    assert status == STOPPED_HARD, status
    assert "worker not stopped" in (tmp_path / "w1.log").read_text()
    # checkpoints were taken (every 40 events of a partition) and some events came after the last of them
    assert 0 < unsaved < len(events), (unsaved, len(events))
    assert redone == unsaved and duplicates == 0, (redone, unsaved, duplicates)


async def test_the_gateway_batches_events_in_order_and_stores_a_repeated_message_once(
    kafka_broker: str, tmp_path: Path
) -> None:
    """Publishes arriving together share records (one per facility), each facility's events
    stay in the order they were accepted, and a message published twice at once (a feed file
    repeating a row) is stored once and answered `duplicate` the second time."""
    from aiokafka import AIOKafkaConsumer

    from carescore.transports.kafka.sink import KafkaSink
    from carescore.transports.kafka.topics import events_topic
    from engine.bus import Published
    from engine.event_decoder import parse_events

    settings, _ = await kafka_settings(kafka_broker, tmp_path)
    events = hospital_events(hours=1, facilities=("DEMO", "EAST"))[:300]
    sink = KafkaSink(settings.runtime.kafka)
    await sink.start()
    try:
        first = [sink.publish(e.source_id, [e]) for e in events]
        again = [sink.publish(e.source_id, [e]) for e in events[:40]]
        results = await asyncio.gather(*first, *again)
    finally:
        await sink.close()
    assert results.count(Published.accepted) == len(events)
    assert results.count(Published.duplicate) == 40

    consumer = AIOKafkaConsumer(
        events_topic(settings.runtime.kafka),
        bootstrap_servers=kafka_broker,
        group_id=None,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    stored: dict[str, list[str]] = {}
    records = 0
    try:
        while batch := await consumer.getmany(timeout_ms=3000):
            for part_records in batch.values():
                for r in sorted(part_records, key=lambda r: r.offset):
                    records += 1
                    for e in parse_events(r.value):
                        assert r.key == e.facility.encode()
                        stored.setdefault(e.facility, []).append(e.source_id)
    finally:
        await consumer.stop()
    for facility, ids in stored.items():
        assert ids == [e.source_id for e in events if e.facility == facility]  # once each, in order
    assert sum(map(len, stored.values())) == len(events)
    assert records < len(events) / 5  # batched: many events per record


async def test_records_gone_from_the_topic_are_a_counted_gap_not_a_stall(
    kafka_broker: str, tmp_path: Path
) -> None:
    """The first records of a partition deleted before any worker read them (as retention
    does): the worker sees a gap, sends the consumer back, finds the records gone, and after
    GAP_GRACE goes on with what is there, counting the gap; everything after it is processed."""
    from aiokafka import TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete

    from carescore.transports.kafka.topics import events_topic

    settings, config = await kafka_settings(kafka_broker, tmp_path, partitions=1)
    events = hospital_events(hours=1, facilities=("DEMO",))
    await produce(settings, events)
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_broker)
    await admin.start()
    try:
        tp = TopicPartition(events_topic(settings.runtime.kafka), 0)
        await admin.delete_records({tp: RecordsToDelete(before_offset=50)})
    finally:
        await admin.close()
    worker = Worker(config, tmp_path / "worker.log")
    try:
        processed = await worker.processed_at_least(len(events) - 50, timeout=90)
        gaps = worker.gaps()
    finally:
        worker.stop()
    assert processed == len(events) - 50
    assert gaps == 1


def test_a_worker_whose_metrics_port_is_taken_says_what_to_do(tmp_path: Path) -> None:
    import os
    import socket
    import subprocess
    import sys

    from engine.config import REPO_ROOT

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "carescore.cli", "worker", "--metrics", f"127.0.0.1:{port}"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "CARESCORE_KAFKA": "127.0.0.1:9"},
        )
    assert done.returncode != 0
    assert f"cannot serve /metrics on '127.0.0.1:{port}'" in done.stderr
    assert "--metrics HOST:PORT" in done.stderr
