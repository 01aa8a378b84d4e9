"""`carescore worker`: a Faust worker running the engine on the partitions it owns.

A record of the events topic is one canonical event or a JSON array of them (the gateway
batches, see sink.py). Per partition one Engine: the same objects, the same operators as
the embedded runtime. Its state is checkpointed into a Faust table (changelog topic) every
`snapshot_every` events, together with the offset of the last record in it, and a record is
acknowledged to Kafka only once a checkpoint containing it is durable. So the committed offset never runs
ahead of the saved state: a worker killed at any moment, or a partition moving to another
worker, resumes from the checkpoint and is handed again exactly the events after it (the
ones already in the checkpoint are recognised by offset and skipped). Nothing is lost or
counted twice. A resent event (same source_id) is dropped as well.

Once a second, each engine closes the windows its watermarks have passed and its live values
are recomputed; closed windows and changed live values go to the samples topic, one message
(a JSON array) per facility and tick, keyed by facility, where the gateway (API, alerts)
reads them.
"""

from __future__ import annotations

import base64
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

import faust
from aiokafka.errors import KafkaError
from prometheus_client import start_http_server

from carescore.gctune import tune_gc
from carescore.metrics import (
    KAFKA_CONSUMER_LAG,
    WORKER_CHECKPOINTS,
    WORKER_ENGINE_ERRORS,
    WORKER_EVENTS,
    WORKER_GAPS,
    WORKER_PARTITIONS,
    WORKER_SAMPLES,
    WORKER_STALLS,
    WORKER_UNSAVED,
    show,
    show_watermark_lags,
)
from carescore.transports import live_engine
from carescore.transports.kafka.delivery import use_direct_delivery
from carescore.transports.kafka.rebalance import seek_uncommitted_to_start
from carescore.transports.kafka.records import read_record
from carescore.transports.kafka.security import faust_credentials
from carescore.transports.kafka.stopping import BoundedStopWorker
from carescore.transports.kafka.topics import events_topic, samples_topic
from engine.checkpoint import Checkpoint, catalogue_fingerprint
from engine.config import Settings
from engine.core import Engine
from engine.dedupe import RecentKeys
from engine.definitions import Catalogue, load_catalogue
from engine.events import EventBase
from engine.samples import Sample, dump_samples

log = logging.getLogger(__name__)

GAP_GRACE = 10.0  # seconds a gap may take to fill after the consumer was sent back
STALL_AFTER = 10.0  # seconds aiokafka's position stands past the engine's before resume_stalled acts
REMEMBER_IDS = 20_000  # resends come within minutes; the ids of the last events are enough
MAX_MESSAGE = 16 * 1024 * 1024
LIVE_WHILE_BEHIND = 10.0  # seconds between live values of a partition reading a backlog
SAMPLES_PER_MESSAGE = 500  # ~250 KB: a worker catching up closes thousands of windows per tick


@dataclass
class Partition:
    """One partition's engine and where it stands."""

    engine: Engine
    offset: int = -1  # last event folded into the engine
    saved: int = -1  # last event in the latest durable checkpoint
    seen: RecentKeys = field(default_factory=lambda: RecentKeys(REMEMBER_IDS))
    facilities: set[str] = field(default_factory=set)  # whose events come to this partition
    unacked: list[Any] = field(default_factory=list)
    since_checkpoint: int = 0  # events in the unacked records
    gap_from: int = -1  # first offset missing before a record that arrived (see skipped)
    gap_since: float = 0.0
    last_seek: float = 0.0
    sent_back_from: tuple[int, int] | None = None  # (aiokafka's position, ours) at the last send-back
    stuck: tuple[int, int] | None = None  # (aiokafka's position, ours) while past ours
    stuck_since: float = 0.0
    tp: Any = None
    published: dict[tuple[str, Any], tuple[Any, ...]] = field(default_factory=dict)
    live_at: float = 0.0  # when its live values were last computed (time.monotonic)


def snapshot_text(part: Partition, fingerprint: str) -> str:
    """The checkpoint (engine/checkpoint.py) as the table stores it: the Faust table's JSON codec
    carries text, so the checkpoint's bytes go in base64."""
    extra = {"facilities": sorted(part.facilities)}
    checkpoint = Checkpoint(fingerprint, part.offset, part.engine.snapshot(), list(part.seen), extra)
    return base64.b64encode(checkpoint.encode()).decode()


