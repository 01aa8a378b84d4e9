"""One ingest pipeline under every connector: keys, publishing, dead letters, metrics.

HL7 v2, FHIR and the feeds are mappers: each reads its protocol, maps what it read to
canonical events or raises InputRejected, and renders its own answer (an ACK with ERR, an
OperationOutcome, a feed file's row account). Everything between mapping and answering is
here, once:

- pseudonyms: patient and encounter identifiers are replaced by keyed pseudonyms
  (engine/privacy.py) here, before any event reaches a runtime, its log, Kafka or a snapshot;
- keys: what makes an input the same input again (an HL7 message's facility, control id and
  content; each FHIR or feed event's own source_id; an import batch's first and last event);
- publishing: the sink's future without a coroutine per input when the sink offers one
  (`publish_nowait`, probed once), or its blocking `ingest_now` for loop-less bulk imports;
- raw records: an accepted input exactly as received (`RawInput`) goes to a sink that keeps
  them (`keeps_raw` and `publish_raw`: the Kafka runtime's raw topics) before it is answered,
  with its events (`publish(..., raw=)`: an HL7 message) or after them (`record`: a FHIR
  request, a feed file); a raw record that cannot be stored fails the input like its events;
- dead letters: a rejected input is kept raw with its reason; a store that cannot take it
  is logged, never the sender's problem;
- metrics: each connector's counters, with their labelled children cached;
- one result type, `Result`, for what became of an input whatever its protocol.

Live traffic (MLLP, POST /fhir, feed uploads, the watched inbox), `carescore import
hl7|fhir|feed|mimic` and dead-letter replay all go through it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from connectors.deadletters import DeadLetterStore
from engine.bus import EventSink, Published, RawInput, Then
from engine.dedupe import batch_key as import_key
from engine.events import EventBase
from engine.privacy import Pseudonyms

log = logging.getLogger(__name__)


class InputRejected(ValueError):
    """One input (a message, a resource, a row) that cannot be taken: `reason` says why,
    `where` names the field in the sender's own terms (PV1-3, Encounter.period.start,
    shift_end). A connector's subclass carries what its protocol answers with: the HL7 ACK
    code and ERR location (MappingError), the HTTP status and OperationOutcome issues
    (FHIRInputError), the feed row's column (RowError)."""

    def __init__(self, reason: str, where: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.where = where


@dataclass(slots=True)
class Result:
    """What became of one input (an HL7 message, a FHIR request, a feed file).

    `code` is the protocol's answer code (AA/AE/AR, an HTTP status); `taken` whether it was
    stored (or had been, or carried nothing to store) rather than rejected; `text` the note or
    the reason; `events` how many events it mapped to, `new` how many of them were stored now;
    `duplicate` that it (a feed file: rows of it) had been stored before; `dead_letter` the
    letter a rejection was kept as; `answer` what the sender reads (the ACK, the
    OperationOutcome or Bundle, the feed file's account)."""

    code: str
    taken: bool
    text: str = ""
    events: int = 0
    new: int = 0
    duplicate: bool = False
    dead_letter: int | None = None
    answer: Any = None

    @property
    def ack(self) -> str:
        """HL7's name for the code."""
        return self.code

    @property
    def reply(self) -> Any:
        """HL7's name for the answer: the ACK message."""
        return self.answer


# -- keys ---------------------------------------------------------------------------------
def digest(content: str) -> str:
    """The one content digest in keys and ids (20 hex digits): whatever a source sends, the same
    content gives the same digest (undecodable bytes kept as surrogates count too)."""
    return hashlib.blake2b(content.encode("utf-8", "surrogateescape"), digest_size=10).hexdigest()


def message_key(sender: str, control: str, content: str) -> str:
    """A whole message's idempotency key: who sent it, its control id and a digest of its
    content (control ids get reused, so the same id with other content is another message)."""
    return f"{sender}|{control}|{digest(content)}"


def batch_key(events: Sequence[EventBase]) -> str:
    """An import batch's key (engine/dedupe.py): a batch imported again is a duplicate."""
    return import_key(events[0].source_id, events[-1].source_id)


# -- metrics ------------------------------------------------------------------------------
_CHILDREN: dict[tuple[Any, tuple[str, ...]], Any] = {}


def counted(metric: Any, *labels: str) -> Any:
    """The metric's child for these labels, looked up once (labels() costs a lock and a dict
    build per call; connectors count every input)."""
    child = _CHILDREN.get((metric, labels))
    if child is None:
        child = _CHILDREN[(metric, labels)] = metric.labels(*labels)
    return child


# -- the pipeline -------------------------------------------------------------------------
class Pipeline:
    """Every connector over one sink and one dead-letter store.

    `pseudonyms`: what identifiers become before they are published; None keeps them as sent
    (mapping tests only: every composition root, connectors/intake.py, passes the key's)."""

    def __init__(self, sink: EventSink, dead_letters: DeadLetterStore, pseudonyms: Pseudonyms | None = None):
        self.sink = sink
        self.dead_letters = dead_letters
        self.pseudonyms = pseudonyms
        # the sink probe, once: a future without a coroutine per input, and a blocking publish
        self._nowait: Callable[[str, list[EventBase], Then | None], asyncio.Future[Published]] | None = (
            getattr(sink, "publish_nowait", None)
        )
        self._now: Callable[[str, list[EventBase]], Published] | None = getattr(sink, "ingest_now", None)
        self._raw: Callable[[RawInput], Awaitable[None]] | None = (
            getattr(sink, "publish_raw", None) if getattr(sink, "keeps_raw", False) else None
        )

    @property
    def keeps_raw(self) -> bool:
        return self._raw is not None

    def publish(
        self, key: str, events: list[EventBase], raw: RawInput | None = None, then: Then | None = None
    ) -> asyncio.Future[Published]:
        """The events under one key; the future resolves when they are durable (or raises
        StorageUnavailable). With `raw`, only when the raw record is durable too. `then(future)`
        once it is done: at once where the sink settles it (publish_nowait), else as a done
        callback."""
        if self.pseudonyms is not None:
            events = self.pseudonyms.apply(events)
        if self._nowait is not None and (raw is None or self._raw is None):
            return self._nowait(key, events, then)
        if self._nowait is not None:
            stored = self._nowait(key, events, None)
        else:
            stored = asyncio.ensure_future(self.sink.publish(key, events))
        if raw is not None and self._raw is not None:
            stored = asyncio.ensure_future(self._with_raw(stored, self._raw(raw)))
        if then is not None:
            stored.add_done_callback(then)
        return stored

    @staticmethod
    async def _with_raw(stored: asyncio.Future[Published], kept: Awaitable[None]) -> Published:
        """Both at once; the first failure (the other's is retrieved, not left unread)."""
        published, raw = await asyncio.gather(stored, kept, return_exceptions=True)
        for outcome in (published, raw):
            if isinstance(outcome, BaseException):
                raise outcome
        assert isinstance(published, Published)
        return published

    async def record(self, raw: RawInput) -> None:
        """An accepted input's raw record, when the sink keeps them; raises StorageUnavailable."""
        if self._raw is not None:
            await self._raw(raw)

    def publish_each(self, events: list[EventBase]) -> list[asyncio.Future[Published]]:
        """Each event under its own key (its source_id): an input sent again stores nothing
        new, and one that changed stores only what changed."""
        return [self.publish(e.source_id, [e]) for e in events]

    async def store_each(self, events: list[EventBase]) -> int:
        """publish_each, awaited: how many events were new."""
        if not events:
            return 0
        results = await asyncio.gather(*self.publish_each(events))
        return sum(1 for r in results if r == Published.accepted)

    def store_now(self, events: list[EventBase]) -> Published:
        """A bulk import's batch under its batch_key, blocking (no event loop): the sink's
        ingest_now, same de-duplication, one commit per batch."""
        if self._now is None:
            raise TypeError(f"{type(self.sink).__name__} takes no blocking imports")
        if self.pseudonyms is not None:
            events = self.pseudonyms.apply(events)
        return self._now(batch_key(events), events)

    def keep(
        self,
        source: str,
        reason: str,
        raw: bytes | str,
        *,
        what: str,
        detail: str | None = None,
        content_type: str = "text/plain",
    ) -> int | None:
        """Keep a rejected input as a dead letter: its id, or None when the store would not
        take it (logged: the sender's answer does not change). Thread-safe."""
        try:
            return self.dead_letters.add(source, reason, raw, detail=detail, content_type=content_type)
        except Exception:
            log.exception("could not keep a rejected %s in the dead-letter store", what)
            return None
