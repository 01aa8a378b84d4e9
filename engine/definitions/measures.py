"""What a KPI observes (its `measure`): durations, counts and sums, levels, ratios, stays,
staffing ratios, readmissions and HCAHPS top box, each validated against the event schema.

The operators (engine/operators/) and the period report (engine/reports.py) compute each
measure from these definitions; the rules that join a measure to its aggregate and window
live with the whole definition (engine/definitions/kpi.py).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from engine.definitions.match import Match, Strict, require_field
from engine.durations import Duration
from engine.hcahps_survey import DOMAINS as HCAHPS_DOMAINS
from engine.vocabulary import DIED, LEFT_AMA, TRANSFER_ACUTE, PatientClassList

TimeUnit = Literal["seconds", "minutes", "hours", "days"]
TIME_UNITS: dict[str, float] = {"seconds": 1.0, "minutes": 60.0, "hours": 3600.0, "days": 86400.0}


class DurationMeasure(Strict):
    """Time from a start event to the matching end event (same key): TAT, response, LOS.

    Every key has one interval: its earliest start and its earliest end in event time, in
    whatever order they arrive (a later-arriving end that happened earlier replaces the one
    counted, while the key's state is kept). `end` may list several events ("whichever
    comes first": a nurse call is answered by an acknowledgement, by staff arriving, or by
    the call ending at the bedside). An end later than start + `expire_after` does not end
    the interval: it expired. A `cancel` earlier than the end (or, with no end, within the
    interval's life) drops it; a cancel after the end changes nothing.
    """

    kind: Literal["duration"]
    start: Match
    end: Match | list[Match] = Field(
        description="the event that ends the interval, or a list of them: any of these ends it, "
        "the earliest in event time wins"
    )
    key: str = Field(description="field that pairs start and end, e.g. order_id")
    attribute_to: Literal["start", "end"] = Field(
        default="start", description="whose place the duration counts for"
    )
    unit: TimeUnit = "minutes"
    timeout: Duration | None = Field(
        default=None,
        description="an interval open longer than this counts, at its age, in the live value "
        "(until it closes or expires); with count_open, in closed windows too",
    )
    expire_after: Duration = Field(
        default=30 * 86400.0,
        description="an interval's life: open intervals older than this are given up, and an end "
        "later than this does not close it",
    )
    cancel: Match | None = Field(
        default=None,
        description="an event that withdraws the interval (a cancelled order, a call cancelled by "
        "the patient) before it ended: it is dropped, neither counted nor overdue",
    )
    count_open: bool = Field(
        default=False,
        description="survivorship: closed windows count, as the live value does, the intervals "
        "still open at the window's end past `timeout` (at their age then), and an interval that "
        "never ends counts once, at its expire_after age, in the window where it expires. Without "
        "it, unresolved intervals vanish from closed windows",
    )

    @property
    def ends(self) -> list[Match]:
        """The end events as a list (one or several)."""
        return self.end if isinstance(self.end, list) else [self.end]

    @model_validator(mode="after")
    def _key_exists(self) -> DurationMeasure:
        if not self.ends:
            raise ValueError("end needs at least one event")
        require_field(self.start.event, self.key)
        for end in self.ends:
            require_field(end.event, self.key)
        if self.cancel is not None:
            require_field(self.cancel.event, self.key)
            if self.cancel.event in (self.start.event, *(e.event for e in self.ends)):
                raise ValueError("cancel must be an event type of its own")
        return self


Level = Literal[
    "patients",
    "patients_present",
    "licensed_staff",
    "registered_nurses",
    "direct_care_rns",
    "certified_nurses",
    "staff",
    "budgeted_rn_positions",
    "rn_vacancies",
]
LEVEL_DOC = (
    "patients (the inpatient census from ADT: the patient-day denominator), patients_present "
    "(everyone on the unit, any patient class, not on leave), licensed_staff (direct-care licensed "
    "nurses on shift, from the roster), "
    "staff / registered_nurses / direct_care_rns (headcount from HR: baselines moved by hires, "
    "transfers and separations), certified_nurses (direct-care RNs holding a certification), "
    "budgeted_rn_positions / rn_vacancies (budgeted RN positions from HR, and those not filled)"
)


class LevelMeasure(Strict):
    """A level that goes up and down over time (census); a window sees its time integral."""

    kind: Literal["gauge"]
    level: Level = Field(description=LEVEL_DOC)
    per: Literal["beds"] | Level | None = Field(
        default="beds", description="denominator level; beds come from the places config"
    )
    scale: float = 1.0


class StayMeasure(Strict):
    """Lengths of stay and ED intervals from the encounters' facts (engine/operators/stay.py):
    `hospital` = the inpatient stay, admission to discharge, less leaves of absence;
    `unit_type` = each visit to a unit of these types (the ED), arrival or decision to admit
    to departure, for the patients of an outcome."""

    kind: Literal["stay"]
    span: Literal["hospital", "unit_type"] = "hospital"
    patient_classes: PatientClassList = Field(
        default_factory=lambda: ["inpatient", "obstetrics"], description="span hospital: who has a stay"
    )
    unit_types: list[str] = Field(default_factory=lambda: ["ed"], description="span unit_type: which units")
    start: Literal["arrival", "admit_decision"] = "arrival"
    outcome: Literal["any", "admitted", "discharged"] = "any"
    count: Literal["elapsed", "midnights"] = Field(
        default="elapsed", description="elapsed time, or inpatient days by the midnight census (min 1)"
    )
    unit: TimeUnit = "days"
    exclude_leave: bool = True
    link_within: Duration = Field(
        default=6 * 3600.0,
        description="an inpatient encounter of the same patient starting this soon after an ED departure "
        "is that visit's admission (sites that number the ED and inpatient stays apart)",
    )


class StaffingRatioMeasure(Strict):
    """Patients per direct-care licensed nurse at every moment (never averaged): aggregate
    `max` is the worst ratio of the window (live: the ratio now), `minutes_over` the minutes
    above the unit type's `limit`. Patients with no nurse is an infinite ratio: critical."""

    kind: Literal["staffing_ratio"]
    patients: Level = "patients_present"
    nurses: Level = "licensed_staff"


class EventMeasure(Match):
    """One observation per matching event: 1 (count), or the value of `field` (sum, values)."""

    kind: Literal["count", "sum", "values"]
    field: str | None = Field(default=None, description="numeric field to sum or aggregate")

    @model_validator(mode="after")
    def _field(self) -> EventMeasure:
        if self.kind == "count":
            if self.field is not None:
                raise ValueError("a count needs no field")
            return self
        if self.field is None:
            raise ValueError(f"a {self.kind} measure needs field: the number to {self.kind}")
        require_field(self.event, self.field)
        return self


class Unless(Match):
    """An event that takes another one out of a count: same `key` value, same facility, at most
    `within` apart in event time, in either order (a separation and a hire of the same employee
    within days of each other are an internal transfer, not a leaver and a new hire)."""

    key: str = Field(description="field both events carry, e.g. staff_id")
    within: Duration = Field(description="how far apart the two events may be, either way")


class EventPart(Match):
    """Numerator or denominator made of events: how many, or the sum of a field.

    `distinct`: each value of that field counts once, at its earliest event in event time (a
    procedure repeated in every charge message is one procedure); events without a value each
    count. The identity is remembered while its window is kept (window size + grace).
    `unless`: an event matched by another event (same key, same facility, within a time) does not
    count, whichever of the two arrives first.
    """

    kind: Literal["count", "sum"]
    field: str | None = None
    distinct: str | None = Field(
        default=None, description="field whose value identifies one occurrence: each counts once"
    )
    unless: Unless | None = Field(
        default=None, description="events paired with another event (same key, same facility) do not count"
    )

    @model_validator(mode="after")
    def _field(self) -> EventPart:
        if self.kind == "sum":
            if self.field is None:
                raise ValueError("a sum needs field: the number to add up")
            require_field(self.event, self.field)
        elif self.field is not None:
            raise ValueError("a count needs no field")
        if self.distinct is not None:
            require_field(self.event, self.distinct)
        if self.unless is not None:
            require_field(self.event, self.unless.key)
            require_field(self.unless.event, self.unless.key)
            if self.distinct is not None:
                raise ValueError("distinct and unless cannot be combined in one part")
        return self


class LevelPart(Strict):
    """Numerator or denominator made of a level's time integral: patient-days, or its mean."""

    kind: Literal["level"]
    level: Level = Field(description=LEVEL_DOC)
    as_: Literal["days", "hours", "average"] = Field(
        default="days", alias="as", description="integral in days or hours, or the time-weighted mean"
    )


Part = Annotated[EventPart | LevelPart | StayMeasure, Field(discriminator="kind")]
"""A `stay` part counts the stays or visits its rule observes, one each at its end (ED visits
ended, for a rate per ED visit): derived from the encounters' facts, so a cancelled
registration (A11) is taken back as it is from every stay KPI."""


class Adjustment(Strict):
    """A factor the denominator is multiplied by: adjust.numerator / adjust.denominator summed
    over the same window and place (AHA adjusted patient days = inpatient days x gross total
    patient revenue / gross inpatient revenue)."""

    numerator: EventPart
    denominator: EventPart


class RatioMeasure(Strict):
    """numerator / denominator x scale over a window: rates, proportions, cost per patient day."""

    kind: Literal["ratio"]
    numerator: Part
    denominator: Part
    scale: float = 1.0
    annualise: bool = Field(
        default=False, description="multiply by (365 days / window length): annual turnover rates"
    )
    minus: EventPart | None = Field(
        default=None,
        description="events subtracted from the numerator: operating margin = (operating revenue - "
        "operating expense) / operating revenue",
    )
    adjust: Adjustment | None = Field(
        default=None,
        description="multiply the denominator by adjust.numerator / adjust.denominator of the same "
        "window and place (adjusted patient days); no value while adjust.denominator is 0",
    )
    roll_up: Literal["all", "with_denominator"] = Field(
        default="all",
        description="with_denominator: a unit joins its department's and facility's value only in a "
        "window where it has a denominator (nursing hours of units without patient days stay out)",
    )


class ReadmissionMeasure(Strict):
    """Index discharges followed for `within` (calendar days): the share readmitted.

    Both parts count at the index discharge (engine/operators/readmission.py): the rate of a
    period is for the stays discharged in it, complete `within` after it ends. Deaths, left
    against medical advice and transfers to another acute hospital (NUBC discharge status)
    are not index discharges; NUBC 81-95 (planned acute readmission) indexes are followed
    but their readmission is not counted.
    """

    kind: Literal["readmission"]
    within: Duration = 30 * 86400.0
    patient_classes: PatientClassList = Field(default_factory=lambda: ["inpatient", "obstetrics"])
    exclude_dispositions: list[str] = Field(
        default_factory=lambda: sorted(DIED | LEFT_AMA | TRANSFER_ACUTE),
        description="discharge statuses (NUBC, engine/vocabulary.py) that are not index discharges: "
        "deaths, against medical advice, transfers to another acute care hospital",
    )
    scale: float = 100.0


class TopBoxMeasure(Strict):
    """HCAHPS top-box scoring of survey answers (engine/hcahps.py, CMS): per item, the share
    of its answers in the item's most positive category (each item on its own scale); a
    domain (composite measure) is the mean of its items' shares; with several domains, the
    value is the mean of the domains' scores. Screener and About You items belong to no domain
    and never count; answers that say an item does not apply have no top box and do not count.
    The sample size n is the number of surveys (distinct survey_id) with a counted answer."""

    kind: Literal["top_box"]
    event: Literal["experience.survey"] = "experience.survey"
    domains: list[str] = Field(
        min_length=1, description="HCAHPS domains (engine/hcahps.py DOMAINS), e.g. [nurse_communication]"
    )
    scale: float = Field(default=100.0, description="100: a percentage")

    @field_validator("domains")
    @classmethod
    def _known_domains(cls, value: list[str]) -> list[str]:
        for domain in value:
            if domain not in HCAHPS_DOMAINS:
                raise ValueError(
                    f"unknown HCAHPS domain {domain!r}; known: {', '.join(HCAHPS_DOMAINS)} (engine/hcahps.py)"
                )
        if len(set(value)) != len(value):
            raise ValueError("a domain is listed twice")
        return value


AnyMeasure = Annotated[
    DurationMeasure
    | LevelMeasure
    | EventMeasure
    | RatioMeasure
    | ReadmissionMeasure
    | StaffingRatioMeasure
    | StayMeasure
    | TopBoxMeasure,
    Field(discriminator="kind"),
]

RATIO_MEASURES = (LevelMeasure, RatioMeasure, ReadmissionMeasure)
