"""Topic names and their creation.

One canonical events topic, keyed by facility: every event of a facility lands in one
partition, in the order it was stored, so the engine sees encounters, labs, nurse calls and
feed rows in the same order the embedded log would (DESIGN.md's per-family topics would let
one family run ahead of another and turn in-order events into late ones). A worker owns
whole partitions, so a facility's roll-ups stay in one engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from carescore.transports.kafka.security import client_options
from engine.config import KafkaSettings

log = logging.getLogger(__name__)


def events_topic(settings: KafkaSettings) -> str:
    return f"{settings.topic_prefix}.events"


def samples_topic(settings: KafkaSettings) -> str:
    return f"{settings.topic_prefix}.kpi.samples"


async def ensure_topics(settings: KafkaSettings, attempts: int = 30) -> None:
    """Create the topics carescore needs (idempotent); waits for the broker to answer."""
    wanted = [
        NewTopic(events_topic(settings), settings.partitions, settings.replication),
        NewTopic(samples_topic(settings), settings.partitions, settings.replication),
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
