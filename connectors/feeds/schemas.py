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

from pydantic import BaseModel, ConfigDict, Field, model_validator

LICENSED_ROLES = frozenset({"rn", "lpn", "lvn", "np", "cns", "crna", "cnm", "registered_nurse"})

When = datetime | date


class FeedRow(BaseModel):
    """Fields every feed shares."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, frozen=True)

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
        default=None, description="licensed nurse (counts for ratios); default: role is rn/lpn/lvn/np"
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
    """One HR record: a hire, a separation, training, a certification, an engagement score
    or a unit's headcount (a baseline the hires and separations then move)."""

    feed: ClassVar[str] = "hr"
    title: ClassVar[str] = "Human resources"

    event: Literal[
        "hire",
        "separation",
        "training",
        "certification_granted",
        "certification_expired",
        "engagement",
        "headcount",
    ] = Field(description="what happened")
    time: When = Field(description="when it happened (date or date-time)")
    staff_id: str | None = Field(default=None, description="employee number; required except for headcount")
    role: str | None = Field(default=None, description="rn, lpn, cna, ...")
    hours: float | None = Field(default=None, gt=0, le=200, description="training: hours completed")
    score: float | None = Field(default=None, ge=0, le=100, description="engagement: survey score")
    headcount: float | None = Field(default=None, ge=0, description="headcount: staff on the unit")

    @model_validator(mode="after")
    def _needs(self) -> HRRow:
        needed = {"training": "hours", "engagement": "score", "headcount": "headcount"}.get(self.event)
        if needed and getattr(self, needed) is None:
            raise ValueError(f"{needed} is required for event {self.event}")
        if self.event != "headcount" and not self.staff_id:
            raise ValueError(f"staff_id is required for event {self.event}")
        return self


class FinanceRow(FeedRow):
    """One cost line from the ledger, by unit and category."""

    feed: ClassVar[str] = "finance"
    title: ClassVar[str] = "Finance cost lines"

    time: When = Field(description="posting date (date or date-time)")
    category: Literal["labour", "supplies", "procedure", "other"] = Field(description="cost category")
    amount: float = Field(description="amount; negative for a credit")
    currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$", description="ISO 4217 code")
    procedure_code: str | None = Field(default=None, description="CPT/HCPCS/OPCS code for procedure costs")
    line_id: str | None = Field(default=None, description="the ledger's line id (kept for tracing)")


class ExperienceRow(FeedRow):
    """One patient-experience record: a survey answer or a complaint."""

    feed: ClassVar[str] = "experience"
    title: ClassVar[str] = "Patient experience: surveys and complaints"

    kind: Literal["survey", "complaint"] = Field(description="survey response or complaint")
    time: When = Field(description="when the response or complaint was received")
    question: str | None = Field(default=None, description="survey item, e.g. overall-rating, recommend")
    score: float | None = Field(default=None, ge=0, le=10, description="survey: answer on a 0-10 scale")
    top_box: bool | None = Field(
        default=None, description="survey: most positive answer; default score >= 9 (HCAHPS 9-10)"
    )
    response_id: str | None = Field(default=None, description="the survey vendor's response id")

    @model_validator(mode="after")
    def _answered(self) -> ExperienceRow:
        if self.kind == "survey" and self.score is None and self.top_box is None:
            raise ValueError("a survey row needs score or top_box")
        return self


class QualityRow(FeedRow):
    """Infection prevention and patient safety: CLABSI/CAUTI events, device days (central
    line days, urinary catheter days), falls with injury and pressure injuries."""

    feed: ClassVar[str] = "quality"
    title: ClassVar[str] = "Infection prevention and patient safety"

    event: Literal[
        "clabsi", "cauti", "central_line_days", "catheter_days", "fall_injury", "pressure_injury"
    ] = Field(description="what is counted")
    time: When = Field(description="event date, or the day the device days were counted")
    days: float | None = Field(
        default=None, gt=0, description="central_line_days/catheter_days: days counted"
    )
    patient_id: str | None = Field(default=None, description="MRN (kept, never shown in logs or metrics)")
    record_id: str | None = Field(default=None, description="the surveillance system's id (kept for tracing)")

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