def fold(part: Partition, batch: list[EventBase]) -> int:
    """A record's events into the partition's engine, but those already counted (same
    source_id: resent); how many were new. An event the engine raises on is logged and
    counted (carescore_worker_engine_errors) and the rest go in, as in the embedded runtime."""
    fresh = 0
    for event in batch:
        if event.source_id in part.seen:
            continue
        try:
            part.engine.process(event)
        except Exception:
            WORKER_ENGINE_ERRORS.inc()
            log.exception(
                "the engine could not process an event",
                extra={"event_type": event.type, "partition": getattr(part.tp, "partition", None)},
            )
        part.facilities.add(event.facility)
        part.seen.add(event.source_id)
        fresh += 1
    return fresh


def dropped_behind(part: Partition, position: int | None) -> bool:
    """Whether aiokafka has returned records of the partition past the engine's: its position
    (the next offset it returns to Faust) is past the engine's next record. Not while a gap
    is being filled (skipped() went back for it), nor again for the very state the consumer
    was last sent back from (those records expired: aiokafka resets to where it was)."""
    if position is None or position <= part.offset + 1:
        return False
    if part.gap_from > part.offset:
        return False
    return part.sent_back_from != (position, part.offset)


def send_back_to(part: Partition, committed: int | None) -> int:
    """Where the consumer goes back to: the record after the engine's, but never past Faust's
    committed offset (Kafka's: the next to read), since records Faust has not seen
    acknowledged would hold its commits of the partition for as long as this worker has it."""
    return part.offset + 1 if committed is None else min(part.offset + 1, committed)


def _position(consumer: Any, tp: Any) -> int | None:
    """aiokafka's position of an assigned partition, read from the consumer thread's
    subscription state (an int read under the GIL); None when it has none (being reset or
    revoked). Called from the tick, which Faust starts only once the consumer runs."""
    try:
        subscription = consumer._thread._ensure_consumer()._subscription.subscription
        state = subscription.assignment.state_value(tp) if subscription is not None else None
    except (AttributeError, AssertionError):  # no assignment (None) while a rebalance runs
        return None
    return state._position if state is not None else None  # type: ignore[no-any-return]


def restore_partition(
    blob: str | None, catalogue: Catalogue, settings: Settings, fingerprint: str
) -> Partition:
    engine = live_engine(settings, catalogue)
    part = Partition(engine)
    checkpoint = Checkpoint.decode(base64.b64decode(blob), fingerprint) if blob else None
    if checkpoint is not None:
        engine.restore(checkpoint.engine)
        part.offset = part.saved = checkpoint.at
        part.seen = RecentKeys(REMEMBER_IDS, checkpoint.seen)
        part.facilities = set(checkpoint.extra["facilities"])
    return part


