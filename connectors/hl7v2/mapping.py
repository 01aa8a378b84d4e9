"""HL7 v2 messages -> canonical events.

Field choices follow HL7's own v2-to-FHIR mapping (see shared notes): PV1-3 is the
assigned location (point of care^room^bed^facility), PV1-6 the prior location, PV1-19 the
visit number, EVN-2 the event time; ORC-2/OBR-2 the placer order number, ORC-9 the order
time, OBR-7 collection, OBR-14 specimen received, OBR-22 result time, OBR-25 result status,
priority from TQ1-9, ORC-7.6 or OBR-27.6 (S = STAT).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from pydantic import ValidationError

from connectors.hl7v2.dtm import parse_dtm
from connectors.hl7v2.parser import Message, Segment
from connectors.orders import OrderMemory
from engine.codes import clean_code
from engine.events import EncounterEvent, EventBase, FinanceEvent, LabEvent, NurseCallEvent, ProcedureEvent
from engine.places import PlaceIndex, Places, UnknownPlace
from engine.timebounds import DEFAULT_BOUNDS, TimeBounds
from engine.vocabulary import HL7_PRIORITY, hl7_disposition, hl7_patient_class

SUPPORTED_VERSIONS = ("2.3", "2.4", "2.5", "2.6", "2.7", "2.8")

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


class MappingError(ValueError):
    """The message was read but cannot become events.

    ack is 'AR' (reject: unsupported type, trigger or version) or 'AE' (error in content);
    code is from HL7 table 0357; segment/field say where.
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
        super().__init__(reason)
        self.reason = reason
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

    __slots__ = ("bounds", "earliest", "index", "latest", "orders", "places", "received", "timezone")

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
        self.orders = orders if orders is not None else OrderMemory()
        self.bounds = bounds
        # the times a message may carry (engine.max_future / max_age), as datetimes to compare
        self.latest = self.received + timedelta(seconds=bounds.max_future)
        self.earliest = self.received - timedelta(seconds=bounds.max_age)

    def at(self, received: datetime) -> MapContext:
        """The same context for a message received now (reuses the place index and orders)."""
        return MapContext(self.places, self.timezone, received, self.index, self.orders, self.bounds)


def message_key(msg: Message) -> str:
    """Idempotency key: sending facility + control id + content (control ids get reused)."""
    digest = hashlib.blake2b(msg.raw.encode("utf-8", "surrogateescape"), digest_size=10).hexdigest()
    return f"{msg.sending_facility}|{msg.control_id}|{digest}"


PRIORITIES = HL7_PRIORITY

NURSE_CALL_START = frozenset({"start", "start only", "start-only", "present"})
NURSE_CALL_ACKNOWLEDGED = frozenset({"acknowledged", "ack", "alert-acknowledged", "alarm-acknowledged"})
NURSE_CALL_END = frozenset({"end", "stop"})
NURSE_CALL_CANCELLED = frozenset({"cancelled", "canceled", "cancel"})
STAFF_PRESENT = frozenset({"present", "start", "arrived", "in", "y", "yes", "true", "1"})

RESULT_STATUS = {
    "F": "final",
    "C": "corrected",
    "P": "preliminary",
    "R": "unverified",
    "I": "pending",
    "S": "partial",
    "A": "partial",
    "X": "cancelled",
    "O": "ordered",
    "D": "deleted",
    "Y": "no_order",
    "Z": "no_record",
}


