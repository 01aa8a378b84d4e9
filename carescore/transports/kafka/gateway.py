"""`carescore run` with runtime.kind: kafka — the gateway process: the connectors (MLLP,
FHIR, feeds) publish to Kafka, KPI samples from the workers fill the board, the history
and the alert service, and the API serves them.

Events do not pass through an engine here: the workers compute KPIs. The gateway keeps
only what routing needs — the on-shift roster from the staffing events it publishes, and
which sources feed which KPIs — in an Engine it gives staffing events alone. Period reports
read the Parquet copy of the events topic that this process's archiver writes (archiver.py).

Several gateways may run (each takes input and serves the API); the one holding the alert
database's advisory lock (alerts/leader.py) evaluates alerts and delivers notices, the others
try for the lock every second and take over from the shared store when it is released.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaConsumer

from alerts.leader import Leadership, leadership_for
from api.problems import Problem
from carescore.shell import RuntimeShell
from carescore.transports.kafka.archiver import Archiver
from carescore.transports.kafka.security import client_options
from carescore.transports.kafka.sink import KafkaSink
from carescore.transports.kafka.topics import ensure_topics, samples_topic
from engine.bus import Published, RawInput
from engine.config import Settings
from engine.core import Engine
from engine.event_archive import archive_frame, fingerprint
from engine.events import EventBase
from engine.reports import Level, Reporter, ReportRow
from engine.samples import Sample, load_samples

log = logging.getLogger(__name__)

LEAD_EVERY = 1.0  # how often a follower tries for the lead, and a leader checks it still holds it
SHARE_FEEDS_EVERY = 5.0  # how often feed last-seen times go through the shared store


class KafkaGateway(RuntimeShell):
    kind = "kafka"

    def __init__(self, settings: Settings):
        super().__init__(settings)
        self.roster = Engine(self.catalogue, self.places, timezone=settings.timezone)  # fed staffing only
        self.type_sources: dict[str, set[str]] = {}
        self._attach(self.roster, self._sources_of)
        self.sink = KafkaSink(settings.runtime.kafka)
        self.keeps_raw = self.sink.keeps_raw  # the connectors' pipeline asks (raw topics)
        self.samples_seen = 0
        self._consumer: AIOKafkaConsumer | None = None
        self.archiver = Archiver(settings) if settings.runtime.kafka.archive.enabled else None
        self._reporter: tuple[Any, Reporter] | None = None
        self.leadership: Leadership = leadership_for(self.alerts.store.target)
        self.alerts.fence = self._still_leading
        self.leading = False  # until the lead is taken (at once with SQLite: one gateway alone)
        if not self.leadership.shared:
            log.warning(
                "alerts.database is SQLite: this gateway evaluates alerts on its own; run one "
                "gateway, or set alerts.database to PostgreSQL to run several (one leads)"
            )

    def background(self) -> dict[str, Callable[[], Awaitable[None]]]:
        return {"archive": self.archiver.run} if self.archiver is not None else {}

    def _sources_of(self, kpi: str) -> set[str]:
        out: set[str] = set()
        for etype in self.roster.event_types_of(kpi):
            out |= self.type_sources.get(etype, set())
        return out

    async def start(self) -> None:
        await ensure_topics(self.settings.runtime.kafka)
        await self.sink.start()

    # -- the bus (connectors publish here) ---------------------------------------------------
    async def publish(self, message_key: str, events: list[EventBase]) -> Published:
        result = await self.sink.publish(message_key, events)
        if result is Published.accepted and events:
            now = self.clock()
            self.alerts.saw(events, now)
            for e in events:
                self.type_sources.setdefault(e.type, set()).add(e.source)
                if e.type.startswith("staffing."):
                    self.roster.process(e)
        return result

    async def publish_raw(self, raw: RawInput) -> None:
        await self.sink.publish_raw(raw)

    # -- samples from the workers ------------------------------------------------------------
    async def run_ticks(self) -> None:
        """Read the samples topic (all partitions, from the start: the history) and evaluate
        alerts on the live values once a tick."""
        kafka = self.settings.runtime.kafka
        consumer = self._consumer = AIOKafkaConsumer(
            samples_topic(kafka),
            bootstrap_servers=kafka.bootstrap,
            group_id=None,
            auto_offset_reset="earliest",
            fetch_max_bytes=16 * 1024 * 1024,
            **client_options(kafka),
        )
        await consumer.start()
        last_tick = 0.0
        try:
            while True:
                batch = await consumer.getmany(timeout_ms=200, max_records=5000)
                closed: list[Sample] = []
                for records in batch.values():
                    for record in records:
                        for sample in load_samples(record.value):
                            self.samples_seen += 1
                            if sample.final:
                                closed.append(sample)
                            else:
                                self.board.update([sample])
                if closed:
                    self.history.add_later(closed)  # the loop reads on while it is written
                else:
                    self.history.retry()  # windows a failed write holds, when the disk has room
                now = self.clock()
                if self.leading and now - last_tick >= self.settings.engine.tick and self._still_leading():
                    last_tick = now
                    try:
                        self.alerts.observe(list(self.board.current.values()), now)
                    except Exception:
                        log.exception("alert evaluation failed")
        finally:
            await consumer.stop()

    def tick(self, now: float | None = None) -> None:
        if self.leading:
            self.alerts.observe(list(self.board.current.values()), self.clock() if now is None else now)

    # -- leadership ----------------------------------------------------------------------------
    def _still_leading(self) -> bool:
        """The fence before each tick, delivery pass and notice: the lock's connection answers."""
        if self.leading and not self.leadership.held():
            self._step_down()
        return self.leading

    def _step_down(self) -> None:
        self.leading = False
        log.error("alert leadership lost: this gateway stops evaluating alerts and delivering notices")

    async def run_alerts(self) -> None:
        """Lead (evaluate and deliver) while holding the lock; follow (try for it every
        second) otherwise. Feed last-seen times go through the store either way."""
        delivery: asyncio.Task[None] | None = None
        shared = 0.0
        try:
            while True:
                if self.leading:
                    self._still_leading()
                elif self.leadership.acquire():
                    self.alerts.resume(self.clock())  # the shared store's state, before any tick
                    self.forecasts.restore(self.alerts.firing())
                    self.leading = True
                    log.warning("alert leadership taken: this gateway evaluates alerts and delivers notices")
                if self.leading and delivery is None:
                    delivery = asyncio.create_task(self.alerts.run(), name="alert delivery")
                if not self.leading and delivery is not None:
                    delivery.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await delivery
                    delivery = None
                if delivery is not None and delivery.done():
                    delivery.result()  # raises why it stopped: the supervisor restarts this loop
                if self.leadership.shared and time.monotonic() - shared >= SHARE_FEEDS_EVERY:
                    shared = time.monotonic()
                    try:
                        if self.leading:
                            self.alerts.share_feeds()
                        else:
                            self.alerts.save_feeds()
                    except Exception as exc:
                        log.warning("feed last-seen times not shared (%s: %s)", type(exc).__name__, exc)
                await asyncio.sleep(LEAD_EVERY)
        finally:
            if delivery is not None:
                delivery.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await delivery

    async def close(self) -> None:
        await super().close()
        self.leadership.release()  # after the last notices: another gateway takes over now

    async def _stop_transport(self) -> None:
        await self.sink.close()
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                await self._consumer.stop()
        if not self.history.settle():  # held windows written once more; else the samples topic has them
            log.error("history: %d closed windows could not be stored at the stop", self.history.held)

    # -- what the API asks -------------------------------------------------------------------
    def report(self, kpi_id: str, start: datetime, end: datetime, by: Level = "unit") -> list[ReportRow]:
        """A period report from the archive's Parquet files (archiver.py) with the embedded
        runtime's Reporter; the frame is reused until the archive changes."""
        if self.archiver is None:
            raise Problem(
                501,
                "Period reports need the event archive",
                "runtime.kafka.archive.enabled is false: this gateway keeps no copy of the events",
            )
        root = self.settings.archive_path
        held = fingerprint(root)
        if self._reporter is None or self._reporter[0] != held:
            self._reporter = (held, Reporter(archive_frame(root), self.places, self.settings.timezone))
        return self._reporter[1].report(self.catalogue[kpi_id], start, end, by)

    def _counters(self) -> dict[str, Any]:
        counters = {"events_published": self.sink.produced, "samples_received": self.samples_seen}
        if self.sink.keeps_raw:
            counters["raw_records_published"] = self.sink.raw_records
        if self.archiver is not None:
            counters["events_archived"] = self.archiver.rows
        return counters