def make_app(settings: Settings) -> faust.App:
    kafka = settings.runtime.kafka
    catalogue = load_catalogue(settings.kpi_defs)
    fingerprint = catalogue_fingerprint(catalogue, settings.timezone)
    use_direct_delivery()
    # Faust makes its folder (empty with the memory store) in the working directory unless
    # told; a worker keeps everything it writes in its data folder.
    faust_dir = settings.data_dir / "faust"
    faust_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    app = faust.App(
        kafka.app_id,
        datadir=str(faust_dir).replace("{", "{{").replace("}", "}}"),  # Faust formats it
        broker=f"kafka://{kafka.bootstrap}",
        broker_credentials=faust_credentials(kafka),
        store="memory://",
        topic_partitions=kafka.partitions,
        topic_replication_factor=kafka.replication,
        web_enabled=False,
        producer_acks=-1,
        producer_max_request_size=MAX_MESSAGE,
        consumer_max_fetch_size=MAX_MESSAGE,
        stream_buffer_maxsize=8192,
        broker_commit_interval=1.0,
        broker_session_timeout=kafka.session_timeout,
        # Faust refuses a session timeout longer than the request timeout (its default 90 s)
        broker_request_timeout=max(90.0, kafka.session_timeout + 30.0),
        # Kafka's rule of thumb: a third of the session timeout at most (Faust's default 3 s)
        broker_heartbeat_interval=min(3.0, kafka.session_timeout / 3),
        # A rebalance must not wait for our unacknowledged events (they wait for the next
        # checkpoint): whoever owns the partition next starts after the last checkpoint.
        stream_wait_empty=False,
    )
    events = app.topic(
        events_topic(kafka), key_type=bytes, value_type=bytes, value_serializer="raw", key_serializer="raw"
    )
    samples = app.topic(
        samples_topic(kafka), key_type=bytes, value_type=bytes, value_serializer="raw", key_serializer="raw"
    )
    table = app.Table(
        "engine-state",
        default=None,
        partitions=kafka.partitions,
        key_type=str,
        value_type=str,
        extra_topic_configs={"max.message.bytes": str(MAX_MESSAGE)},
    )
    parts: dict[int, Partition] = {}
    agent_idle: list[bool] = [True]  # the agent waits for a record (resume_stalled)
    bounds = settings.engine.bounds()
    processed, duplicate, in_checkpoint = (
        WORKER_EVENTS.labels(o) for o in ("processed", "duplicate", "in_checkpoint")
    )

    def partition(number: int) -> Partition:
        part = parts.get(number)
        if part is None:
            part = parts[number] = restore_partition(
                table.get(f"p{number}"), catalogue, settings, fingerprint
            )
            log.info("events partition %d taken: resumes after offset %d", number, part.offset)
            WORKER_PARTITIONS.set(len(parts))
        return part

    def unsaved() -> None:
        WORKER_UNSAVED.set(sum(p.since_checkpoint for p in parts.values()))

    async def checkpoint(number: int, part: Partition) -> None:
        """Save the engine (inside the current event's context: its partition's changelog),
        wait until it is durable, then acknowledge every event it contains."""
        table[f"p{number}"] = snapshot_text(part, fingerprint)
        await app.producer.flush()
        part.saved = part.offset
        for event in part.unacked:
            event.ack()
        part.unacked.clear()
        part.since_checkpoint = 0
        WORKER_CHECKPOINTS.inc()
        unsaved()

    async def skipped(event: Any, part: Partition) -> bool:
        """A record arrived after a gap: the records between the engine and it never reached
        it. Send the consumer back for them and drop what is queued behind the gap.

        Faust keeps fetching while a rebalance seeks partitions back to their committed
        offsets, so records fetched before the seek can arrive after it, ahead of the ones
        the seek sends again; folding them in would skip those for good (seen: a restarted
        worker lost ~100 events one run in six). Faust also drops records below the last
        offset it delivered, which a stale record raises again after our seek, so the seek
        is repeated (here and from the tick) until the gap fills. The events topic is written
        by idempotent, non-transactional producers: its offsets are contiguous, and a gap
        still open after GAP_GRACE seconds means records that are gone (retention); it is
        accepted, with a warning and carescore_worker_offset_gaps_total."""
        want, now = part.offset + 1, time.monotonic()
        if part.gap_from != want:
            part.gap_from, part.gap_since, part.tp = want, now, event.message.tp
            log.info(
                "events partition %d: offset %d arrived before %d; consumer sent back",
                event.message.partition,
                event.message.offset,
                want,
            )
        elif now - part.gap_since >= GAP_GRACE:
            log.warning(
                "events partition %d: offsets %d-%d are gone from the topic; continuing",
                event.message.partition,
                want,
                event.message.offset - 1,
            )
            WORKER_GAPS.inc()
            part.gap_from = -1
            return False
        await seek_back(part, now)
        return True

    async def seek_back(part: Partition, now: float) -> None:
        part.last_seek = now
        await app.consumer.seek(part.tp, part.gap_from)

    @app.agent(events)
    async def run_engine(stream: Any) -> None:
        async for event in stream.noack().events():
            agent_idle[0] = False
            try:
                await take(event)
            finally:
                agent_idle[0] = True

    async def take(event: Any) -> None:
        """One record into its partition's engine, checkpointing when one is due."""
        number = event.message.partition
        part = partition(number)
        part.tp = event.message.tp
        offset = event.message.offset
        if offset > part.offset + 1 and await skipped(event, part):
            return
        part.unacked.append(event)
        batch = read_record(event.value, bounds, number, offset)
        if offset > part.offset:  # not already in the checkpoint this engine came from
            fresh = fold(part, batch)
            processed.inc(fresh)
            duplicate.inc(len(batch) - fresh)
            part.offset = offset
        else:
            in_checkpoint.inc(len(batch))
        part.since_checkpoint += len(batch)
        if part.since_checkpoint >= kafka.snapshot_every:
            await checkpoint(number, part)
        else:
            WORKER_UNSAVED.inc(len(batch))

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def assigned(app: faust.App, assigned: set[Any], **_: Any) -> None:
        seek_uncommitted_to_start(app.consumer, events_topic(kafka))

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def revoked(app: faust.App, revoked: set[Any], **_: Any) -> None:
        for part in parts.values():
            part.unacked.clear()  # the events after the checkpoint will be handed out again
            part.since_checkpoint = 0
        gone = sorted(tp.partition for tp in revoked if tp.topic == events_topic(kafka))
        for number in gone:
            if number in parts:  # whoever gets it next resumes from its checkpoint
                log.info("events partition %d revoked after offset %d", number, parts.pop(number).offset)
        WORKER_PARTITIONS.set(len(parts))
        unsaved()

    async def resume_stalled() -> None:
        """Send the consumer back for a partition whose records Faust handed over but its
        stream never delivered to the engine.

        Faust's stream drops (and acknowledges) a record fetched before a rebalance or
        recovery finished (its generation is not the app's, or the flow was stopped) and
        counts on the seek to the committed offsets that follows to fetch it again; a record
        fetched before that seek but handed over after it is gone for good. With traffic
        behind it, the next record shows the gap (see skipped); the last records of a quiet
        partition have nothing behind them. A restarted worker on a busy machine stopped
        short that way (the SIGTERM test of tests/test_kafka_runtime.py, with stock Faust
        and with direct delivery: the fetcher had handed over offsets the agent never saw).

        A partition is sent back when, for STALL_AFTER seconds, aiokafka's position (the next
        offset it returns to Faust) has stood past the engine's next record, and now the agent
        waits for a record with nothing queued: so what aiokafka returned was dropped, not
        waiting behind a busy agent, a slow checkpoint or a backlog. (A watch on Faust's own read
        offset, which its seek to the committed offsets resets, missed a restarted worker's
        stall under a CPU hog; aiokafka runs in a thread of its own.)
        Never past Faust's committed offset: records it has not seen acknowledged would hold
        its commits for the partition for as long as this worker has it; those the engine
        already has are counted as in its checkpoint, not again."""
        consumer: Any = app.consumer  # Faust's and aiokafka's bookkeeping below
        if app.rebalancing or app.in_recovery or not app.flow_control.is_active():
            for part in parts.values():
                part.stuck = None  # the clocks start once Faust's own seek is done
            return
        now, topic = time.monotonic(), events_topic(kafka)
        subscribers = app.topics._tp_index  # type: ignore[attr-defined]  # Faust's conductor: tp -> channels
        for tp in consumer.assignment():
            if tp.topic != topic:
                continue
            position = _position(consumer, tp)
            if not position:
                continue  # none, or nothing returned from a partition never written (offset 0)
            part = partition(tp.partition)  # restored from its checkpoint if no record came yet
            part.tp = tp
            if not dropped_behind(part, position):
                part.stuck = None
                continue
            if part.stuck != (position, part.offset):
                part.stuck, part.stuck_since = (position, part.offset), now
                continue
            if now - part.stuck_since < STALL_AFTER or not agent_idle[0]:
                continue
            if any(not channel.queue.empty() for channel in subscribers.get(tp, ())):
                continue  # records of it (or others) queued for the agent: not dropped
            target = send_back_to(part, consumer._committed_offset.get(tp))
            part.sent_back_from, part.last_seek, part.stuck = (position, part.offset), now, None
            if part.offset < 0:  # no usable checkpoint (KPI definitions changed): rebuilt
                log.info("events partition %d: no checkpoint to resume; read from %d", tp.partition, target)
            else:
                WORKER_STALLS.inc()
                log.warning(
                    "events partition %d: records up to %d were fetched, the engine has up to %d "
                    "and none came for %.0f s; consumer sent back to %d",
                    tp.partition,
                    position - 1,
                    part.offset,
                    now - part.stuck_since,
                    target,
                )
            try:
                await consumer.seek(tp, target)
            except (AssertionError, KafkaError):  # revoked while we looked: its next owner reads it
                log.info("events partition %d: no longer held, not sent back", tp.partition)

    @app.timer(interval=settings.engine.tick)
    async def tick() -> None:
        now = time.time()
        for part in list(parts.values()):
            waited = time.monotonic() - part.last_seek
            if part.gap_from == part.offset + 1 and waited > 1.0:
                await seek_back(part, time.monotonic())  # nothing came since: Faust dropped it
        await resume_stalled()
        for part in list(parts.values()):
            caught_up = _caught_up(part, app.consumer)
            clock = now if caught_up else _backlog_clock(part, now)
            try:
                due = samples_due(part, clock, caught_up)
            except Exception:  # one partition's failure must not stop the others' ticks
                log.exception("tick failed for events partition %s", getattr(part.tp, "partition", "?"))
                continue
            # Queued without yielding: a checkpoint can only come after these windows are in the
            # producer's buffer, and it flushes that buffer before acknowledging anything.
            for facility, values in due:
                samples.send_soon(key=facility.encode(), value=values)
        show_watermark_lags(part.engine.watermark_lags(now) for part in parts.values())
        show(KAFKA_CONSUMER_LAG, _consumer_lags(app.consumer, parts))

    app.carescore_parts = parts  # type: ignore[attr-defined]  # tests and benchmarks look inside
    return app


