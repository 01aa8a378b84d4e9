"""The archiver: a consumer group of its own (`<app_id>.archiver`) that writes the events topic
to Parquet (engine/event_archive.py) for the gateway's period reports.

It runs inside the gateway, on its loop (files written on a thread): the gateway is where
reports are read, so the files land on its disk with no shared storage, and a consumer group
of its own needs nothing from the workers — their acknowledgement follows their engine
checkpoints (worker.py), and tying the archive to those would make a report wait for a
checkpoint and a worker crash between its checkpoint and its file lose events from reports.
Offsets are committed only once the files holding the records are written and fsync'd, so
nothing accepted is missing from the archive; a crash before the commit writes some records
again, which reading drops (by source_id).
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

from carescore.metrics import ARCHIVE_FILES, ARCHIVE_LAG, ARCHIVE_ROWS, show
from carescore.transports.kafka.security import client_options
from carescore.transports.kafka.topics import events_topic
from engine.config import Settings
from engine.event_archive import compact, write_part

log = logging.getLogger(__name__)


def archive_group(settings: Settings) -> str:
    return f"{settings.runtime.kafka.app_id}.archiver"


def write_partition(
    root: Path, partition: int, records: list[tuple[int, int, bytes]], at: int
) -> tuple[int, int]:
    """One partition's buffered records to their hour files, then any hour grown to `at`
    files merged. Runs on a thread. Returns (rows, files written)."""
    rows, written = write_part(root, partition, records)
    merged = sum(compact(folder, at) is not None for folder in {p.parent for p in written})
    ARCHIVE_FILES.labels("part").inc(len(written))
    ARCHIVE_FILES.labels("merged").inc(merged)
    return rows, len(written)


class Archiver:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.kafka = settings.runtime.kafka
        self.config = self.kafka.archive
        self.root = settings.archive_path
        self.rows = 0
        self.files = 0
        self.committed: dict[int, int] = {}  # partition -> next offset not yet archived
        self._buffer: dict[TopicPartition, list[tuple[int, int, bytes]]] = {}
        self._buffered = 0
        self._consumer: AIOKafkaConsumer | None = None

    async def run(self) -> None:
        """Read, write, commit, until cancelled (the supervisor restarts it if it fails)."""
        self.root.mkdir(parents=True, exist_ok=True)
        for stale in self.root.glob("p*/*/*.tmp"):  # a write a kill cut short: never renamed, never read
            stale.unlink(missing_ok=True)
        consumer = self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.kafka.bootstrap,
            group_id=archive_group(self.settings),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_bytes=16 * 1024 * 1024,
            **client_options(self.kafka),
        )
        consumer.subscribe([events_topic(self.kafka)], listener=_Rebalance(self))
        self._buffer.clear()
        self._buffered = 0
        await consumer.start()
        first = 0.0
        try:
            while True:
                batch = await consumer.getmany(timeout_ms=200, max_records=5000)
                for tp, records in batch.items():
                    if records and not self._buffered:
                        first = time.monotonic()
                    mine = self._buffer.setdefault(tp, [])
                    mine += [(tp.partition, r.offset, r.value) for r in records if r.value is not None]
                    self._buffered += len(records)
                due = time.monotonic() - first >= self.config.flush_every
                if self._buffered and (due or self._buffered >= self.config.max_rows):
                    await self.flush()
                self._show_lag()
        finally:
            self._consumer = None
            await consumer.stop()

    async def flush(self) -> None:
        """Write what is buffered, then commit past it (never before the files are durable)."""
        consumer = self._consumer
        if consumer is None or not self._buffered:
            return
        buffer, self._buffer, self._buffered = self._buffer, {}, 0
        offsets = {}
        for tp, records in buffer.items():
            if not records:
                continue
            rows, files = await asyncio.to_thread(
                write_partition, self.root, tp.partition, records, self.config.compact_at
            )
            self.rows += rows
            self.files += files
            ARCHIVE_ROWS.inc(rows)
            offsets[tp] = records[-1][1] + 1
        if offsets:
            await consumer.commit(offsets)
            for tp, at in offsets.items():
                self.committed[tp.partition] = at
            log.debug("archive committed", extra={"offsets": {t.partition: o for t, o in offsets.items()}})

    def lags(self) -> dict[int, int]:
        """Per partition held: records in Kafka (as last fetched) not yet in a committed file."""
        consumer = self._consumer
        if consumer is None:
            return {}
        out = {}
        for tp in consumer.assignment():
            end = consumer.highwater(tp)
            if end is not None and tp.partition in self.committed:
                out[tp.partition] = max(0, end - self.committed[tp.partition])
        return out

    def _show_lag(self) -> None:
        show(ARCHIVE_LAG, {str(p): float(lag) for p, lag in self.lags().items()})

    async def _assigned(self, assigned: set[TopicPartition]) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        for tp in assigned:
            at = await consumer.committed(tp)
            if at is None:  # never archived: it starts at the partition's beginning
                at = (await consumer.beginning_offsets([tp]))[tp]
            self.committed[tp.partition] = at

    async def _revoked(self, revoked: set[TopicPartition]) -> None:
        """Before another gateway takes these partitions: what is buffered written and committed."""
        try:
            await self.flush()
        except Exception:  # it re-reads from the last commit; reading drops the copies
            log.exception("archive flush on rebalance failed")
        for tp in revoked:
            self.committed.pop(tp.partition, None)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, archiver: Archiver):
        self.archiver = archiver

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.archiver._revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self.archiver._assigned(set(assigned))
