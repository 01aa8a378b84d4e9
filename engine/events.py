"""Canonical events: the only input the engine knows.

Connectors turn HL7 v2, FHIR and feed records into these; operators read their fields by
name (validated when KPI definitions load), so adding a field here is how a new source of
data reaches the KPIs. Every event carries its place (facility > department > unit > bed)
and its own event time; patient identifiers stay in engine state only.
"""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo
from typing import Annotated, Any, Literal, Self

import orjson
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter

from engine.unvalidated import unvalidated

Source = Literal["hl7v2", "fhir", "feed"]


class lazy:
    """Computed once per instance on first read, then a plain attribute (no lock, unlike
    functools.cached_property on 3.11): operators read ts and place on every event."""

    def __init__(self, fn: Any):
        self.fn = fn
        self.name = fn.__name__

    def __get__(self, obj: Any, cls: Any = None) -> Any:
        if obj is None:
            return self
        value = self.fn(obj)
        obj.__dict__[self.name] = value
        return value


_DEFAULTS: dict[type, dict[str, Any]] = {}
_ALL_SET: dict[type, set[str]] = {}
_PLACES: dict[tuple[str, str | None, str | None], tuple[str, str | None, str | None]] = {}
"""One tuple per place, shared by every event and every piece of state that names it."""


