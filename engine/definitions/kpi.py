"""One KPI definition whole: its measure, aggregate and window, held against a target,
thresholds (per unit type too) and a benchmark, with the checks that need all of them at
once (an aggregate that fits the measure, thresholds on the bad side of the target, a
grace long enough for the follow-up) and the status of a value.
"""

from __future__ import annotations

import itertools
import re
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, model_validator

from engine.definitions import measures
from engine.definitions.match import Strict
from engine.definitions.measures import AnyMeasure
from engine.definitions.window import WindowSpec
from engine.durations import Duration


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


_PERCENTILE = re.compile(r"^p(\d{1,2}(?:\.\d+)?)$")
VALUE_AGGREGATES = ("count", "sum", "mean", "median", "min", "max", "pct_within")


def quantile_of(aggregate: str) -> float | None:
    if aggregate == "median":
        return 0.5
    match = _PERCENTILE.match(aggregate)
    return float(match.group(1)) / 100 if match else None


class Thresholds(Strict):
    warning: float | None = None
    critical: float | None = None


class Levels(Strict):
    """Target and thresholds for one kind of unit (e.g. the legal nurse ratio of an ICU)."""

    target: float | None = None
    thresholds: Thresholds = Field(default_factory=Thresholds)
    clear: float | None = None
    limit: float | None = Field(
        default=None, description="legal maximum (staffing ratios: minutes above it are out of ratio)"
    )
    source: str | None = Field(default=None, description="where this unit type's limit is set")


class Benchmark(Strict):
    value: float | None = None
    source: str = Field(description="citation: who measured it, where, when")
    year: int | None = Field(
        default=None, ge=1900, le=2100, description="the year the value describes (else its publication's)"
    )
    note: str | None = None


class Compliance(Strict):
    """A rule the KPI is held to by law or accreditation, not only by the hospital's own target."""

    rule: str = Field(description="the rule, e.g. 22 CCR §70217(a)")
    authority: str = Field(description="who sets and enforces it")
    limit: float | None = Field(
        default=None,
        description="the limit in the KPI's unit; none where it differs by unit type (by_unit_type.limit)",
    )
    minutes_out: str | None = Field(
        default=None, description="the KPI (aggregate minutes_over) that counts the minutes out of compliance"
    )


class Standard(Strict):
    """The published definition a KPI follows, quoted briefly, and where it is published."""

    text: str = Field(description="the definition as the standard words it (numerator, denominator, who)")
    source: str = Field(description="who publishes it, document and section or measure id, year")


class KpiForecast(Strict):
    """This KPI's forecast alerts, over the settings' `forecasts:` block (what is not given here
    is taken from there); forecasts.enabled stays the switch for all of them."""

    enabled: bool | None = Field(
        default=None,
        description="true: watched whatever forecasts.kpis lists; false: never; unset: as it says",
    )
    horizon: Duration | None = Field(default=None, gt=0, description="how far ahead a breach is looked for")
    interval: Literal[80, 95] | None = Field(
        default=None, description="the prediction interval whose bound counts"
    )
    level: Literal["warning", "critical"] | None = Field(default=None, description="the threshold watched")
    for_: Duration | None = Field(default=None, alias="for", description="forecast to breach this long first")


class KpiDefinition(Strict):
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
    compliance: Compliance | None = None
    forecast: KpiForecast | None = Field(default=None, description="its forecast alerts (see KpiForecast)")
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
        if isinstance(self.measure, measures.ReadmissionMeasure):
            within = self.measure.within
            follow_up = within + (86400.0 if within % 86400.0 == 0 else 0.0)  # calendar days: + 1 day
            if self.window.grace < follow_up:
                raise ValueError(
                    f"window.grace must be at least {follow_up / 86400:g} days (the follow-up): a "
                    "readmission counts at its index discharge, so a window is complete only when its "
                    "follow-up is over"
                )
        if self.window.kind == "cumulative" and (
            self._uses_levels() or isinstance(self.measure, measures.StaffingRatioMeasure)
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
        if not isinstance(m, measures.RatioMeasure):
            return
        for part in (m.numerator, m.denominator, m.minus):
            unless = part.unless if isinstance(part, measures.EventPart) else None
            if unless is not None and float(unless.within) > float(self.window.grace):
                raise ValueError(
                    f"unless.within ({unless.within:g} s) is longer than the window's grace "
                    f"({float(self.window.grace):g} s): a pair that far apart would come after "
                    "its partner's window was reported"
                )

    def _uses_levels(self) -> bool:
        m = self.measure
        if isinstance(m, measures.LevelMeasure):
            return True
        if isinstance(m, measures.RatioMeasure):
            return any(isinstance(part, measures.LevelPart) for part in (m.numerator, m.denominator))
        return False

    def _check_aggregate(self) -> None:
        agg = self.aggregate
        measure = self.measure
        if isinstance(measure, measures.StaffingRatioMeasure):
            if agg not in ("max", "minutes_over"):
                raise ValueError("a staffing_ratio takes aggregate: max (worst ratio) or minutes_over")
            if agg == "minutes_over" and not any(lv.limit is not None for lv in self.by_unit_type.values()):
                raise ValueError("aggregate minutes_over needs by_unit_type.<type>.limit")
            return
        if isinstance(measure, measures.TopBoxMeasure):
            if agg != "top_box":
                raise ValueError("a top_box measure takes aggregate: top_box (the mean of item shares)")
            return
        if isinstance(measure, measures.RATIO_MEASURES):
            if agg != "ratio":
                raise ValueError(f"a {measure.kind} measure is a ratio: use aggregate: ratio")
            return
        if (
            isinstance(measure, measures.EventMeasure)
            and measure.kind in ("count", "sum")
            and agg != measure.kind
        ):
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

    def legal_limit(self, unit_type: str | None) -> float | None:
        """The compliance limit a place is held to, in the KPI's unit: the rule's own, else its
        unit type's (the legal nurse ratio differs by unit type)."""
        if self.compliance is not None and self.compliance.limit is not None:
            return self.compliance.limit
        levels = self.by_unit_type.get(unit_type) if unit_type is not None else None
        return levels.limit if levels is not None else None

    def within_limit(self, value: float | None, status: str, unit_type: str | None) -> bool | None:
        """Whether a value is within the compliance limit (None: no limit or no value). Patients
        with no nurse (no ratio, status critical) are out of it."""
        limit = self.legal_limit(unit_type)
        if limit is None:
            return None
        if value is None:
            return False if status == "critical" else None
        return value <= limit if self.direction is Direction.lower_is_better else value >= limit

    def status_of(
        self, value: float | None, n: int, unit_type: str | None = None
    ) -> Literal["ok", "warning", "critical", "no_data"]:
        """ok / warning / critical for one value; no_data below the minimum sample size."""
        if value is None or n < self.min_samples:
            return "no_data"
        # levels_for's thresholds, without building a Levels model for every sample
        own = self.by_unit_type.get(unit_type) if unit_type is not None else None
        thresholds = own.thresholds if own is not None else self.thresholds
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
