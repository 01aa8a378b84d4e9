"""Where connectors put canonical events: the seam between connectors and runtimes.

The embedded runtime appends to the local event log; the Kafka runtime produces to topics.
`publish` returns only when the events are durable (fsync'd, or acknowledged by all
in-sync replicas), so a connector may then acknowledge its sender.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal, Protocol

from engine.events import EventBase


class Published(StrEnum):
    accepted = "accepted"
    duplicate = "duplicate"


class StorageUnavailable(RuntimeError):
    """The events could not be stored; the sender must not be told they were."""


Then = Callable[["asyncio.Future[Published]"], None]
"""Called with a publish's future as soon as it is done, in the callback that settles it: an
ACK that waited for a done callback would wait a turn of the event loop for each one."""


class EventSink(Protocol):
    async def publish(self, message_key: str, events: list[EventBase]) -> Published:
        """Store events under an idempotency key (same key again: duplicate, stored once)."""
        ...


RawSource = Literal["hl7", "fhir", "feeds"]


@dataclass(frozen=True, slots=True)
class RawInput:
    """One accepted input exactly as received (an HL7 message's bytes, a FHIR request body, a
    feed file), for a sink that keeps them (`publish_raw`: the Kafka runtime's raw topics).

    `source` picks the topic; `connector` says which door it came through (mllp, fhir:Encounter,
    feed:staffing); `key` is the idempotency key it was stored under; `facility` keys the
    record when the input names one; `detail` is what re-mapping needs besides the body (a
    feed's name and format, a FHIR request's resource type)."""

    source: RawSource
    body: bytes
    content_type: str
    connector: str
    received: float  # epoch seconds
    key: str = ""
    facility: str | None = None
    detail: str = ""