class EventBase(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", ignored_types=(lazy,))

    type: str
    event_time: AwareDatetime
    received_time: AwareDatetime
    source: Source
    source_id: str = Field(description="Idempotency key: same source_id, same event.")
    facility: str
    department: str | None = None
    unit: str | None = None
    bed: str | None = None

    @classmethod
    def trusted(cls, fields: dict[str, Any]) -> Self:
        """Build without validation, for connector code that sets every value's type itself
        (parsed datetimes, literal types, strings). About 3x faster than validating; the
        connector tests re-validate everything their mapping builds."""
        defaults = _DEFAULTS.get(cls)
        if defaults is None:
            defaults = _DEFAULTS[cls] = {
                name: info.default for name, info in cls.model_fields.items() if not info.is_required()
            }
        values = defaults.copy()
        values.update(fields)
        event = cls.checked(values)
        derive(values)
        return event

    @classmethod
    def checked(cls, values: dict[str, Any]) -> Self:
        """An event over values already checked (by the connector's own code, or a decoder's
        validation), every field present: nothing is validated, filled in or derived."""
        # every field counts as set (frozen models never change it; nothing reads it)
        fields_set = _ALL_SET.get(cls)
        if fields_set is None:
            fields_set = _ALL_SET[cls] = set(cls.model_fields)
        return unvalidated(cls, values, fields_set)

    def replacing(self, fields: dict[str, Any]) -> Self:
        """A copy with these fields replaced, unvalidated (as `trusted`), several times cheaper
        than model_copy; never event_time or the place, whose derived values are kept."""
        return unvalidated(type(self), {**self.__dict__, **fields}, self.__pydantic_fields_set__)

    # ts and place are derived when an event is built by a connector (trusted) or read back
    # (engine/event_decoder.py), so the engine's per-event work starts from numbers; an event built
    # any other way derives them on first read. model_copy() keeps them: never change
    # event_time or the place with model_copy(update=...).

    @lazy
    def ts(self) -> float:
        """Event time as epoch seconds: operators do arithmetic on floats, not datetimes."""
        return epoch_seconds(self.event_time)

    @lazy
    def place(self) -> tuple[str, str | None, str | None]:
        """(facility, department, unit): the key every operator groups by."""
        place = (self.facility, self.department, self.unit)
        return _PLACES.setdefault(place, place)

    @property
    def family(self) -> str:
        return self.type.split(".", 1)[0]


class EncounterEvent(EventBase):
    """ADT A01-A40 or a FHIR Encounter change: admissions, transfers, discharges, cancels."""

    type: Literal[
        "encounter.admit",
        "encounter.register",
        "encounter.preadmit",
        "encounter.transfer",
        "encounter.discharge",
        "encounter.update",
        "encounter.cancel_admit",
        "encounter.cancel_transfer",
        "encounter.cancel_discharge",
        "encounter.leave_start",
        "encounter.leave_end",
        "encounter.swap_beds",
        "encounter.merge",
    ]
    encounter_id: str
    patient_id: str | None = None
    patient_class: str | None = Field(
        default=None, description="inpatient, emergency, outpatient, observation, ..."
    )
    admit_time: AwareDatetime | None = None
    discharge_time: AwareDatetime | None = None
    prior_unit: str | None = None
    prior_bed: str | None = None
    disposition: str | None = None
    other_encounter_id: str | None = Field(
        default=None, description="swap_beds: the other encounter; merge: the merged-away one"
    )


class LabEvent(EventBase):
    """Lab order lifecycle (ORM/OML/ORU or ServiceRequest/Specimen/DiagnosticReport)."""

    type: Literal["lab.order", "lab.collect", "lab.receive", "lab.result", "lab.cancel"]
    order_id: str
    patient_id: str | None = None
    encounter_id: str | None = None
    priority: str | None = Field(
        default=None, description="stat, asap, routine, timing; None when the message does not say"
    )
    test_code: str | None = None
    result_status: str | None = Field(
        default=None, description="preliminary, final, corrected (lab.result only)"
    )


class NurseCallEvent(EventBase):
    """Nurse call phases (IHE PCD ACM ORU^R40, FHIR Communication/Task, vendor adapters).

    placed: the call starts (ACM event phase start). acknowledged: a caregiver accepted it
    (ACM alert inactivation state acknowledged; FHIR Task accepted/in-progress,
    Communication.received). arrived: staff presence registered in the room, where the
    system sends it. ended: the call is over (ACM event phase end; FHIR Task completed),
    usually because it was answered at the bedside: a response, not a withdrawal.
    cancelled: withdrawn before anyone answered it (the patient or the device cancelled it),
    only where the source says so explicitly; ACM has no value for it.
    """

    type: Literal[
        "nursecall.placed",
        "nursecall.acknowledged",
        "nursecall.arrived",
        "nursecall.ended",
        "nursecall.cancelled",
    ]
    call_id: str
    priority: str = "normal"
    patient_id: str | None = None
    encounter_id: str | None = Field(
        default=None,
        description="the patient's encounter: a call that names no unit counts at the unit the "
        "encounter is on at the call's time (engine/stays.py StayBook.place_by_encounter)",
    )


class StaffingEvent(EventBase):
    """Roster and time-and-attendance: who is on shift on which unit, hours worked."""

    type: Literal["staffing.shift_start", "staffing.shift_end", "staffing.hours"]
    staff_id: str
    role: str = Field(description="rn, lpn, cna, charge_nurse, ... (engine/vocabulary.py)")
    licensed: bool = False
    direct_care: bool = Field(
        default=True,
        description="has a patient assignment: only direct-care licensed nurses count in a ratio "
        "(Title 22 §70217: charge nurses, managers, triage and advanced-practice nurses do not)",
    )
    worked_hours: float = 0.0
    overtime_hours: float = 0.0


class HREvent(EventBase):
    """HR records: people joining, moving and leaving, their training and certifications,
    survey scores, and the HR system's baselines (headcount, budgeted positions) per unit."""

    type: Literal[
        "hr.hire",
        "hr.separation",
        "hr.transfer",
        "hr.training",
        "hr.certification_granted",
        "hr.certification_expired",
        "hr.engagement",
        "hr.headcount",
        "hr.positions",
    ]
    staff_id: str | None = None
    role: str | None = Field(default=None, description="canonical role (engine/vocabulary.py)")
    hours: float = 0.0
    score: float | None = None
    headcount: float | None = Field(default=None, description="hr.headcount: people on the unit (of role)")
    positions: float | None = Field(default=None, description="hr.positions: budgeted positions (of role)")
    certification: str | None = Field(default=None, description="the credential, e.g. CCRN")
    first_year: bool | None = Field(
        default=None, description="hr.separation: left within a year of hire (None: hire date not sent)"
    )
    prior_department: str | None = Field(default=None, description="hr.transfer: the department left")
    prior_unit: str | None = Field(default=None, description="hr.transfer: the unit left")


class FinanceEvent(EventBase):
    """Ledger lines: costs (operating expense), revenue (engine/vocabulary.py REVENUE_CATEGORIES)
    and patient charges from billing (HL7 DFT FT1, FHIR ChargeItem)."""

    type: Literal["finance.cost", "finance.charge", "finance.revenue"]
    category: str = Field(
        description="cost: labour, supplies, procedure, other; revenue: net_patient_service, "
        "other_operating, non_operating, gross_inpatient, gross_outpatient; charge: procedure, charge"
    )
    amount: float
    currency: str = "USD"
    procedure_code: str | None = None
    patient_id: str | None = None


class ExperienceEvent(EventBase):
    """A complaint, or one answer of a returned patient survey.

    HCAHPS answers carry the canonical item (engine/hcahps.py), its domain and the answer on
    the item's own scale; top_box is scored from that scale by the connector (engine/hcahps.py
    `score`), None where the item is a screener or the answer says it does not apply. An
    answer is dated by the discharge the survey is about where the sender knows it (HCAHPS
    reports by discharge date), else by when it was received."""

    type: Literal["experience.survey", "experience.complaint"]
    question: str | None = Field(default=None, description="the sender's own item code or text")
    score: float | None = None
    top_box: bool | None = None
    survey_id: str | None = Field(
        default=None,
        description="the returned questionnaire (one per discharge) the answer belongs to: "
        "completed surveys are counted by it",
    )
    item: str | None = Field(
        default=None, description="HCAHPS item id (engine/hcahps.py); None for other questions"
    )
    domain: str | None = Field(
        default=None, description="HCAHPS measure of the item; None for screeners and other items"
    )
    answer: str | None = Field(
        default=None, description="the answer on the item's scale, e.g. always, 9, definitely_yes"
    )


class QualityEvent(EventBase):
    type: Literal[
        "quality.clabsi",
        "quality.cauti",
        "quality.device_days",
        "quality.fall",
        "quality.fall_injury",
        "quality.pressure_injury",
    ]
    device: str | None = Field(default=None, description="central_line or urinary_catheter")
    injury: str | None = Field(
        default=None, description="falls: NDNQI injury level none, minor, moderate, major, death, or unknown"
    )
    stage: str | None = Field(
        default=None,
        description="pressure injuries: NPIAP stage 1, 2, 3, 4, unstageable or dti (deep tissue injury)",
    )
    present_on_admission: bool | None = Field(
        default=None,
        description="pressure injuries: documented on admission (community-acquired); false when it "
        "developed in the hospital",
    )
    days: float = 0.0
    patient_id: str | None = None


class ProcedureEvent(EventBase):
    """A procedure performed (FHIR Procedure, HL7 PR1): the count behind cost per procedure."""

    type: Literal["procedure.performed"]
    procedure_id: str | None = Field(
        default=None,
        description="the procedure's identity across messages (HL7 PR1-19, FHIR Procedure id, else a "
        "hash of patient, code and time): a count with `distinct: procedure_id` counts it once",
    )
    procedure_code: str | None = None
    patient_id: str | None = None
    encounter_id: str | None = None


class BedEvent(EventBase):
    """A bed's availability (FHIR Location operationalStatus, bed management feeds)."""

    type: Literal["bed.status"]
    bed_id: str
    available: bool
    status: str | None = Field(default=None, description="v2-0116 bed status code, e.g. C closed, O occupied")


Event = Annotated[
    EncounterEvent
    | LabEvent
    | NurseCallEvent
    | StaffingEvent
    | HREvent
    | FinanceEvent
    | ExperienceEvent
    | QualityEvent
    | ProcedureEvent
    | BedEvent,
    Field(discriminator="type"),
]

EVENT_MODELS: tuple[type[EventBase], ...] = (
    EncounterEvent,
    LabEvent,
    NurseCallEvent,
    StaffingEvent,
    HREvent,
    FinanceEvent,
    ExperienceEvent,
    QualityEvent,
    ProcedureEvent,
    BedEvent,
)


def types_of(model: type[EventBase]) -> tuple[str, ...]:
    return tuple(model.model_fields["type"].annotation.__args__)  # type: ignore[union-attr]


EVENT_TYPES: dict[str, type[EventBase]] = {t: m for m in EVENT_MODELS for t in types_of(m)}


def _utc_zones() -> tuple[tzinfo, ...]:
    """pydantic's UTC tzinfo, if it hands out one object for every UTC time it parses (the
    standard library's UTC is taken first in epoch_seconds)."""
    parse = TypeAdapter(AwareDatetime).validate_python
    zones: tuple[tzinfo, ...] = ()
    ours, again = parse("2000-01-01T00:00:00Z").tzinfo, parse("2001-01-01T00:00:00+00:00").tzinfo
    if ours is not None and ours is again:
        zones += (ours,)
    return zones


_EPOCHS = {id(zone): (zone, datetime.fromtimestamp(0, zone)) for zone in _utc_zones()}
"""1970-01-01T00:00Z in pydantic's shared UTC tzinfo object, by the object's id."""


def epoch_seconds(when: datetime) -> float:
    """when.timestamp(), without its utcoffset() calls for a time in a shared UTC object.

    Aware datetimes with the same tzinfo object subtract without asking it for offsets, and
    through pydantic's TzInfo those calls are most of timestamp()'s cost (0.86 -> 0.59 µs an
    event). The standard library's UTC (what connectors and msgspec give) is asked in C,
    so its timestamp() is cheaper still. Every other zone takes timestamp(): pydantic makes a
    new TzInfo for each time with another offset, and a zone with daylight saving (zoneinfo)
    must be asked."""
    zone = when.tzinfo
    if zone is UTC:
        return when.timestamp()
    shared = _EPOCHS.get(id(zone))
    if shared is not None and shared[0] is zone:
        return (when - shared[1]).total_seconds()
    return when.timestamp()


def derive(values: dict[str, Any]) -> None:
    """ts and place into an event's __dict__. Done here rather than in model_post_init: with
    pydantic calling that hook, validating an event read back took 7.1 µs, validating then
    deriving here 6.0 (bench/kafka_worker.py's records)."""
    values["ts"] = epoch_seconds(values["event_time"])
    place = (values["facility"], values["department"], values["unit"])
    values["place"] = _PLACES.setdefault(place, place)


_DERIVED = frozenset({"ts", "place"})


def _fields(event: EventBase) -> dict[str, Any]:
    return {k: v for k, v in event.__dict__.items() if v is not None and k not in _DERIVED}


def dump_event(event: EventBase) -> bytes:
    """JSON of the event's fields without None (the log's record format; parse_event reads
    it back). orjson on the field dict: several times faster than model_dump."""
    return orjson.dumps(_fields(event))


def dump_events(events: list[EventBase]) -> bytes:
    """Several events as one JSON array (parse_events reads it back)."""
    return orjson.dumps([_fields(e) for e in events])
