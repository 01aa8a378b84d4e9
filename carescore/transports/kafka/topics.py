"""Topic names and their creation.

One canonical events topic, keyed by facility: every event of a facility lands in one
partition, in the order it was stored, so the engine sees encounters, labs, nurse calls and
feed rows in the same order the embedded log would (DESIGN.md's per-family topics would let
one family run ahead of another and turn in-order events into late ones). A worker owns
whole partitions, so a facility's roll-ups stay in one engine.

The raw inbound topics (`<prefix>.raw.hl7`, `.raw.fhir`, `.raw.feeds`, when
runtime.kafka.raw.enabled) hold every accepted input as received, PHI included, so they are
created with the configured retention.ms, never Kafka's default of forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from carescore.transports.kafka.security import client_options
from engine.bus import RawSource
from engine.config import KafkaSettings

log = logging.getLogger(__name__)


def events_topic(settings: KafkaSettings) -> str:
    return f"{settings.topic_prefix}.events"


def samples_topic(settings: KafkaSettings) -> str:
    return f"{settings.topic_prefix}.kpi.samples"


def raw_topic(settings: KafkaSettings, source: RawSource) -> str:
    return f"{settings.topic_prefix}.raw.{source}"


RAW_SOURCES: tuple[RawSource, ...] = ("hl7", "fhir", "feeds")


async def ensure_topics(settings: KafkaSettings, attempts: int = 30) -> None:
    """Create the topics carescore needs (idempotent); waits for the broker to answer."""
    wanted = [
        NewTopic(events_topic(settings), settings.partitions, settings.replication),
        NewTopic(samples_topic(settings), settings.partitions, settings.replication),
    ]
    raw = settings.raw
    if raw.enabled:
        configs = {"retention.ms": str(int(raw.retention * 1000)), "max.message.bytes": str(raw.max_bytes)}
        wanted += [
            NewTopic(raw_topic(settings, s), settings.partitions, settings.replication, topic_configs=configs)
            for s in RAW_SOURCES
        ]
    for attempt in range(attempts):
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap, **client_options(settings))
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            missing = [t for t in wanted if t.name not in existing]
            if missing:
                with contextlib.suppress(TopicAlreadyExistsError):  # another process was first
                    await admin.create_topics(missing)
                log.info("kafka topics created", extra={"topics": [t.name for t in missing]})
            return
        except Exception as exc:
            if attempt == attempts - 1:
                raise RuntimeError(f"Kafka at {settings.bootstrap} does not answer: {exc}") from exc
            await asyncio.sleep(1.0)
        finally:
            await admin.close()


async def partitions_of(settings: KafkaSettings, topic: str) -> list[int]:
    """The topic's partition numbers, as the broker has them now (none if it does not exist)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap, **client_options(settings))
    try:
        await admin.start()
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return sorted(p["partition"] for t in described if t["topic"] == topic for p in t["partitions"])
