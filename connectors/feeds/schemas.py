"""The row schemas of the tabular feeds: one pydantic model per feed, one row per record.

A row is the same in CSV (a column per field, header on line 1) and JSON (an object per
row). These models are the documentation: docs/feeds.md and the OpenAPI are generated from
them, and each model turns one valid row into canonical events.

Times are ISO 8601 date-times (an offset is optional: without one the site's time zone from
`timezone:` in carescore.yaml applies) or dates (local midnight).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

When = datetime | date

REVENUE_CATEGORIES = frozenset(
    {"net_patient_service", "other_operating", "non_operating", "gross_inpatient", "gross_outpatient"}
)


class FeedRow(BaseModel):
    """Fields every feed shares."""

    # nan and inf are not amounts, hours or scores: one would poison every sum it joins, and
    # JSON (the event log, snapshots) cannot carry it
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, frozen=True, allow_inf_nan=False)

    feed: ClassVar[str]
    title: ClassVar[str]

    unit: str = Field(min_length=1, description="unit code, as configured under places: (e.g. 4W, ICU)")
    facility: str | None = Field(
        default=None, description="facility code; empty for the default (first) facility"
    )


class StaffingRow(FeedRow):
    """One shift from the roster / time-and-attendance system.

    Send a row when a shift starts (no shift_end: the person is now on shift) and again when
    it ends (with shift_end and hours); the start is then recognised as already stored.
    """

    feed: ClassVar[str] = "staffing"
    title: ClassVar[str] = "Staffing roster and time-and-attendance"

    staff_id: str = Field(min_length=1, description="employee number (not a name)")
    role: str = Field(min_length=1, description="rn, lpn, lvn, cna, np, tech, clerk, ...")
    shift_start: When = Field(description="clock-in time")
    shift_end: When | None = Field(default=None, description="clock-out time; empty while on shift")
    worked_hours: float | None = Field(
        default=None, ge=0, le=36, description="paid hours worked; default shift_end - shift_start"
    )
    overtime_hours: float = Field(default=0.0, ge=0, le=36, description="of worked_hours, paid as overtime")
    licensed: bool | None = Field(
        default=None,
        description="licensed nurse; default: an RN, LPN/LVN, psychiatric technician, charge, triage or "
        "advanced-practice nurse, nurse manager or house supervisor",
    )
    direct_care: bool | None = Field(
        default=None,
        description="has a patient assignment (counts in the nurse-to-patient ratio); default: true for "
        "rn, lpn/lvn and psych_tech, false for charge, triage and advanced-practice nurses and managers "
        "(Title 22 §70217)",
    )

    @model_validator(mode="after")
    def _consistent(self) -> StaffingRow:
        if self.shift_end is None and (self.worked_hours or self.overtime_hours):
            raise ValueError(
                "worked_hours and overtime_hours need shift_end (hours are known when a shift ends)"
            )
        worked = self.worked_hours
        if worked is not None and self.overtime_hours > worked:
            raise ValueError("overtime_hours cannot exceed worked_hours")
        return self


class HRRow(FeedRow):
    """One HR record: a hire, a transfer between units, a separation, training, a
    certification, an engagement score, or a baseline from the HR system: a unit's headcount
    (of one role, or of all staff) or its budgeted positions of a role.

    A baseline is what the hires, transfers and separations then move. Send one headcount row
    per unit and role (rn, lpn, cna, ...) when the feed starts and whenever HR closes a period;
    without it, registered nurses are only those hired through the feed. A separation and a
    hire of the same employee within 7 days in the same facility are an internal transfer, not
    turnover; a `transfer` row says so directly.
    """

    feed: ClassVar[str] = "hr"
    title: ClassVar[str] = "Human resources"

    event: Literal[
        "hire",
        "transfer",
        "separation",
        "training",
        "certification_granted",
        "certification_expired",
        "engagement",
        "headcount",
        "positions",
    ] = Field(description="what happened")
    time: When = Field(description="when it happened (date or date-time)")
    staff_id: str | None = Field(
        default=None, description="employee number; required except for headcount and positions"
    )
    role: str | None = Field(
        default=None,
        description="rn, lpn, cna, charge_nurse, nurse_manager, ... (engine/vocabulary.py); required for "
        "positions; headcount: the role counted (empty: all staff of the unit)",
    )
    hours: float | None = Field(default=None, gt=0, le=200, description="training: hours completed")
    score: float | None = Field(
        default=None, ge=0, le=100, description="engagement: the respondent's score on the survey's scale"
    )
    headcount: float | None = Field(
        default=None, ge=0, description="headcount: people on the unit (of role, when given)"
    )
    positions: float | None = Field(
        default=None, ge=0, description="positions: budgeted positions of role on the unit (filled or not)"
    )
    certification: str | None = Field(
        default=None,
        description="certification_granted/expired: the credential (e.g. CCRN, CMSRN); a nurse with two "
        "stays certified until the last expires",
    )
    hire_date: date | None = Field(
        default=None, description="separation: the employee's hire date (first-year turnover needs it)"
    )
    from_unit: str | None = Field(
        default=None, description="transfer: the unit left (unit is the one joined)"
    )
    scale_max: float | None = Field(
        default=None,
        gt=1,
        description="engagement: the survey scale's top score, 5 (a 1-5 scale, the default); a score on "
        "another scale is refused, not converted or mixed in",
    )

    @model_validator(mode="after")
    def _needs(self) -> HRRow:
        needed = {
            "training": "hours",
            "engagement": "score",
            "headcount": "headcount",
            "positions": "positions",
        }.get(self.event)
        if needed and getattr(self, needed) is None:
            raise ValueError(f"{needed} is required for event {self.event}")
        if self.event not in ("headcount", "positions") and not self.staff_id:
            raise ValueError(f"staff_id is required for event {self.event}")
        if self.event == "positions" and not self.role:
            raise ValueError("role is required for event positions (budgeted positions are per role)")
        for name, event in (("hire_date", "separation"), ("from_unit", "transfer")):
            if getattr(self, name) is not None and self.event != event:
                raise ValueError(f"{name} is only for {event}, not {self.event}")
        if self.event == "engagement" and self.score is not None:
            if self.scale_max not in (None, 5):
                raise ValueError(
                    f"engagement scores are on a 1-5 scale; a score on a 1-{self.scale_max:g} scale is not "
                    "converted: send the survey vendor's 1-5 engagement score"
                )
            if not 1 <= self.score <= 5:
                raise ValueError(f"score {self.score:g} is outside the 1-5 scale of engagement scores")
        return self


class FinanceRow(FeedRow):
    """One ledger line, by unit (cost centre) and category: an operating expense (kind cost,
    the default) or revenue (kind revenue).

    Revenue categories: net_patient_service and other_operating are operating revenue (the
    operating margin's denominator); non_operating (investment income, gifts) is not.
    gross_inpatient and gross_outpatient are gross patient revenue (charges at full established
    rates, before deductions): not revenue earned, they give the outpatient adjustment of
    adjusted patient days (AHA: inpatient days x gross total / gross inpatient revenue).
    """

    feed: ClassVar[str] = "finance"
    title: ClassVar[str] = "Finance ledger: costs and revenue"

    time: When = Field(description="posting date (date or date-time)")
    category: Literal[
        "labour",
        "supplies",
        "procedure",
        "other",
        "net_patient_service",
        "other_operating",
        "non_operating",
        "gross_inpatient",
        "gross_outpatient",
    ] = Field(
        description="cost: labour, supplies, procedure, other; revenue: net_patient_service, "
        "other_operating, non_operating, gross_inpatient, gross_outpatient"
    )
    amount: float = Field(description="amount; negative for a credit")
    currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$", description="ISO 4217 code")
    procedure_code: str | None = Field(default=None, description="CPT/HCPCS/OPCS code for procedure costs")
    line_id: str | None = Field(default=None, description="the ledger's line id (kept for tracing)")
    kind: Literal["cost", "revenue"] | None = Field(
        default=None, description="cost or revenue; default: from the category"
    )

    @model_validator(mode="after")
    def _kind_fits(self) -> FinanceRow:
        revenue = self.category in REVENUE_CATEGORIES
        if self.kind is not None and (self.kind == "revenue") != revenue:
            raise ValueError(f"category {self.category} is not a {self.kind} category")
        return self


class ExperienceRow(FeedRow):
    """One patient-experience record: a complaint, or one answer of a returned patient survey.

    HCAHPS answers (`question` is an HCAHPS item: its id or its CMS question number, listed
    below) are scored by carescore on the item's own scale (engine/hcahps.py): send the answer
    as the patient gave it. Rows with the same `survey_id` are one survey (one discharge's
    questionnaire), and the patient-experience KPIs count surveys, not rows; an answer is
    stored once per survey and item. Screener items are stored and never scored; for About
    You items (Q23-Q29) only the receipt is stored, not the answer. Other questions are stored
    as sent and are not part of the HCAHPS KPIs."""

    feed: ClassVar[str] = "experience"
    title: ClassVar[str] = "Patient experience: surveys and complaints"

    kind: Literal["survey", "complaint"] = Field(description="survey response or complaint")
    time: When = Field(description="when the response or complaint was received")
    discharge: When | None = Field(
        default=None,
        description="survey: discharge date of the stay the survey is about; answers are dated by it "
        "(HCAHPS reports by discharge), default time",
    )
    survey_id: str | None = Field(
        default=None,
        description="survey: the returned questionnaire (one per discharge): rows with the same survey_id "
        "are one survey; default response_id; required for HCAHPS items",
    )
    question: str | None = Field(
        default=None,
        description="survey item: an HCAHPS item id or CMS question number (nurse_courtesy or Q1, see "
        "below), or your own item",
    )
    answer: str | None = Field(
        default=None,
        description="survey: the answer as worded (Always, 9, Definitely yes, Yes, Strongly agree) or its "
        "CMS response code (1-4; 1 = Yes, 2 = No)",
    )
    score: float | None = Field(
        default=None, ge=0, le=10, description="survey: a 0-10 answer (the overall rating, or your own items)"
    )
    top_box: bool | None = Field(
        default=None,
        description="survey: your own items' most positive answer (default score >= 9); HCAHPS answers are "
        "scored by carescore (a top_box that disagrees is an error)",
    )
    response_id: str | None = Field(
        default=None, description="the survey vendor's response id (the survey_id when that is empty)"
    )

    @model_validator(mode="after")
    def _answered(self) -> ExperienceRow:
        if self.kind == "survey" and self.score is None and self.top_box is None and self.answer is None:
            raise ValueError("a survey row needs answer, score or top_box")
        return self


STAGE_ALIASES = {
    "i": "1",
    "ii": "2",
    "iii": "3",
    "iv": "4",
    "dtpi": "dti",
    "deep tissue": "dti",
    "deep tissue injury": "dti",
    "deep tissue pressure injury": "dti",
}
"""Pressure injury stages as wound-care systems write them -> QualityRow.stage."""


class QualityRow(FeedRow):
    """Infection prevention and patient safety: CLABSI/CAUTI events, device days (central
    line days, urinary catheter days), falls (every fall, with its NDNQI injury level; the older
    fall_injury rows still count as falls with injury) and pressure injuries."""

    feed: ClassVar[str] = "quality"
    title: ClassVar[str] = "Infection prevention and patient safety"

    event: Literal[
        "clabsi", "cauti", "central_line_days", "catheter_days", "fall", "fall_injury", "pressure_injury"
    ] = Field(description="what is counted")
    time: When = Field(description="event date, or the day the device days were counted")
    days: float | None = Field(
        default=None, gt=0, description="central_line_days/catheter_days: days counted"
    )
    stage: Literal["1", "2", "3", "4", "unstageable", "dti"] | None = Field(
        default=None,
        validate_default=True,
        description="pressure_injury (required): NPIAP stage 1, 2, 3, 4, unstageable, or dti (deep tissue "
        "pressure injury); 'Stage 2', 'II' and 'DTPI' are read too",
    )
    present_on_admission: bool | None = Field(
        default=None,
        validate_default=True,
        description="pressure_injury (required): true if documented on admission (the admission skin "
        "assessment); false if it developed in the hospital (hospital-acquired)",
    )
    patient_id: str | None = Field(default=None, description="MRN (kept, never shown in logs or metrics)")
    record_id: str | None = Field(default=None, description="the surveillance system's id (kept for tracing)")
    injury: Literal["none", "minor", "moderate", "major", "death", "unknown"] | None = Field(
        default=None,
        description="fall: NDNQI injury level (none, minor, moderate, major, death; unknown or empty "
        "while not assessed); fall_injury: minor or worse. A fall with minor or worse injury also "
        "counts as a fall with injury",
    )

    @model_validator(mode="after")
    def _injury(self) -> QualityRow:
        if self.injury is not None and self.event not in ("fall", "fall_injury"):
            raise ValueError(f"injury is only for fall and fall_injury, not {self.event}")
        if self.event == "fall_injury" and self.injury in ("none", "unknown"):
            raise ValueError("a fall_injury is minor or worse: send event fall with injury none/unknown")
        return self

    @field_validator("stage", mode="before")
    @classmethod
    def _stage_code(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            return value
        code = value.strip().lower().replace("_", " ").replace("-", " ")
        code = code.removeprefix("stage").strip()
        return STAGE_ALIASES.get(code, code) or None

    @field_validator("stage", "present_on_admission")
    @classmethod
    def _pressure_injury_only(cls, value: Any, info: ValidationInfo) -> Any:
        event = info.data.get("event")
        if event is None:  # the event itself was invalid: that error is enough
            return value
        if event == "pressure_injury" and value is None:
            raise ValueError(
                f"{info.field_name} is required for event pressure_injury (NDNQI counts hospital-acquired "
                "injuries of stage 2 and above)"
            )
        if event != "pressure_injury" and value is not None:
            raise ValueError(f"{info.field_name} is only for pressure_injury, not {event}")
        return value

    @model_validator(mode="after")
    def _days(self) -> QualityRow:
        counts_days = self.event.endswith("_days")
        if counts_days and self.days is None:
            raise ValueError(f"days is required for event {self.event}")
        if not counts_days and self.days is not None:
            raise ValueError(f"days is only for central_line_days and catheter_days, not {self.event}")
        return self


FEEDS: dict[str, type[FeedRow]] = {
    model.feed: model for model in (StaffingRow, HRRow, FinanceRow, ExperienceRow, QualityRow)
}


def columns(model: type[FeedRow]) -> list[tuple[str, bool, str, str]]:
    """(name, required, type, description) of each field, in column order."""
    out = []
    for name, info in model.model_fields.items():
        schema = model.model_json_schema()["properties"][name]
        out.append((name, info.is_required(), _type_name(schema), info.description or ""))
    return out


def _type_name(schema: dict[str, Any]) -> str:
    options = schema.get("anyOf") or [schema]
    names = []
    for option in options:
        if "enum" in option:
            names.append(" \\| ".join(option["enum"]))
        elif option.get("type") == "null":
            continue
        elif option.get("format") in ("date-time", "date"):
            names.append("date-time" if option["format"] == "date-time" else "date")
        elif "const" in option:
            names.append(str(option["const"]))
        else:
            names.append(str(option.get("type", "string")))
    return " or ".join(dict.fromkeys(names))
