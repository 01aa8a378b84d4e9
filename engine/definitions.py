"""KPI definitions: the YAML schema in kpi_defs/, validated at start.

A KPI is a *measure* (what is observed per event: a duration between paired events, a count,
a sum of a field, a level such as the patient census) folded by an *aggregate* (p90, mean,
ratio ...) over an event-time *window*, per place (unit, rolled up to department and
facility), held against a target, thresholds and a benchmark.
"""

from __future__ import annotations

import itertools
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from engine.durations import Duration, format_duration, parse_duration
from engine.events import EVENT_TYPES
from engine.hcahps import DOMAINS as HCAHPS_DOMAINS
from engine.vocabulary import DIED, LEFT_AMA, TRANSFER_ACUTE, VOCABULARIES, PatientClassList
from engine.yamlconf import ConfigError, describe_errors, load_yaml

Scalar = str | int | float | bool


class Perspective(StrEnum):
    financial = "financial"
    patient = "patient"
    internal_process = "internal_process"
    learning_growth = "learning_growth"


PERSPECTIVE_TITLES = {
    Perspective.financial: "Financial",
    Perspective.patient: "Patient",
    Perspective.internal_process: "Internal process",
    Perspective.learning_growth: "Learning & growth",
}


class Direction(StrEnum):
    lower_is_better = "lower_is_better"
    higher_is_better = "higher_is_better"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Match(_Strict):
    """Selects events: a type and equality filters on its fields (a list means any of)."""

    event: str
    where: dict[str, Scalar | list[Scalar]] = Field(default_factory=dict)

    @field_validator("event")
    @classmethod
    def _known_event(cls, value: str) -> str:
        if value not in EVENT_TYPES:
            raise ValueError(f"unknown event type {value!r}; known types: {', '.join(sorted(EVENT_TYPES))}")
        return value

    @field_validator("where")
    @classmethod
    def _known_fields(cls, where: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        event = info.data.get("event")
        if event is None:
            return where
        for name, expected in where.items():
            require_field(event, name)
            known = VOCABULARIES.get((event.split(".", 1)[0], name))
            if known is None:
                continue
            for value in expected if isinstance(expected, list) else [expected]:
                if value not in known:
                    raise ValueError(
                        f"{name} {value!r} is not in the canonical vocabulary (engine/vocabulary.py); "
                        f"known: {', '.join(sorted(known))}"
                    )
        return where


def require_field(event: str, name: str) -> None:
    fields = EVENT_TYPES[event].model_fields
    if name not in fields:
        raise ValueError(f"event {event!r} has no field {name!r}; fields: {', '.join(fields)}")


TimeUnit = Literal["seconds", "minutes", "hours", "days"]
TIME_UNITS: dict[str, float] = {"seconds": 1.0, "minutes": 60.0, "hours": 3600.0, "days": 86400.0}


class DurationMeasure(_Strict):
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


class LevelMeasure(_Strict):
    """A level that goes up and down over time (census); a window sees its time integral."""

    kind: Literal["gauge"]
    level: Level = Field(description=LEVEL_DOC)
    per: Literal["beds"] | Level | None = Field(
        default="beds", description="denominator level; beds come from the places config"
    )
    scale: float = 1.0


class StayMeasure(_Strict):
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


class StaffingRatioMeasure(_Strict):
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


class LevelPart(_Strict):
    """Numerator or denominator made of a level's time integral: patient-days, or its mean."""

    kind: Literal["level"]
    level: Level = Field(description=LEVEL_DOC)
    as_: Literal["days", "hours", "average"] = Field(
        default="days", alias="as", description="integral in days or hours, or the time-weighted mean"
    )


Part = Annotated[EventPart | LevelPart, Field(discriminator="kind")]


class Adjustment(_Strict):
    """A factor the denominator is multiplied by: adjust.numerator / adjust.denominator summed
    over the same window and place (AHA adjusted patient days = inpatient days x gross total
    patient revenue / gross inpatient revenue)."""

    numerator: EventPart
    denominator: EventPart


class RatioMeasure(_Strict):
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


class ReadmissionMeasure(_Strict):
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


class TopBoxMeasure(_Strict):
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


_PERCENTILE = re.compile(r"^p(\d{1,2}(?:\.\d+)?)$")
VALUE_AGGREGATES = ("count", "sum", "mean", "median", "min", "max", "pct_within")


def quantile_of(aggregate: str) -> float | None:
    if aggregate == "median":
        return 0.5
    match = _PERCENTILE.match(aggregate)
    return float(match.group(1)) / 100 if match else None


_MONTHS = re.compile(r"(\d+)mo")


def parse_window_length(value: Any) -> float | str:
    """A window's size or step: a duration in seconds ('15m', '1h', '30d'), or whole calendar
    months, kept as written ('1mo', '3mo')."""
    if isinstance(value, str):
        match = _MONTHS.fullmatch(value.strip().replace(" ", ""))
        if match:
            months = int(match.group(1))
            if months < 1:
                raise ValueError("a window of calendar months needs at least '1mo'")
            return f"{months}mo"
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise ValueError(f"{exc}, or calendar months: '1mo', '3mo'") from None


def format_window_length(value: float | str) -> str:
    return value if isinstance(value, str) else format_duration(value)


WindowLength = Annotated[
    float | str,
    BeforeValidator(parse_window_length),
    PlainSerializer(format_window_length, return_type=str),
]
"""Seconds (a float), or calendar months (a string such as '3mo')."""


def months_of(length: float | str | None) -> int | None:
    """The number of calendar months of a window length, None for a duration."""
    return int(length[:-2]) if isinstance(length, str) else None


class WindowSpec(_Strict):
    """Event-time windows, made of panes of `step` (tumbling: `size`).

    A step of whole days is a run of local days in the site's time zone (settings
    `timezone`): windows start and end at local midnight, and a day is 23 or 25 hours when
    the clocks change. A step of calendar months (`1mo`) starts at local midnight on the 1st.
    Shorter steps (minutes, hours) are counted from the UTC epoch. Grace is always a duration.
    """

    kind: Literal["tumbling", "hopping", "sliding", "cumulative"]
    size: WindowLength | None = Field(
        default=None,
        description="a duration ('60m', '30d'; whole days are local days) or calendar months ('1mo'); "
        "not used by cumulative",
    )
    step: WindowLength | None = Field(
        default=None,
        description="hop between closed windows (hopping, sliding; cumulative: how often it is "
        "reported); default size. Calendar months ('1mo') when size is in months",
    )
    grace: Duration = Field(default=300.0, description="how late an event may be and still count")

    @model_validator(mode="after")
    def _shape(self) -> WindowSpec:
        if self.kind != "cumulative" and not self.size:
            raise ValueError(f"a {self.kind} window needs a size, e.g. size: 60m")
        if self.kind == "hopping" and not self.step:
            raise ValueError("a hopping window needs a step, e.g. step: 15m")
        if self.kind == "cumulative" and not self.step:
            raise ValueError("a cumulative window needs a step: how often it is reported")
        if self.size and self.step and self.kind != "cumulative":
            if isinstance(self.size, str) != isinstance(self.step, str):
                raise ValueError(
                    "size and step must both be calendar months ('3mo', '1mo') or both durations "
                    "('30d', '1d')"
                )
            size, step = _amount(self.size), _amount(self.step)
            if step > size:
                raise ValueError("step must not be larger than size")
            ratio = size / step
            if abs(ratio - round(ratio)) > 1e-9:
                raise ValueError("size must be a whole multiple of step")
        return self

    @property
    def hop(self) -> float | str:
        """The pane: seconds, or calendar months ('1mo'), between consecutive closed windows."""
        if self.kind == "tumbling":
            return self.size  # type: ignore[return-value]
        return self.step or self.size  # type: ignore[return-value]

    @property
    def panes(self) -> int:
        """Panes per window (0: cumulative, every pane since the first)."""
        if self.kind == "cumulative":
            return 0
        return round(_amount(self.size) / _amount(self.hop))  # type: ignore[arg-type]


def _amount(length: float | str) -> float:
    months = months_of(length)
    return float(months) if months is not None else float(length)


class Thresholds(_Strict):
    warning: float | None = None
    critical: float | None = None


class Levels(_Strict):
    """Target and thresholds for one kind of unit (e.g. the legal nurse ratio of an ICU)."""

    target: float | None = None
    thresholds: Thresholds = Field(default_factory=Thresholds)
    clear: float | None = None
    limit: float | None = Field(
        default=None, description="legal maximum (staffing ratios: minutes above it are out of ratio)"
    )
    source: str | None = Field(default=None, description="where this unit type's limit is set")


class Benchmark(_Strict):
    value: float | None = None
    source: str = Field(description="citation: who measured it, where, when")
    note: str | None = None


class Standard(_Strict):
    """The published definition a KPI follows, quoted briefly, and where it is published."""

    text: str = Field(description="the definition as the standard words it (numerator, denominator, who)")
    source: str = Field(description="who publishes it, document and section or measure id, year")


class KpiDefinition(_Strict):
    id: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]
    name: str
    perspective: Perspective
    description: str
    definition: str = Field(description="numerator / denominator in words, as people cite it")
    unit: str
    direction: Direction
    measure: AnyMeasure
    aggregate: str
    within: float | None = Field(default=None, description="limit for aggregate pct_within")
    window: WindowSpec
    group_by: Literal["unit"] = "unit"
    target: float | None = None
    thresholds: Thresholds = Field(default_factory=Thresholds)
    clear: float | None = Field(
        default=None, description="level at which a firing alert resolves (hysteresis)"
    )
    by_unit_type: dict[str, Levels] = Field(
        default_factory=dict,
        description="target/thresholds/clear for units of a type (places: unit type), e.g. icu",
    )
    for_: Duration = Field(default=0.0, alias="for")
    keep_firing_for: Duration = Field(
        default=0.0, description="a firing alert stays firing this long after it clears (no flapping)"
    )
    alert_on: list[Literal["unit", "department", "facility"]] = Field(
        default=["unit"],
        description="place levels whose breaches alert (roll-ups of a unit's breach would repeat it)",
    )
    min_samples: int = Field(default=1, ge=0)
    benchmark: Benchmark | None = None
    standard: Standard | None = Field(
        default=None, description="the published definition this KPI follows (required by kpi check)"
    )
    deviations: list[str] | None = Field(
        default=None,
        description="what carescore computes differently from the standard, and why; [] when nothing "
        "(required by kpi check)",
    )

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _consistent(self) -> KpiDefinition:
        self._check_aggregate()
        if isinstance(self.measure, ReadmissionMeasure):
            within = self.measure.within
            follow_up = within + (86400.0 if within % 86400.0 == 0 else 0.0)  # calendar days: + 1 day
            if self.window.grace < follow_up:
                raise ValueError(
                    f"window.grace must be at least {follow_up / 86400:g} days (the follow-up): a "
                    "readmission counts at its index discharge, so a window is complete only when its "
                    "follow-up is over"
                )
        if self.window.kind == "cumulative" and (
            self._uses_levels() or isinstance(self.measure, StaffingRatioMeasure)
        ):
            raise ValueError(
                "a level (patients, staff) over a cumulative window is not supported: use tumbling or sliding"
            )
        self._check_threshold_order()
        self._check_pairing()
        return self

    def _check_pairing(self) -> None:
        """An `unless` pair must arrive while its partner's window is still open: a pair further
        apart than the grace could not take back a count already reported."""
        m = self.measure
        if not isinstance(m, RatioMeasure):
            return
        for part in (m.numerator, m.denominator, m.minus):
            unless = part.unless if isinstance(part, EventPart) else None
            if unless is not None and float(unless.within) > float(self.window.grace):
                raise ValueError(
                    f"unless.within ({unless.within:g} s) is longer than the window's grace "
                    f"({float(self.window.grace):g} s): a pair that far apart would come after "
                    "its partner's window was reported"
                )

    def _uses_levels(self) -> bool:
        m = self.measure
        if isinstance(m, LevelMeasure):
            return True
        if isinstance(m, RatioMeasure):
            return isinstance(m.numerator, LevelPart) or isinstance(m.denominator, LevelPart)
        return False

    def _check_aggregate(self) -> None:
        agg = self.aggregate
        measure = self.measure
        if isinstance(measure, StaffingRatioMeasure):
            if agg not in ("max", "minutes_over"):
                raise ValueError("a staffing_ratio takes aggregate: max (worst ratio) or minutes_over")
            if agg == "minutes_over" and not any(lv.limit is not None for lv in self.by_unit_type.values()):
                raise ValueError("aggregate minutes_over needs by_unit_type.<type>.limit")
            return
        if isinstance(measure, TopBoxMeasure):
            if agg != "top_box":
                raise ValueError("a top_box measure takes aggregate: top_box (the mean of item shares)")
            return
        if isinstance(measure, RATIO_MEASURES):
            if agg != "ratio":
                raise ValueError(f"a {measure.kind} measure is a ratio: use aggregate: ratio")
            return
        if isinstance(measure, EventMeasure) and measure.kind in ("count", "sum") and agg != measure.kind:
            raise ValueError(f"a {measure.kind} measure takes aggregate: {measure.kind}")
        if agg not in VALUE_AGGREGATES and quantile_of(agg) is None:
            raise ValueError(
                f"unknown aggregate {agg!r}; use one of {', '.join(VALUE_AGGREGATES)} or p1..p99"
            )
        if agg == "pct_within" and self.within is None:
            raise ValueError("aggregate pct_within needs 'within' (the limit, in the KPI's unit)")

    def _check_threshold_order(self) -> None:
        self._check_levels(self.levels_for(None), "")
        for unit_type, levels in self.by_unit_type.items():
            self._check_levels(levels, f"by_unit_type.{unit_type}.")

    def levels_for(self, unit_type: str | None) -> Levels:
        """The target and thresholds that apply to a unit of this type (or the KPI's own)."""
        if unit_type is not None and unit_type in self.by_unit_type:
            return self.by_unit_type[unit_type]
        return Levels(target=self.target, thresholds=self.thresholds, clear=self.clear)

    def _check_levels(self, lv: Levels, prefix: str) -> None:
        """Levels must sit on the bad side of the target, in order: target, clear, warning, critical."""
        levels = [
            (f"{prefix}target", lv.target),
            (f"{prefix}clear", lv.clear),
            (f"{prefix}thresholds.warning", lv.thresholds.warning),
            (f"{prefix}thresholds.critical", lv.thresholds.critical),
        ]
        present = [(n, v) for n, v in levels if v is not None]
        worse = "above" if self.direction is Direction.lower_is_better else "below"
        for (lo_name, lo), (hi_name, hi) in itertools.pairwise(present):
            bad = hi < lo if self.direction is Direction.lower_is_better else hi > lo
            if bad:
                raise ValueError(
                    f"{hi_name} ({hi:g}) is on the wrong side of {lo_name} ({lo:g}): with "
                    f"direction {self.direction.value} it must be {worse} it"
                )

    def status_of(self, value: float | None, n: int, unit_type: str | None = None) -> str:
        """ok / warning / critical for one value; no_data below the minimum sample size."""
        if value is None or n < self.min_samples:
            return "no_data"
        thresholds = self.levels_for(unit_type).thresholds
        crit, warn = thresholds.critical, thresholds.warning
        if self.direction is Direction.lower_is_better:
            if crit is not None and value >= crit:
                return "critical"
            if warn is not None and value >= warn:
                return "warning"
        else:
            if crit is not None and value <= crit:
                return "critical"
            if warn is not None and value <= warn:
                return "warning"
        return "ok"


