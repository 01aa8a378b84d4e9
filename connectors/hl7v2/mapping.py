"""HL7 v2 messages -> canonical events.

Field choices follow HL7's own v2-to-FHIR mapping (see shared notes): PV1-3 is the
assigned location (point of care^room^bed^facility), PV1-6 the prior location, PV1-19 the
visit number, EVN-2 the event time; ORC-2/OBR-2 the placer order number, ORC-9 the order
time, OBR-7 collection, OBR-14 specimen received, OBR-22 result time, OBR-25 result status,
priority from TQ1-9, ORC-7.6 or OBR-27.6 (S = STAT).

The families are mapped by their own modules: adt (ADT), lab (orders and results), nursecall
(ORU^R40), charges (DFT); base holds what they share. This module dispatches a message to
its family and says which types and triggers are taken.
"""

from __future__ import annotations

from collections.abc import Callable

from pydantic import ValidationError

from connectors.hl7v2.adt import ADT
from connectors.hl7v2.base import MapContext, MapperBase, MappingError, message_key, required
from connectors.hl7v2.charges import Charges
from connectors.hl7v2.lab import Lab
from connectors.hl7v2.nursecall import NurseCalls
from connectors.hl7v2.parser import Message
from engine.codes import clean_code
from engine.events import EventBase

SUPPORTED_VERSIONS = ("2.3", "2.4", "2.5", "2.6", "2.7", "2.8")

__all__ = ["MapContext", "MapperBase", "MappingError", "map_message", "message_key", "required"]


class Mapper(ADT, Lab, NurseCalls, Charges):
    """Every message family's mapping over one message."""


ADT_TRIGGERS: dict[str, Callable[[Mapper], None]] = {
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

MESSAGE_TYPES: dict[str, dict[str, Callable[[Mapper], None]]] = {
    "ADT": ADT_TRIGGERS,
    "ORM": {"O01": Mapper.orders},
    "OML": {"O21": Mapper.orders},
    "ORU": {"R01": Mapper.results, "R40": Mapper.nurse_call},
    "DFT": {"P03": Mapper.charges, "P11": Mapper.charges},
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
    mapper = Mapper(msg, ctx)
    try:
        MESSAGE_TYPES[msg.message_type][msg.trigger](mapper)
    except ValidationError as exc:
        err = exc.errors()[0]
        name = ".".join(str(p) for p in err["loc"])
        raise MappingError(f"cannot build the canonical event: {name}: {err['msg']}", code=207) from exc
    return mapper.events