class _Mapper:
    """State for mapping one message: its header, place, time and the events so far."""

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
        places = self.ctx.index
        assert places is not None
        key = ("hl7-pl", pv1.get_raw_first(fld) if pv1 is not None else "", self.msg.sending_facility)
        found = places.memo.get(key)
        if found is None:
            found = self._place(pv1, fld, places)
            if len(places.memo) > 100_000:
                places.memo.clear()
            places.memo[key] = found
        return found  # type: ignore[no-any-return]

    def _place(self, pv1: Segment | None, fld: int, places: PlaceIndex) -> dict[str, Any]:
        parts = pv1.components(fld, 4) if pv1 is not None else ("", "", "", "")
        unit_code, room, bed, facility_code = (clean_code(p) for p in parts)
        try:
            facility = places.facility_id(facility_code or clean_code(self.msg.sending_facility))
        except UnknownPlace as exc:  # places.unknown: reject, or one unknown code too many
            segment, field = ("PV1", fld) if facility_code else ("MSH", 4)
            raise MappingError(str(exc), code=103, segment=segment, field=field) from None
        if not facility:
            raise MappingError(
                "no facility: PV1-3.4 and MSH-4 are both empty", code=101, segment="MSH", field=4
            )
        try:
            department, unit = places.resolve(facility, unit_code or None)
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

    # -- ADT -----------------------------------------------------------------------------
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

    def adt(self, kind: str, pid: Segment | None = None, pv1: Segment | None = None) -> None:
        msg = self.msg
        evn = msg.first("EVN")
        pid = pid or msg.first("PID")
        pv1 = pv1 or msg.first("PV1")
        if pv1 is None:
            raise MappingError("PV1 segment is required for ADT events", code=100, segment="PV1")
        place = self.place(pv1)
        prior = self.place(pv1, 6) if pv1.first(6) else {}
        # when it happened, before when it was recorded: EVN-6 (event occurred), the
        # admission's PV1-44 or the discharge's PV1-45, then EVN-2 (recorded), then MSH-7
        occurred = OCCURRED_AT.get(kind)
        self.add(
            EncounterEvent,
            type=kind,
            event_time=self.event_time((evn, 6), (pv1, occurred) if occurred else (None, 0), (evn, 2)),
            encounter_id=self.encounter_id(pid, pv1),
            patient_id=self.patient_id(pid),
            patient_class=hl7_patient_class(pv1.first(2), pv1.first(18)),
            admit_time=self.time(pv1, 44, "admit date/time", required_=False),
            discharge_time=self.time(pv1, 45, "discharge date/time", required_=False),
            prior_unit=prior.get("unit"),
            prior_bed=prior.get("bed"),
            disposition=hl7_disposition(pv1.first(36)),
            **place,
        )

    def swap(self) -> None:
        """A17: two PID/PV1 pairs, each PV1-3 the patient's new bed."""
        pids = self.msg.all("PID")
        pv1s = self.msg.all("PV1")
        if len(pids) < 2 or len(pv1s) < 2:
            raise MappingError("A17 needs two PID/PV1 pairs", code=100, segment="PV1")
        ids = [self.encounter_id(pid, pv1) for pid, pv1 in zip(pids, pv1s, strict=False)]
        for i, (pid, pv1) in enumerate(zip(pids[:2], pv1s[:2], strict=False)):
            self.adt("encounter.swap_beds", pid, pv1)
            last = self.events[-1]
            self.events[-1] = last.model_copy(update={"other_encounter_id": ids[1 - i]})

    def merge(self) -> None:
        mrg = self.msg.first("MRG")
        pid = self.msg.first("PID")
        if mrg is None:
            raise MappingError("A40 needs an MRG segment", code=100, segment="MRG")
        prior = clean_code(mrg.first(1))
        if not prior:
            raise required("MRG", 1, "prior patient identifier")
        place = self.place(self.msg.first("PV1"))
        self.add(
            EncounterEvent,
            type="encounter.merge",
            event_time=self.event_time((self.msg.first("EVN"), 2)),
            encounter_id=clean_code(mrg.first(5)) or prior,
            patient_id=self.patient_id(pid),
            other_encounter_id=prior,
            **place,
        )

    # -- orders and results --------------------------------------------------------------
    def order_groups(self) -> list[tuple[Segment | None, Segment | None]]:
        """(ORC, OBR) pairs in message order; either may be missing in real feeds."""
        groups: list[tuple[Segment | None, Segment | None]] = []
        orc: Segment | None = None
        for seg in self.msg.segments:
            if seg.name == "ORC":
                if orc is not None:
                    groups.append((orc, None))
                orc = seg
            elif seg.name == "OBR":
                groups.append((orc, seg))
                orc = None
        if orc is not None:
            groups.append((orc, None))
        return groups

    def order_id(self, orc: Segment | None, obr: Segment | None) -> str:
        for seg, fld in ((orc, 2), (obr, 2), (orc, 3), (obr, 3)):
            if seg is not None:
                value = clean_code(seg.first(fld)) if self.unsafe else seg.first(fld)
                if value:
                    return value
        where = "ORC" if orc is not None else "OBR"
        raise MappingError(
            f"{where}-2 (placer order number) or {where}-3 (filler order number) is required",
            code=101,
            segment=where,
            field=2,
        )

    def priority(self, orc: Segment | None, obr: Segment | None, default: str | None = None) -> str | None:
        """TQ1-9, ORC-7.6, OBR-27.6 or OBR-5; orders default to routine (HL7's default),
        results say nothing rather than guess."""
        anchor = orc or obr
        tq1 = None
        if anchor is not None and "TQ1" in self.msg.raw:  # a C-speed look before the walk
            tq1 = self.msg.after(anchor, "TQ1", stop=("ORC", "OBR"))
        for seg, fld, comp in ((tq1, 9, 1), (orc, 7, 6), (obr, 27, 6), (obr, 5, 1)):
            if seg is None:
                continue
            code = seg.get(fld, comp)
            if code:
                return PRIORITIES.get(code.upper(), code.lower())
        return default

    def lab_common(self, orc: Segment | None, obr: Segment | None, order: bool = False) -> dict[str, Any]:
        """order: a new order (its priority defaults to routine, HL7's default). A status
        change, receipt or result that does not state a priority takes the one its order
        stated, when carescore saw the order (MapContext.orders), else None."""
        pv1 = self.msg.first("PV1")
        pid = self.msg.first("PID")
        place = self.place(pv1) if pv1 is not None else self.place(None)
        order_id = self.order_id(orc, obr)
        memory = self.ctx.orders
        priority = self.priority(orc, obr)
        if priority is None and not order:
            priority, place = memory.fill(order_id, None, place)
        elif priority is None:
            priority = "routine"
        if priority is not None:
            memory.remember(order_id, priority, place)
        return {
            "order_id": order_id,
            "patient_id": self.patient_id(pid),
            "encounter_id": (pv1.first(19) or None) if pv1 is not None else None,
            "priority": priority,
            "test_code": (obr.first(4) or None) if obr is not None else None,
            **place,
        }

    def orders(self) -> None:
        """ORM^O01 / OML^O21: new orders, cancels, specimen status changes."""
        groups = self.order_groups()
        if not groups:
            raise MappingError("an order message needs an ORC or OBR segment", code=100, segment="ORC")
        for orc, obr in groups:
            control = orc.first(1).upper() if orc is not None else "NW"
            new = control in ("NW", "SN", "XO", "RO") or not control
            common = self.lab_common(orc, obr, order=new)
            if new:
                when = self.event_time((orc, 9), (obr, 6))
                self.add(LabEvent, type="lab.order", event_time=when, **common)
            elif control in ("CA", "OC", "CR", "DC", "OD", "DR"):
                when = self.event_time((orc, 9))
                self.add(LabEvent, type="lab.cancel", event_time=when, **common)
            elif control not in ("SC", "SS", "RE", "OK", "CM", "IP"):
                raise MappingError(
                    f"ORC-1 order control {control!r} is not supported",
                    code=103,
                    segment="ORC",
                    field=1,
                )
            self.specimen_steps(obr, common)

    def specimen_steps(self, obr: Segment | None, common: dict[str, Any]) -> None:
        if obr is None:
            return
        collected = self.time(obr, 7, "observation date/time", required_=False)
        if collected is not None:
            self.add(LabEvent, type="lab.collect", event_time=collected, **common)
        received = self.time(obr, 14, "specimen received date/time", required_=False)
        if received is not None:
            self.add(LabEvent, type="lab.receive", event_time=received, **common)

    def results(self) -> None:
        """ORU^R01: one result per OBR, at OBR-22 with status OBR-25."""
        groups = [(orc, obr) for orc, obr in self.order_groups() if obr is not None]
        if not groups:
            raise MappingError("ORU^R01 needs an OBR segment", code=100, segment="OBR")
        for orc, obr in groups:
            assert obr is not None
            common = self.lab_common(orc, obr)
            self.specimen_steps(obr, common)
            status_code = obr.first(25).upper()
            status = RESULT_STATUS.get(status_code, status_code.lower() or "final")
            when = self.event_time((obr, 22))
            self.add(LabEvent, type="lab.result", event_time=when, result_status=status, **common)

    # -- nurse call (IHE PCD Alarm Communication Management) ----------------------------------
    def nurse_call(self) -> None:
        """ORU^R40 (IHE PCD ACM, PCD-04 Report Alert): one alert per OBR (OBR-3 the alert id);
        its OBX rows carry the event phase (MDC_ATTR_EVENT_PHASE), the alert inactivation
        state (MDC_ATTR_ALARM_INACTIVATION_STATE) and the priority. Mapped:

        - phase start (start only, present) -> nursecall.placed;
        - inactivation state acknowledged (alert-acknowledged) -> nursecall.acknowledged;
        - an OBX reporting staff presence in the room (identifier naming PRESENCE, a value
          such as present / start / Y) -> nursecall.arrived. ACM defines no staff-presence
          observation: this follows nurse-call vendors that send one; others never send it;
        - phase end -> nursecall.ended: the call is over, in the room (ended at the bedside,
          usually by the caregiver who answered it). It is a response, not a withdrawal: the
          response KPIs take whichever of acknowledged, arrived and ended came first;
        - ACM has no value that says the patient withdrew the call: an end looks the same
          whether a nurse answered at the bedside or the patient pressed cancel, so it counts
          as answered then. Only a sender's explicit phase 'cancelled' / 'cancel' (not an ACM
          value) maps to nursecall.cancelled, which drops the call from the response KPIs.

        escalate / de-escalate change the alert's priority (by the device or by the alert
        manager when nobody answered): they answer nothing. Event time: OBR-7, else the first
        OBX-14, else MSH-7, taken as the time of the phase change this message reports."""
        obrs = self.msg.all("OBR")
        if not obrs:
            raise MappingError("ORU^R40 needs an OBR segment per alert", code=100, segment="OBR")
        pid = self.msg.first("PID")
        for obr in obrs:
            call_id = clean_code(obr.first(3)) or clean_code(obr.first(2))
            if not call_id:
                raise required("OBR", 3, "alert identifier (filler order number)")
            phase, state, priority, presence = "", "", "", ""
            seg: Segment | None = obr
            while True:
                seg = self.msg.after(seg, "OBX", stop=("OBR",)) if seg is not None else None
                if seg is None:
                    break
                code = seg.get(3, 2).upper() or seg.first(3).upper()
                value = seg.first(5).lower()
                if "EVENT_PHASE" in code or code == "68481":
                    phase = value
                elif "INACTIVATION_STATE" in code or code == "68483":
                    state = value
                elif "ALARM_PRIORITY" in code or code == "68484":
                    priority = value
                elif "PRESENCE" in code or "PRESENCE" in seg.first(3).upper():
                    presence = value
            place = self.place(self.msg.first("PV1")) if self.msg.first("PV1") else self.place(None)
            when = self.event_time((obr, 7), (self.msg.after(obr, "OBX", stop=("OBR",)), 14))
            common = {
                "call_id": call_id,
                "patient_id": self.patient_id(pid),
                "priority": priority or "normal",
                "event_time": when,
                **place,
            }
            if phase in NURSE_CALL_START:
                self.add(NurseCallEvent, type="nursecall.placed", **common)
            if state in NURSE_CALL_ACKNOWLEDGED or phase == "acknowledged":
                self.add(NurseCallEvent, type="nursecall.acknowledged", **common)
            if presence in STAFF_PRESENT:
                self.add(NurseCallEvent, type="nursecall.arrived", **common)
            if phase in NURSE_CALL_END:
                self.add(NurseCallEvent, type="nursecall.ended", **common)
            elif phase in NURSE_CALL_CANCELLED:
                self.add(NurseCallEvent, type="nursecall.cancelled", **common)
            if not phase and not state and not presence:
                raise MappingError(
                    f"alert {call_id}: no OBX with MDC_ATTR_EVENT_PHASE or MDC_ATTR_ALARM_INACTIVATION_STATE",
                    code=101,
                    segment="OBX",
                    field=3,
                )

    def procedures(self) -> None:
        """PR1 segments of a DFT: one procedure.performed each, at PR1-5 (see charges())."""
        for pr1, ft1 in self.procedure_rows():
            self.procedure(pr1, ft1)

    def procedure_rows(self) -> list[tuple[Segment, Segment | None]]:
        """(PR1, the FT1 it follows) in message order: a DFT's FINANCIAL group is an FT1 and
        the PR1s of that transaction (v2.3-2.8); a PR1 before any FT1 has none."""
        rows: list[tuple[Segment, Segment | None]] = []
        ft1: Segment | None = None
        for seg in self.msg.segments:
            if seg.name == "FT1":
                ft1 = seg
            elif seg.name == "PR1":
                rows.append((seg, ft1))
        return rows

    def procedure(self, pr1: Segment, ft1: Segment | None) -> None:
        """One procedure performed: at the performing place (PR1-23 treating organizational unit,
        else its transaction's FT1-16/FT1-13, else PV1-3), with a stable identity: PR1-19
        (procedure identifier), else a hash of patient, visit, code (PR1-3) and time (PR1-5).
        Billing resends the PR1 with every charge message: the identity lets the count take it
        once (`distinct: procedure_id`)."""
        pid = self.msg.first("PID")
        pv1 = self.msg.first("PV1")
        when = self.event_time((pr1, 5))
        patient = self.patient_id(pid)
        visit = (pv1.first(19) or None) if pv1 is not None else None
        code = pr1.first(3) or None
        place = self.performed_at(pr1, ft1)
        identifier = pr1.first(19)
        if identifier:
            namespace = pr1.get(19, 2) or pr1.get(19, 3)
            procedure_id = f"{place['facility']}|PR1-19|{namespace}|{identifier}"
        else:
            content = f"{patient}|{visit}|{code}|{when.astimezone(UTC).isoformat()}"
            digest = hashlib.blake2b(content.encode(), digest_size=10).hexdigest()
            procedure_id = f"{place['facility']}|{digest}"
        self.add(
            ProcedureEvent,
            type="procedure.performed",
            event_time=when,
            procedure_id=procedure_id,
            procedure_code=code,
            patient_id=patient,
            encounter_id=visit,
            **place,
        )

    def performed_at(self, pr1: Segment | None, ft1: Segment | None) -> dict[str, Any]:
        """The performing cost centre: PR1-23 (v2.7+), FT1-16, FT1-13 department code when it
        is a configured unit, else the patient's location PV1-3."""
        if pr1 is not None and pr1.first(23):
            return self.place(pr1, 23)
        if ft1 is not None and ft1.first(16):
            return self.place(ft1, 16)
        pv1 = self.msg.first("PV1")
        place = self.place(pv1)
        department_code = clean_code(ft1.first(13)) if ft1 is not None else ""
        if department_code:
            department, unit = self.ctx.index.resolve(
                place["facility"], department_code, admit=False
            )  # a probe
            if unit is not None and department is not None:
                return {"facility": place["facility"], "department": department, "unit": unit, "bed": None}
        return place

    # -- charges ------------------------------------------------------------------------
    def charges(self) -> None:
        """DFT^P03/P11: one finance.charge per FT1 and one procedure.performed per PR1.

        Charge amount FT1-11 (extended) or FT1-12 x FT1-10; credits, payments and adjustments
        (FT1-6 CD/PY/AJ) are negative; placed at the performing cost centre (performed_at);
        FT1-25 procedure code. A PR1 counts as a procedure only in a charge (FT1-6 CG or empty)
        transaction: the PR1 repeated in a credit or reversal DFT, or one with PR1-20 action
        code D (delete), adds no procedure."""
        ft1s = self.msg.all("FT1")
        if not ft1s:
            raise MappingError("DFT^P03 needs at least one FT1 segment", code=100, segment="FT1")
        any_charge = any(not _is_credit(ft1) for ft1 in ft1s)
        for pr1, owner in self.procedure_rows():
            if pr1.first(20).upper() == "D":
                continue
            if (owner is not None and _is_credit(owner)) or (owner is None and not any_charge):
                continue
            self.procedure(pr1, owner)
        pid = self.msg.first("PID")
        for ft1 in ft1s:
            when = self.event_time((ft1, 4))
            quantity = _number(ft1, 10, "quantity", default=1.0)
            extended = _number(ft1, 11, "extended amount")
            unit_amount = _number(ft1, 12, "unit amount")
            if extended is None and unit_amount is None:
                raise required("FT1", 11, "extended amount (or FT1-12 unit amount)")
            amount = extended if extended is not None else (unit_amount or 0.0) * (quantity or 1.0)
            if _is_credit(ft1) and amount > 0:
                amount = -amount  # credits, payments and adjustments reduce the charges
            procedure = ft1.first(25) or None
            self.add(
                FinanceEvent,
                type="finance.charge",
                event_time=when,
                category="procedure" if procedure else "charge",
                amount=amount,
                currency=ft1.get(11, 2) or "USD",
                procedure_code=procedure,
                patient_id=self.patient_id(pid),
                **self.performed_at(None, ft1),
            )


