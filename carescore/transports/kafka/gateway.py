"""`carescore run` with runtime.kind: kafka — the gateway process: the connectors (MLLP,
FHIR, feeds) publish to Kafka, KPI samples from the workers fill the board, the history
and the alert service, and the API serves them.

Events do not pass through an engine here: the workers compute KPIs. The gateway keeps
only what routing needs — the on-shift roster from the staffing events it publishes, and
which sources feed which KPIs — in an Engine it gives staffing events alone. Period reports
read the Parquet copy of the events topic that this process's archiver writes (archiver.py).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaConsumer

from api.problems import Problem
from carescore.shell import RuntimeShell
from carescore.transports.kafka.archiver import Archiver
from carescore.transports.kafka.security import client_options
from carescore.transports.kafka.sink import KafkaSink
from carescore.transports.kafka.topics import ensure_topics, samples_topic
from engine.bus import Published
from engine.config import Settings
from engine.core import Engine
from engine.event_archive import archive_frame, fingerprint
from engine.events import EventBase
from engine.reports import Level, Reporter, ReportRow
from engine.samples import Sample, load_samples

log = logging.getLogger(__name__)


class KafkaGateway(RuntimeShell):
    kind = "kafka"

    def __init__(self, settings: Settings):
        super().__init__(settings)
        self.roster = Engine(self.catalogue, self.places, timezone=settings.timezone)  # fed staffing only
        self.type_sources: dict[str, set[str]] = {}
        self._attach(self.roster, self._sources_of)
        self.sink = KafkaSink(settings.runtime.kafka)
        self.samples_seen = 0
        self._consumer: AIOKafkaConsumer | None = None
        self.archiver = Archiver(settings) if settings.runtime.kafka.archive.enabled else None
        self._reporter: tuple[Any, Reporter] | None = None

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
                    self.history.add(closed)
                now = self.clock()
                if now - last_tick >= self.settings.engine.tick:
                    last_tick = now
                    try:
                        self.alerts.observe(list(self.board.current.values()), now)
                    except Exception:
                        log.exception("alert evaluation failed")
        finally:
            await consumer.stop()

    def tick(self, now: float | None = None) -> None:
        self.alerts.observe(list(self.board.current.values()), self.clock() if now is None else now)

    async def _stop_transport(self) -> None:
        await self.sink.close()
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                await self._consumer.stop()

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
        if self.archiver is not None:
            counters["events_archived"] = self.archiver.rows
        return counters
