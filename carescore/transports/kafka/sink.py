"""Connectors' events to Kafka: `publish` returns only when the broker acknowledged them
(acks=all, idempotent producer), so MLLP can answer AA; if it cannot within
publish_timeout, StorageUnavailable, so the sender gets AE and sends again.

Group commit, as the embedded event log does it: publishes that arrive within `linger`
of each other go out together, one record per facility holding all their events (a JSON
array, at most MAX_EVENTS). A Faust worker pays a fixed cost per record (about 65 µs here,
however small the record: bench/kafka_worker.py), so under load a record carries many
events; when traffic is light each record carries one message's events and waits `linger`
at most.

A message sent again after a lost ACK is recognised here by its key while this process
remembers it; the workers also drop an event whose source_id they have already counted.

With runtime.kafka.raw.enabled the connectors' pipeline hands each accepted input, as
received, to `publish_raw` before it answers: one record in `<prefix>.raw.<source>`, stamped
with the receive time (what `carescore remap` seeks by) and acknowledged like the events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka import AIOKafkaProducer

from carescore.transports.kafka.security import client_options
from carescore.transports.kafka.topics import events_topic, raw_topic
from engine.bus import Published, RawInput, StorageUnavailable
from engine.config import KafkaSettings
from engine.dedupe import RecentKeys
from engine.events import EventBase, dump_events

log = logging.getLogger(__name__)

REMEMBER = 200_000
MAX_EVENTS = 500  # per record: ~150 KB of JSON, well inside Kafka's 1 MB default


class KafkaSink:
    def __init__(self, settings: KafkaSettings, linger: float = 0.005):
        self.settings = settings
        self.linger = linger
        self.producer: AIOKafkaProducer | None = None
        self.seen = RecentKeys(REMEMBER)
        self.produced = 0
        self.records = 0
        self.raw_records = 0
        self.keeps_raw = settings.raw.enabled  # the pipeline asks: publish_raw only then
        self.topic = events_topic(settings)
        self._pending: list[tuple[list[EventBase], asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._inflight: dict[str, asyncio.Future[None]] = {}

    async def start(self) -> None:
        self.producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.bootstrap,
            acks="all",
            enable_idempotence=True,
            linger_ms=2,
            request_timeout_ms=int(self.settings.publish_timeout * 1000),
            max_request_size=self.settings.raw.max_bytes if self.keeps_raw else 1024 * 1024,
            **client_options(self.settings),
        )
        await self.producer.start()

    async def publish(self, message_key: str, events: list[EventBase]) -> Published:
        if message_key in self.seen:
            return Published.duplicate
        earlier = self._inflight.get(message_key)
        if earlier is not None:  # the same message twice at once (a feed file repeating a row)
            with contextlib.suppress(Exception):  # if that one failed, this one tries itself
                await asyncio.wait_for(asyncio.shield(earlier), self.settings.publish_timeout)
            stored = earlier.done() and not earlier.cancelled() and earlier.exception() is None
            return Published.duplicate if stored else await self.publish(message_key, events)
        if events:
            if self.producer is None:
                raise StorageUnavailable("the Kafka producer is not started")
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._pending.append((events, fut))
            self._inflight[message_key] = fut
            if self._flusher is None:
                self._flusher = asyncio.create_task(self._flush_soon())
            try:
                await asyncio.wait_for(asyncio.shield(fut), self.settings.publish_timeout)
            except Exception as exc:
                raise StorageUnavailable(f"Kafka did not acknowledge: {type(exc).__name__}: {exc}") from exc
            finally:
                if self._inflight.get(message_key) is fut:
                    del self._inflight[message_key]
            self.produced += len(events)
        self.seen.add(message_key)
        return Published.accepted

    async def publish_raw(self, raw: RawInput) -> None:
        """One accepted input as received, acknowledged by all in-sync replicas, or
        StorageUnavailable (its sender is then answered as if the events had failed)."""
        if self.producer is None:
            raise StorageUnavailable("the Kafka producer is not started")
        headers = [
            ("received", str(int(raw.received * 1000)).encode()),
            ("connector", raw.connector.encode()),
            ("content-type", raw.content_type.encode()),
            ("key", raw.key.encode("utf-8", "surrogateescape")),
            ("detail", raw.detail.encode("utf-8", "surrogateescape")),
        ]
        producer = self.producer

        async def send() -> None:
            sent = await producer.send(
                raw_topic(self.settings, raw.source),
                raw.body,
                key=raw.facility.encode() if raw.facility else None,
                headers=headers,
                timestamp_ms=int(raw.received * 1000),
            )
            await sent

        try:
            await asyncio.wait_for(send(), self.settings.publish_timeout)
        except Exception as exc:
            why = f"{type(exc).__name__}: {exc}"
            raise StorageUnavailable(f"Kafka did not acknowledge the raw record: {why}") from exc
        self.raw_records += 1

    async def _flush_soon(self) -> None:
        await asyncio.sleep(self.linger)
        batch, self._pending = self._pending, []
        self._flusher = None  # publishes from now on form the next batch
        try:
            await self._send([e for events, _ in batch for e in events])
        except Exception as exc:
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
                    fut.exception()  # retrieved: a publisher that timed out no longer awaits it
        else:
            for _, fut in batch:
                if not fut.done():
                    fut.set_result(None)

    async def _send(self, events: list[EventBase]) -> None:
        assert self.producer is not None
        by_facility: dict[str, list[EventBase]] = {}
        for e in events:  # in order: per facility, the order they were accepted
            by_facility.setdefault(e.facility, []).append(e)
        sends = []
        for facility, mine in by_facility.items():
            for i in range(0, len(mine), MAX_EVENTS):
                value = dump_events(mine[i : i + MAX_EVENTS])
                sends.append(await self.producer.send(self.topic, value, key=facility.encode()))
        await asyncio.gather(*sends)
        self.records += len(sends)

    async def close(self) -> None:
        if self._flusher is not None:
            await self._flusher
        if self.producer is not None:
            await self.producer.stop()