def _is_credit(ft1: Segment) -> bool:
    """FT1-6 transaction type (HL7 table 0017): CD credit, PY payment, AJ adjustment."""
    return ft1.first(6).upper() in ("CD", "PY", "AJ")


OCCURRED_AT = {"encounter.admit": 44, "encounter.register": 44, "encounter.discharge": 45}
"""The PV1 field that holds when an ADT event happened: admit (PV1-44) or discharge (PV1-45)
date/time. Later messages repeat PV1-44, so it is read only for the admission itself."""


def _number(seg: Segment, fld: int, what: str, default: float | None = None) -> float | None:
    raw = seg.first(fld)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise MappingError(
            f"{seg.name}-{fld} ({what}) {raw!r} is not a number", code=102, segment=seg.name, field=fld
        ) from exc
    if not math.isfinite(value):  # 'nan', 'inf', '1e999': no amount, and JSON cannot carry it
        raise MappingError(
            f"{seg.name}-{fld} ({what}) {raw!r} is not a finite number", code=102, segment=seg.name, field=fld
        )
    return value


ADT_TRIGGERS: dict[str, Callable[[_Mapper], None]] = {
    "A01": lambda m: m.adt("encounter.admit"),
    "A02": lambda m: m.adt("encounter.transfer"),
    "A03": lambda m: m.adt("encounter.discharge"),
    "A04": lambda m: m.adt("encounter.register"),
    "A05": lambda m: m.adt("encounter.preadmit"),
    "A06": lambda m: m.adt("encounter.admit"),
    "A07": lambda m: m.adt("encounter.update"),
    "A08": lambda m: m.adt("encounter.update"),
    "A11": lambda m: m.adt("encounter.cancel_admit"),
    "A12": lambda m: m.adt("encounter.cancel_transfer"),
    "A13": lambda m: m.adt("encounter.cancel_discharge"),
    "A17": lambda m: m.swap(),
    "A21": lambda m: m.adt("encounter.leave_start"),
    "A22": lambda m: m.adt("encounter.leave_end"),
    "A40": lambda m: m.merge(),
}

