"""Where connectors put canonical events: the seam between connectors and runtimes.

The embedded runtime appends to the local event log; the Kafka runtime produces to topics.
`publish` returns only when the events are durable (fsync'd, or acknowledged by all
in-sync replicas), so a connector may then acknowledge its sender.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol

from engine.events import EventBase


class Published(StrEnum):
    accepted = "accepted"
    duplicate = "duplicate"


class StorageUnavailable(RuntimeError):
    """The events could not be stored; the sender must not be told they were."""


class EventSink(Protocol):
    async def publish(self, message_key: str, events: list[EventBase]) -> Published:
        """Store events under an idempotency key (same key again: duplicate, stored once)."""
        ...
