"""What every HL7 v2 message family's mapping shares: the error it raises, the context it maps
in, and the values it reads (times, places, identifiers) into the events it adds.

Field choices follow HL7's own v2-to-FHIR mapping (see connectors/hl7v2/mapping.py).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from connectors.hl7v2.dtm import parse_dtm
from connectors.hl7v2.parser import Message, Segment
from connectors.orders import OrderMemory
from connectors.pipeline import InputRejected
from connectors.pipeline import message_key as content_key
from connectors.places import PlaceLookup
from engine.codes import clean_code
from engine.events import EventBase
from engine.places import PlaceIndex, Places, UnknownPlace
from engine.timebounds import DEFAULT_BOUNDS, TimeBounds

_UNPRINTABLE_RAW = re.compile(r"[\x00-\x09\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029]")
_CONTROL_BYTES = bytes([*range(0x0A), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F])  # not CR, LF
_MARK_CONTROLS = bytes.maketrans(_CONTROL_BYTES, bytes(len(_CONTROL_BYTES)))


def may_hold_controls(msg: Message) -> bool:
    """Whether any value of the message can hold a control character: one raw (other than the
    segment separators) or an escape that makes one (\\Xhh\\, \\.br\\). A C-speed look per
    message, so that the events of the other 99.9 % are not inspected field by field."""
    raw = msg.raw
    if raw.isascii():  # bytes.translate is 3x quicker than a regex search here
        if raw.encode("ascii").translate(_MARK_CONTROLS).find(0) >= 0:
            return True
    elif _UNPRINTABLE_RAW.search(raw) is not None:
        return True
    esc = msg.enc.escape
    if not esc or raw.find(esc, 8) < 0:  # none past MSH-2 (^~\\&): most messages
        return False
    return esc + "X" in raw or esc + "." in raw


class MappingError(InputRejected):
    """The message was read but cannot become events (the pipeline's InputRejected).

    ack is 'AR' (reject: unsupported type, trigger or version) or 'AE' (error in content);
    code is from HL7 table 0357; segment/field say where (`where`: PV1-3, MSH, message).
    """

    def __init__(
        self,
        reason: str,
        *,
        ack: str = "AE",
        code: int = 207,
        segment: str | None = None,
        field: int | None = None,
        component: int | None = None,
    ):
        super().__init__(reason, f"{segment}-{field}" if segment and field else (segment or "message"))
        self.ack = ack
        self.code = code
        self.segment = segment
        self.field = field
        self.component = component


def required(segment: str, fld: int, what: str) -> MappingError:
    return MappingError(f"{segment}-{fld} ({what}) is required", code=101, segment=segment, field=fld)


class MapContext:
    """What mapping needs besides the message: places, the local zone, the receive time, and
    the lab orders seen so far (their priority, for receipts and results that omit it)."""

    __slots__ = (
        "bounds",
        "earliest",
        "index",
        "latest",
        "lookup",
        "orders",
        "places",
        "received",
        "timezone",
    )

    def __init__(
        self,
        places: Places | None = None,
        timezone: tzinfo = UTC,
        received: datetime | None = None,
        index: PlaceIndex | None = None,
        orders: OrderMemory | None = None,
        bounds: TimeBounds = DEFAULT_BOUNDS,
    ):
        self.places = places or Places()
        self.timezone = timezone
        self.received = received or datetime.now(UTC)
        self.index = index or self.places.index()
        self.lookup = PlaceLookup(self.index)
        self.orders = orders if orders is not None else OrderMemory()
        self.bounds = bounds
        # the times a message may carry (engine.max_future / max_age), as datetimes to compare
        self.latest = self.received + timedelta(seconds=bounds.max_future)
        self.earliest = self.received - timedelta(seconds=bounds.max_age)

    def at(self, received: datetime) -> MapContext:
        """The same context for a message received now (reuses the place index and orders)."""
        return MapContext(self.places, self.timezone, received, self.index, self.orders, self.bounds)


def message_key(msg: Message) -> str:
    """Idempotency key: sending facility + control id + content (control ids get reused).
    Kept on the message: mapping and the receiver both need it, and it hashes the whole text."""
    key = msg.key
    if key is None:
        key = msg.key = content_key(msg.sending_facility, msg.control_id, msg.raw)
    return key


class MapperBase:
    """State for mapping one message: its header, place, time and the events so far; the
    message families (adt, lab, nursecall, charges) add what they map."""

    def __init__(self, msg: Message, ctx: MapContext):
        self.msg = msg
        self.ctx = ctx
        self.key = message_key(msg)
        self.events: list[EventBase] = []
        self.unsafe = may_hold_controls(msg)

    # -- values --------------------------------------------------------------------------
    def time(self, seg: Segment | None, fld: int, what: str, required_: bool = True) -> datetime | None:
        if seg is None:
            return None
        raw = seg.first(fld)
        if not raw:
            if required_:
                raise required(seg.name, fld, what)
            return None
        try:
            value = parse_dtm(raw, self.ctx.timezone)
        except ValueError as exc:
            raise MappingError(
                f"{seg.name}-{fld} ({what}): {exc}", code=102, segment=seg.name, field=fld
            ) from exc
        ctx = self.ctx
        if value > ctx.latest or value < ctx.earliest:
            problem = ctx.bounds.problem(value, ctx.received)
            if problem is not None:
                raise MappingError(
                    f"{seg.name}-{fld} ({what}) {raw}: {problem}", code=102, segment=seg.name, field=fld
                )
        return value

    def event_time(self, *candidates: tuple[Segment | None, int]) -> datetime:
        for seg, fld in candidates:
            value = self.time(seg, fld, "event time", required_=False)
            if value is not None:
                return value
        msh_time = self.time(self.msg.msh, 7, "date/time of message", required_=False)
        if msh_time is None:
            raise required("MSH", 7, "date/time of message")
        return msh_time

    def place(self, pv1: Segment | None, fld: int = 3) -> dict[str, Any]:
        """facility/department/unit/bed from a PL field (point of care^room^bed^facility).
        A feed names the same few hundred beds over and over: answers are remembered."""
        key = ("hl7-pl", pv1.get_raw_first(fld) if pv1 is not None else "", self.msg.sending_facility)
        return self.ctx.lookup.remembered(key, lambda: self._place(pv1, fld))

    def _place(self, pv1: Segment | None, fld: int) -> dict[str, Any]:
        parts = pv1.components(fld, 4) if pv1 is not None else ("", "", "", "")
        unit_code, room, bed, facility_code = (clean_code(p) for p in parts)
        places = self.ctx.lookup
        try:
            facility = places.facility(facility_code or clean_code(self.msg.sending_facility))
        except UnknownPlace as exc:  # places.unknown: reject, or one unknown code too many
            segment, field = ("PV1", fld) if facility_code else ("MSH", 4)
            raise MappingError(str(exc), code=103, segment=segment, field=field) from None
        if not facility:
            raise MappingError(
                "no facility: PV1-3.4 and MSH-4 are both empty", code=101, segment="MSH", field=4
            )
        try:
            department, unit = places.unit(facility, unit_code or None)
        except UnknownPlace as exc:
            raise MappingError(str(exc), code=103, segment="PV1", field=fld) from None
        return {
            "facility": facility,
            "department": department,
            "unit": unit,
            "bed": f"{room}-{bed}" if room and bed else (bed or room or None),
        }

    def add(self, cls: type[EventBase], **fields: Any) -> None:
        fields.setdefault("received_time", self.ctx.received)
        fields["source"] = "hl7v2"
        fields["source_id"] = f"{self.key}#{len(self.events)}"
        if self.unsafe:  # every text an HL7 event carries is an identifier or a code
            for name, value in fields.items():
                if type(value) is str and not value.isprintable():
                    cleaned = clean_code(value)
                    fields[name] = cleaned if cleaned or cls.model_fields[name].is_required() else None
        self.events.append(cls.trusted(fields))

    def patient_id(self, pid: Segment | None) -> str | None:
        if pid is None:
            return None
        found = pid.first(3) or pid.first(2)
        if self.unsafe:
            found = clean_code(pid.first(3)) or clean_code(pid.first(2))
        return found or None

    def encounter_id(self, pid: Segment | None, pv1: Segment) -> str:
        visit = clean_code(pv1.first(19)) if self.unsafe else pv1.first(19)
        if visit:
            return visit
        account = pid.first(18) if pid is not None else ""
        if self.unsafe:
            account = clean_code(account)
        if account:
            return account
        raise MappingError(
            "PV1-19 (visit number) is required to follow an encounter (PID-18 account number is also empty)",
            code=101,
            segment="PV1",
            field=19,
        )
