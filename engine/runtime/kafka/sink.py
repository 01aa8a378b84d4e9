"""Connectors' events to Kafka: `publish` returns only when the broker acknowledged them
(acks=all, idempotent producer), so MLLP can answer AA; if it cannot within
publish_timeout, StorageUnavailable, so the sender gets AE and sends again.

A message sent again after a lost ACK is recognised here by its key while this process
remembers it; the workers also drop an event whose source_id they have already counted.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict

from aiokafka import AIOKafkaProducer

from engine.bus import Published, StorageUnavailable
from engine.config import KafkaSettings
from engine.events import EventBase, dump_event
from engine.runtime.kafka.topics import events_topic

log = logging.getLogger(__name__)

REMEMBER = 200_000


class KafkaSink:
    def __init__(self, settings: KafkaSettings):
        self.settings = settings
        self.producer: AIOKafkaProducer | None = None
        self.seen: OrderedDict[str, None] = OrderedDict()
        self.produced = 0
        self.topic = events_topic(settings)

    async def start(self) -> None:
        self.producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.bootstrap,
            acks="all",
            enable_idempotence=True,
            linger_ms=2,
            request_timeout_ms=int(self.settings.publish_timeout * 1000),
        )
        await self.producer.start()

    async def publish(self, message_key: str, events: list[EventBase]) -> Published:
        if message_key in self.seen:
            return Published.duplicate
        if events:
            if self.producer is None:
                raise StorageUnavailable("the Kafka producer is not started")
            try:
                await asyncio.wait_for(self._send(events), self.settings.publish_timeout)
            except Exception as exc:
                raise StorageUnavailable(f"Kafka did not acknowledge: {type(exc).__name__}: {exc}") from exc
            self.produced += len(events)
        self.seen[message_key] = None
        if len(self.seen) > REMEMBER:
            self.seen.popitem(last=False)
        return Published.accepted

    async def _send(self, events: list[EventBase]) -> None:
        assert self.producer is not None
        sends = [await self.producer.send(self.topic, dump_event(e), key=e.facility.encode()) for e in events]
        await asyncio.gather(*sends)

    async def close(self) -> None:
        if self.producer is not None:
            await self.producer.stop()
