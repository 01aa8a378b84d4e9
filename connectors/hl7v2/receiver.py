"""One HL7 v2 message in, one ACK out: decode, parse, map, store (connectors/pipeline.py),
acknowledge.

AA only after the sink says the events are durable. AR when the message cannot be read or
is of a type/version we do not take; AE when its content is wrong or it cannot be stored
now. Every AE/AR keeps the raw message in the dead-letter store with the reason.

A bug met by one message (any exception other than the mapping's own errors) answers that
message AE 207 "internal error" and keeps it as a dead letter, so it can be replayed once
fixed; the sender's connection and the messages after it carry on. A trigger event no KPI
uses (mapping.UNUSED_TRIGGERS) is acknowledged AA without events under
`hl7.unused_triggers: accept`, and counted by type.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Literal

from connectors.deadletters import DeadLetterStore
from connectors.hl7v2.ack import build_ack
from connectors.hl7v2.mapping import (
    MESSAGE_TYPES,
    REPLY_TYPES,
    UNUSED_TRIGGERS,
    MapContext,
    MappingError,
    map_message,
    message_key,
)
from connectors.hl7v2.parser import HL7ParseError, Message, is_batch, parse, split_batch
from connectors.hl7v2.senders import Sender
from connectors.metrics import (
    HL7_DUPLICATES,
    HL7_FACILITY_REFUSED,
    HL7_INTERNAL_ERRORS,
    HL7_MESSAGES,
    HL7_UNUSED,
)
from connectors.pipeline import Pipeline, Result, counted
from engine.bus import EventSink, Published, RawInput, StorageUnavailable
from engine.codes import clean_code
from engine.events import EventBase
from engine.privacy import Pseudonyms

log = logging.getLogger(__name__)

INTERNAL_ERROR_TEXT = "internal error while processing this message; it is kept for replay"
"""What the sender reads: nothing of the message or the exception (either may hold PHI)."""

UnusedTriggers = Literal["accept", "reject"]


def reply_type(msg: Message) -> str | None:
    return REPLY_TYPES.get((msg.message_type, msg.trigger))


def codec_of(raw: bytes) -> str:
    """The codec `decode` reads these bytes with (its text encodes back to them)."""
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return "latin-1"
    return "utf-8"


def decode(raw: bytes) -> str:
    """UTF-8 when it is valid UTF-8, else Latin-1 (what most v2 feeds without MSH-18 send)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