def samples_due(part: Partition, clock: float, caught_up: bool) -> list[tuple[str, bytes]]:
    """What a tick publishes for one partition, as (facility, samples topic message): the
    windows its watermarks have passed by `clock`, and the live values that changed."""
    out = part.engine.advance(clock)
    if caught_up or time.monotonic() - part.live_at >= LIVE_WHILE_BEHIND:
        # live values of a partition still reading its backlog are stale by the next tick:
        # computing them for every engine every second cost a worker catching up about a
        # tenth of its time (bench/kafka_worker.py); the board gets them every
        # LIVE_WHILE_BEHIND seconds then, and every tick once the partition is read
        part.live_at = time.monotonic()
        out += _changed(part, part.engine.live(clock))
    by_facility: dict[str, list[Sample]] = {}
    for sample in out:
        # every engine knows every configured unit; a facility belongs to one partition
        if sample.group.facility in part.facilities:
            by_facility.setdefault(sample.group.facility, []).append(sample)
    messages = []
    for facility, batch in by_facility.items():
        for i in range(0, len(batch), SAMPLES_PER_MESSAGE):
            messages.append((facility, dump_samples(batch[i : i + SAMPLES_PER_MESSAGE])))
        WORKER_SAMPLES.inc(len(batch))
    return messages