class Catalogue(BaseModel):
    """All KPIs, in file order, with where each came from."""

    kpis: dict[str, KpiDefinition]
    files: dict[str, Path]

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.kpis.values())

    def __len__(self) -> int:
        return len(self.kpis)

    def __getitem__(self, kpi_id: str) -> KpiDefinition:
        return self.kpis[kpi_id]


def _documents(data: Any) -> list[tuple[tuple[Any, ...], Any]]:
    """A file holds one KPI, a list of KPIs, or {kpis: [...]} (one file per perspective)."""
    if isinstance(data, dict) and "kpis" in data and "id" not in data:
        return [(("kpis", i), d) for i, d in enumerate(data["kpis"] or [])]
    if isinstance(data, list):
        return [((i,), d) for i, d in enumerate(data)]
    return [((), data)]


def load_catalogue(directory: Path) -> Catalogue:
    """Load every *.yaml / *.yml below directory; raise ConfigError listing every problem."""
    if not directory.is_dir():
        raise ConfigError([f"{directory}: KPI definition folder does not exist"])
    files = sorted(p for p in directory.rglob("*") if p.suffix in (".yaml", ".yml"))
    problems: list[str] = []
    kpis: dict[str, KpiDefinition] = {}
    origin: dict[str, Path] = {}
    for path in files:
        try:
            data, lines = load_yaml(path)
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
        if data is None:
            problems.append(f"{path}: file is empty")
            continue
        for prefix, doc in _documents(data):
            try:
                kpi = KpiDefinition.model_validate(doc)
            except ValidationError as exc:
                problems.extend(describe_errors(path, lines, exc, prefix, data=doc))
                continue
            if kpi.id in kpis:
                line = lines.get((*prefix, "id"))
                problems.append(f"{path}:{line}: id: KPI {kpi.id!r} is already defined in {origin[kpi.id]}")
                continue
            kpis[kpi.id] = kpi
            origin[kpi.id] = path
    if problems:
        raise ConfigError(problems)
    if not kpis:
        raise ConfigError([f"{directory}: no KPI definitions (*.yaml) found"])
    return Catalogue(kpis=kpis, files=origin)