MESSAGE_TYPES: dict[str, dict[str, Callable[[_Mapper], None]]] = {
    "ADT": ADT_TRIGGERS,
    "ORM": {"O01": _Mapper.orders},
    "OML": {"O21": _Mapper.orders},
    "ORU": {"R01": _Mapper.results, "R40": _Mapper.nurse_call},
    "DFT": {"P03": _Mapper.charges, "P11": _Mapper.charges},
}

_TRACKING = (
    "patient tracking (a trip to a temporary location such as radiology): the assigned bed "
    "(PV1-3) does not change, and leave_start/leave_end (A21/A22, leave of absence) would take "
    "the patient out of the census"
)
_PENDING = "a plan, not a movement: no canonical event says 'pending', and no KPI counts plans"
_CANCEL_PENDING = (
    "cancels a plan: encounter.cancel_admit/cancel_transfer/cancel_discharge withdraw an admission, "
    "transfer or discharge that happened (A11-A13), so they would erase real facts"
)
_PERSON = "person or account master data without a visit: no KPI reads it"

UNUSED_TRIGGERS: dict[tuple[str, str], str] = {
    ("ADT", "A09"): _TRACKING,
    ("ADT", "A10"): _TRACKING,
    ("ADT", "A32"): _TRACKING + " (cancels an A10)",
    ("ADT", "A33"): _TRACKING + " (cancels an A09)",
    ("ADT", "A14"): _PENDING + "; HL7 itself sets A14 apart from the pre-admit A05",
    ("ADT", "A15"): _PENDING,
    ("ADT", "A16"): _PENDING,
    ("ADT", "A25"): _CANCEL_PENDING,
    ("ADT", "A26"): _CANCEL_PENDING,
    ("ADT", "A27"): _CANCEL_PENDING,
    ("ADT", "A38"): "cancels a pre-admit (A05), which no KPI reads",
    ("ADT", "A24"): _PERSON + " (link patients)",
    ("ADT", "A37"): _PERSON + " (unlink patients)",
    ("ADT", "A28"): _PERSON,
    ("ADT", "A29"): _PERSON,
    ("ADT", "A31"): _PERSON,
    ("ADT", "A41"): "merges account numbers; encounters are followed by the visit number (PV1-19)",
    ("ADT", "A45"): "moves a visit to another patient: no canonical event re-assigns an encounter",
    ("ADT", "A47"): "changes a patient identifier; encounter.merge (A40) merges two patients",
    ("ADT", "A54"): _PERSON + " (attending doctor)",
    ("ADT", "A55"): _PERSON + " (attending doctor change cancelled)",
    ("ADT", "A60"): _PERSON + " (allergies)",
    ("ADT", "A61"): _PERSON + " (consulting doctor)",
    ("ADT", "A62"): _PERSON + " (consulting doctor change cancelled)",
}
"""HL7 trigger events of a type we take that carry nothing a KPI uses, and why each is not
mapped to a canonical event. With `hl7.unused_triggers: accept` they are acknowledged AA and
counted (a real ADT feed sends them all day: AR would fill the dead letters and alarm the
sender's interface engine); with `reject` they get AR 201. Other unknown triggers (A20 bed
status, A23 delete visit, merges and moves other than these) stay AR 201: they may carry
meaning nobody has mapped yet, and a dead letter can be replayed once someone does."""