class HL7Receiver:
    def __init__(
        self,
        sink: EventSink,
        dead_letters: DeadLetterStore,
        context: MapContext,
        allowed_facilities: list[str] | None = None,
        unused_triggers: UnusedTriggers = "accept",
        pseudonyms: Pseudonyms | None = None,
    ):
        self.pipeline = Pipeline(sink, dead_letters, pseudonyms)
        self.context = context
        self.allowed = frozenset(allowed_facilities) if allowed_facilities else None
        self.unused_triggers: UnusedTriggers = unused_triggers

    def handle_frame(self, raw: bytes, sender: Sender | None = None) -> str | asyncio.Future[str]:
        """The reply for one MLLP frame: an ACK now (rejects), or a future ACK that resolves
        once the events are durable; an FHS/BHS batch gets a batch of ACKs. `sender`: who the
        connection's client certificate says it is (connectors/hl7v2/senders.py)."""
        text = decode(raw)
        if is_batch(text):
            return asyncio.ensure_future(self._batch(text, sender, codec_of(raw)))
        reply: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        outcome = self.receive(text, sender, raw, reply)
        if isinstance(outcome, Result):
            return outcome.answer  # type: ignore[no-any-return]
        return reply

    def for_sender(self, sender: Sender) -> Callable[[bytes], str | asyncio.Future[str]]:
        """The frame handler of one connection whose certificate names this sender."""
        return functools.partial(self.handle_frame, sender=sender)

    async def _batch(self, text: str, sender: Sender | None, codec: str) -> str:
        replies = []
        for m in split_batch(text):
            outcome = self.receive(m, sender, m.encode(codec))
            replies.append((outcome if isinstance(outcome, Result) else await outcome).answer)
        now = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
        return f"BHS|^~\\&|CARESCORE||||{now}\r" + "".join(replies) + f"BTS|{len(replies)}\r"

    async def handle(self, text: str, sender: Sender | None = None) -> Result:
        """One message to its outcome (tests, batches, replays)."""
        outcome = self.receive(text, sender)
        return outcome if isinstance(outcome, Result) else await outcome

    def receive(
        self,
        text: str,
        sender: Sender | None = None,
        raw: bytes | None = None,
        answer: asyncio.Future[str] | None = None,
    ) -> Result | asyncio.Future[Result]:
        """Parse, map and hand the events to the sink. Rejections are decided now; an
        accepted message's outcome is a future that resolves when the sink has stored it (and
        the message's raw record, `raw` the bytes as received: its text as UTF-8 if not given).
        `answer`, for an accepted message: also given the ACK text, in the same callback.
        Never raises: an unexpected error is this message's AE 207, not the connection's end."""
        msg: Message | None = None
        try:
            try:
                msg = parse(text)
            except HL7ParseError as exc:
                return self._reject(
                    None, text, "AR", exc.reason, 100 if exc.field is None else 102, "MSH", exc.field
                )
            return self._receive(msg, text, sender, raw, answer)
        except Exception as exc:
            return self._internal_error(msg, text, "map", exc)

    def _receive(
        self,
        msg: Message,
        text: str,
        sender: Sender | None,
        raw: bytes | None,
        answer: asyncio.Future[str] | None,
    ) -> Result | asyncio.Future[Result]:
        mtype = msg.message_type if msg.message_type in MESSAGE_TYPES else "other"
        if self.allowed is not None and clean_code(msg.sending_facility) not in self.allowed:
            reason = f"sending facility {msg.sending_facility!r} (MSH-4) is not on this listener's allow-list"
            return self._reject(msg, text, "AR", reason, 207, "MSH", 4, None, mtype)
        try:
            events = map_message(
                msg, self.context.at(datetime.now(UTC)), unused_triggers=self.unused_triggers
            )
        except MappingError as exc:
            return self._reject(
                msg, text, exc.ack, exc.reason, exc.code, exc.segment, exc.field, exc.component, mtype
            )
        if sender is not None:
            refused = self._outside_sender(msg, text, mtype, sender, events)
            if refused is not None:
                return refused
        unused = not events and (msg.message_type, msg.trigger) in UNUSED_TRIGGERS
        if unused and not self.pipeline.keeps_raw:
            return self._unused(msg, mtype)
        key = message_key(msg)
        record = None
        if self.pipeline.keeps_raw:  # kept as received, also a trigger no KPI uses yet: remap
            record = RawInput(
                "hl7",
                raw if raw is not None else text.encode("utf-8", "surrogateescape"),
                "x-application/hl7-v2+er7",
                "mllp" if raw is not None else "hl7v2",
                time.time(),
                key,
                events[0].facility if events else clean_code(msg.sending_facility) or None,
            )
        outcome: asyncio.Future[Result] = asyncio.get_running_loop().create_future()

        def done(result: asyncio.Future[Published]) -> None:
            try:
                if unused and result.exception() is None:
                    finished = self._unused(msg, mtype)
                else:
                    finished = self._stored(msg, text, mtype, len(events), result)
            except Exception as exc:  # a bug here would leave the sender waiting forever
                finished = self._internal_error(msg, text, "store", exc)
            if not outcome.done():
                outcome.set_result(finished)
            if answer is not None and not answer.done():
                answer.set_result(finished.answer)

        if unused and record is not None:
            asyncio.ensure_future(self._record_only(record)).add_done_callback(done)
        else:
            self.pipeline.publish(key, events, record, then=done)
        return outcome

    async def _record_only(self, record: RawInput) -> Published:
        """A message with no events to store: only its raw record."""
        await self.pipeline.record(record)
        return Published.accepted

    def _stored(
        self, msg: Message, text: str, mtype: str, count: int, result: asyncio.Future[Published]
    ) -> Result:
        try:
            published = result.result()
        except StorageUnavailable as exc:
            reason = f"could not store the events now ({exc}); resend later"
            return self._reject(msg, text, "AE", reason, 207, None, None, None, mtype)
        except Exception as exc:
            return self._internal_error(msg, text, "store", exc)
        duplicate = published is Published.duplicate
        if duplicate:
            HL7_DUPLICATES.inc()
        counted(HL7_MESSAGES, "AA", mtype).inc()
        note = "duplicate: already stored" if duplicate else ""
        ack = build_ack(msg, "AA", text=note, reply_type=reply_type(msg))
        return Result("AA", True, note, count, 0 if duplicate else count, duplicate, None, ack)

    def _outside_sender(
        self, msg: Message, text: str, mtype: str, sender: Sender, events: list[EventBase]
    ) -> Result | None:
        """AR for events of a facility the sender's certificate does not cover; the ERR names
        where the facility came from (PV1-3.4 when the location names one, else MSH-4)."""
        outside = sorted({e.facility for e in events} - sender.facilities)
        if not outside:
            return None
        HL7_FACILITY_REFUSED.inc()
        pv1 = msg.first("PV1")
        located = pv1 is not None and clean_code(pv1.get(3, 4)) != ""
        segment, field, component = ("PV1", 3, 4) if located else ("MSH", 4, None)
        reason = (
            f"facility {outside[0]} ({segment}-{field}{'.4' if located else ''}) is not one the client "
            f"certificate {sender.name!r} may send for"
        )
        return self._reject(msg, text, "AR", reason, 207, segment, field, component, mtype)

    def _unused(self, msg: Message, mtype: str) -> Result:
        """AA for a trigger no KPI uses: nothing to store, so nothing to wait for."""
        kind = f"{msg.message_type}^{msg.trigger}"  # bounded: only UNUSED_TRIGGERS get here
        HL7_UNUSED.labels(kind).inc()
        counted(HL7_MESSAGES, "AA", mtype).inc()
        log.debug("hl7 message of an unused trigger acknowledged", extra={"type": kind})
        note = "accepted; no KPI uses this trigger event"
        ack = build_ack(msg, "AA", text=note, reply_type=reply_type(msg))
        return Result("AA", True, note, answer=ack)

    def _internal_error(self, msg: Message | None, text: str, stage: str, exc: BaseException) -> Result:
        """AE 207 for a message that met a bug: logged with its traceback (for us), kept as a
        dead letter (for replay once fixed), counted; the sender only reads that it was an
        internal error."""
        HL7_INTERNAL_ERRORS.labels(stage).inc()
        where = _raised_at(exc)
        log.error(
            "hl7 message: internal error, answered AE and kept as a dead letter",
            exc_info=exc,
            extra={"stage": stage, "error": type(exc).__name__, "at": where},
        )
        mtype = "unreadable"
        if msg is not None:
            mtype = msg.message_type if msg.message_type in MESSAGE_TYPES else "other"
        doing = "mapping" if stage == "map" else "storing"
        kept = f"internal error ({type(exc).__name__} at {where}, while {doing}); replay once fixed"
        return self._reject(msg, text, "AE", INTERNAL_ERROR_TEXT, 207, None, None, None, mtype, kept=kept)

    def _reject(
        self,
        msg: Message | None,
        text: str,
        code: str,
        reason: str,
        error_code: int,
        segment: str | None,
        field: int | None,
        component: int | None = None,
        mtype: str = "unreadable",
        *,
        kept: str | None = None,
    ) -> Result:
        """AE/AR: counted, kept as a dead letter (with `kept` as its reason when the sender
        should read less than the operator), logged, answered with an ERR segment."""
        counted(HL7_MESSAGES, code, mtype).inc()
        where = f"{segment}-{field}" if segment and field else (segment or "message")
        why = f"{code} {error_code}: {kept or reason}"
        # the ACK goes out even when the store would not keep it; the log says what was lost
        letter = self.pipeline.keep("hl7v2", why, text, what="HL7 message", detail=where)
        control = msg.control_id if msg is not None else None
        log.info(
            "hl7 message rejected",
            extra={
                "ack": code,
                "error_code": error_code,
                "where": where,
                "reason": reason,
                "control_id": control,
                "dead_letter": letter,
            },
        )
        reply = build_ack(
            msg,
            code,
            reply_type=reply_type(msg) if msg is not None else None,
            text=reason,
            error_code=error_code,
            segment=segment,
            field=field,
            component=component,
        )
        return Result(code, False, reason, dead_letter=letter, answer=reply)


def _raised_at(exc: BaseException) -> str:
    """file:line of the innermost frame: where to look, without the exception's own text."""
    tb = exc.__traceback__
    if tb is None:
        return "?"
    while tb.tb_next is not None:
        tb = tb.tb_next
    code = tb.tb_frame.f_code
    return f"{code.co_filename.rsplit('/', 1)[-1]}:{tb.tb_lineno} {code.co_name}"