def _consumer_lags(consumer: Any, parts: dict[int, Partition]) -> dict[str, float]:
    """Per events partition held: its end offset as aiokafka last fetched it (the high watermark)
    minus the next offset the engine takes. Not the consumer's position (it runs ahead by what
    Faust buffered) nor the committed offset (it waits for a checkpoint): what is not counted yet."""
    lags = {}
    for number, part in list(parts.items()):
        try:
            end = consumer.highwater(part.tp) if part.tp is not None else None
        except AssertionError:  # aiokafka's "Partition is not assigned": revoked, being dropped
            continue
        if end is not None:
            lags[str(number)] = float(max(0, end - (part.offset + 1)))
    return lags


def _caught_up(part: Partition, consumer: Any) -> bool:
    """Whether the partition's engine has taken every record the consumer last saw in it."""
    try:
        highwater = consumer.highwater(part.tp) if part.tp is not None else None
    except AssertionError:  # aiokafka's: the partition is being revoked
        highwater = None
    return highwater is not None and part.offset + 1 >= highwater


def _backlog_clock(part: Partition, now: float) -> float:
    """The clock of a partition with records still to read (catching up, or taking over from
    a worker that died): the time its last event was received, where a caught-up one ticks on
    the wall clock as the embedded engine does. A source is idle only if nothing more came
    from it: a worker that is behind does not know that, and advancing idle watermarks by the
    wall clock there would close windows ahead of the backlog and drop the backlog's events as
    late (a worker started on a four-hour backlog received hours before closed nearly every
    window ahead of it: tests/test_kafka_runtime.py)."""
    arrivals = part.engine.watermarks.arrival.values()
    return min(now, max(a.timestamp() for a in arrivals)) if arrivals else now


def _changed(part: Partition, live: list[Sample]) -> list[Sample]:
    """Live samples that moved since last published: value, status, or what they count and
    over which window (the end is the watermark, moving every tick, so it is left out). A p90
    that stays put while its n grows is a change: the board shows n, and sending only value
    and status left the gateway's n behind (issue 17: 140 of 270 STAT turnarounds shown)."""
    out = []
    for s in live:
        key = (s.kpi, s.group.key)
        state = (s.value, s.status, s.n, s.numerator, s.denominator, s.overdue, s.window.start)
        if part.published.get(key) != state:
            part.published[key] = state
            out.append(s)
    return out


def run_worker(settings: Settings) -> None:
    import asyncio

    from carescore.transports.kafka.topics import ensure_topics

    if settings.runtime.kafka.worker_metrics:
        address = settings.runtime.kafka.worker_metrics
        host, _, port = address.rpartition(":")
        try:
            start_http_server(int(port), addr=host or "127.0.0.1")
        except (OSError, ValueError) as exc:
            raise SystemExit(
                f"carescore worker: cannot serve /metrics on {address!r} ({exc}); give each worker "
                "on a host its own with --metrics HOST:PORT, or --metrics '' for none"
            ) from exc
    asyncio.run(ensure_topics(settings.runtime.kafka))
    app = make_app(settings)
    tune_gc()
    worker = BoundedStopWorker(
        app,
        loglevel=os.environ.get("CARESCORE_FAUST_LOGLEVEL", "WARNING"),
        quiet=True,
        log_level=settings.log_level,
    )
    worker.execute_from_commandline()