REPLY_TYPES = {("ORU", "R40"): "ORA^R41^ORA_R41"}
"""Message types answered with something other than ACK (IHE PCD ACM expects ORA^R41)."""


_HEADERS_OK: set[tuple[str, str, str]] = set()


def check_header(msg: Message, unused_triggers: str = "reject") -> bool:
    """AR-level checks: a type, trigger and version we can take (a combination that passed
    once is remembered: a feed sends the same few all day). True when the message is an
    unused trigger (UNUSED_TRIGGERS) taken without events (unused_triggers 'accept')."""
    version = msg.msh.first(12)
    if (version, msg.message_type, msg.trigger) in _HEADERS_OK:
        if not msg.control_id:
            raise MappingError(
                "MSH-10 message control id is empty", ack="AR", code=101, segment="MSH", field=10
            )
        return False
    if not version:
        raise MappingError("MSH-12 version id is empty", ack="AR", code=203, segment="MSH", field=12)
    if not version.startswith(SUPPORTED_VERSIONS):
        raise MappingError(
            f"HL7 version {version} is not supported (2.3 to 2.8 are)",
            ack="AR",
            code=203,
            segment="MSH",
            field=12,
        )
    triggers = MESSAGE_TYPES.get(msg.message_type)
    if triggers is None:
        raise MappingError(
            f"message type {clean_code(msg.message_type)} is not supported "
            f"(supported: {', '.join(sorted(MESSAGE_TYPES))})",
            ack="AR",
            code=200,
            segment="MSH",
            field=9,
        )
    if msg.trigger not in triggers:
        unused = (msg.message_type, msg.trigger) in UNUSED_TRIGGERS
        if unused and unused_triggers == "accept":
            if not msg.control_id:
                raise MappingError(
                    "MSH-10 message control id is empty", ack="AR", code=101, segment="MSH", field=10
                )
            return True
        why = " (no KPI uses it; hl7.unused_triggers is reject)" if unused else ""
        raise MappingError(
            f"{msg.message_type}^{clean_code(msg.trigger)} is not supported{why} "
            f"(supported {msg.message_type} events: {', '.join(sorted(triggers))})",
            ack="AR",
            code=201,
            segment="MSH",
            field=9,
            component=2,
        )
    if not msg.control_id:
        raise MappingError("MSH-10 message control id is empty", ack="AR", code=101, segment="MSH", field=10)
    _HEADERS_OK.add((version, msg.message_type, msg.trigger))
    return False


def map_message(msg: Message, ctx: MapContext, *, unused_triggers: str = "reject") -> list[EventBase]:
    """Events for one message, or MappingError saying which field is wrong and how. An
    unused trigger (UNUSED_TRIGGERS) maps to no events under unused_triggers='accept' and is
    rejected (AR 201) under 'reject', the default here: callers opt in to the silence."""
    if check_header(msg, unused_triggers):
        return []
    mapper = _Mapper(msg, ctx)
    try:
        MESSAGE_TYPES[msg.message_type][msg.trigger](mapper)
    except ValidationError as exc:
        err = exc.errors()[0]
        name = ".".join(str(p) for p in err["loc"])
        raise MappingError(f"cannot build the canonical event: {name}: {err['msg']}", code=207) from exc
    return mapper.events
