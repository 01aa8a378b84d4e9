"""Valid feed rows to canonical events.

Each event's source_id is derived from the row's content, so sending a file again stores
nothing new, and a staffing row sent at clock-in and again at clock-out stores its start once.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, time, timedelta, tzinfo
from typing import Any

from connectors.feeds.schemas import (
    LICENSED_ROLES,
    ExperienceRow,
    FeedRow,
    FinanceRow,
    HRRow,
    QualityRow,
    StaffingRow,
    When,
)
from engine.events import (
    EventBase,
    ExperienceEvent,
    FinanceEvent,
    HREvent,
    QualityEvent,
    StaffingEvent,
)
from engine.places import PlaceIndex

FUTURE_SLACK = timedelta(minutes=5)
DEVICE_DAYS = {"central_line_days": "central_line", "catheter_days": "urinary_catheter"}
DEVICE_OF = {"clabsi": "central_line", "cauti": "urinary_catheter"}
QUALITY_TYPES = {
    "clabsi": "quality.clabsi",
    "cauti": "quality.cauti",
    "central_line_days": "quality.device_days",
    "catheter_days": "quality.device_days",
    "fall_injury": "quality.fall_injury",
    "pressure_injury": "quality.pressure_injury",
}


class RowError(ValueError):
    """A row that validated but cannot be placed or timed; `field` names the column."""

    def __init__(self, field: str | None, message: str):
        super().__init__(message)
        self.field = field
        self.message = message


class FeedMapper:
    def __init__(self, index: PlaceIndex, zone: tzinfo, received: datetime):
        self.index = index
        self.zone = zone
        self.received = received

    def events(self, row: FeedRow) -> list[EventBase]:
        builder = getattr(self, f"_{row.feed}")
        return builder(row)  # type: ignore[no-any-return]

    # -- shared --------------------------------------------------------------------------
    def when(self, value: When, field: str) -> datetime:
        if isinstance(value, datetime):
            moment = value if value.tzinfo else value.replace(tzinfo=self.zone)
        else:
            moment = datetime.combine(value, time(0), self.zone)
        if moment > self.received + FUTURE_SLACK:
            raise RowError(
                field,
                f"{moment.isoformat()} is in the future; send records when they happen "
                "(a planned roster is not time-and-attendance)",
            )
        return moment

    def base(self, row: FeedRow, kind: str, when: datetime, key: Any) -> dict[str, Any]:
        facility = self.index.facility_id(row.facility) or "UNKNOWN"
        if self.index.units and row.facility and facility not in {f for f, _ in self.index.units}:
            known = ", ".join(sorted({f for f, _ in self.index.units}))
            raise RowError("facility", f"facility {row.facility!r} is not configured (known: {known})")
        department, unit = self.index.resolve(facility, row.unit)
        if self.index.units and department is None:
            known = ", ".join(sorted(u for f, u in self.index.units if f == facility))
            raise RowError("unit", f"unit {row.unit!r} is not a unit of {facility} (known: {known})")
        digest = hashlib.sha1(repr(key).encode()).hexdigest()[:20]
        return {
            "type": kind,
            "event_time": when,
            "received_time": self.received,
            "source": "feed",
            "source_id": f"feed:{row.feed}:{digest}:{kind}",
            "facility": facility,
            "department": department,
            "unit": unit,
        }

    # -- feeds -------------------------------------------------------------------------------
    def _staffing(self, row: StaffingRow) -> list[EventBase]:
        start = self.when(row.shift_start, "shift_start")
        licensed = row.licensed if row.licensed is not None else row.role.lower() in LICENSED_ROLES
        person: dict[str, Any] = {"staff_id": row.staff_id, "role": row.role.lower(), "licensed": licensed}
        shift = (row.facility, row.unit, row.staff_id, start.isoformat())
        events: list[EventBase] = [
            StaffingEvent(**self.base(row, "staffing.shift_start", start, shift), **person)
        ]
        if row.shift_end is None:
            return events
        end = self.when(row.shift_end, "shift_end")
        if end <= start:
            raise RowError("shift_end", "shift_end must be after shift_start")
        worked = row.worked_hours if row.worked_hours is not None else (end - start).total_seconds() / 3600
        if row.overtime_hours > worked:
            raise RowError(
                "overtime_hours", f"overtime_hours {row.overtime_hours} exceeds {worked:.2f} worked"
            )
        events.append(StaffingEvent(**self.base(row, "staffing.shift_end", end, shift), **person))
        hours = self.base(row, "staffing.hours", end, (*shift, worked, row.overtime_hours))
        hours.update(person, worked_hours=worked, overtime_hours=row.overtime_hours)
        events.append(StaffingEvent(**hours))
        return events

    def _hr(self, row: HRRow) -> list[EventBase]:
        when = self.when(row.time, "time")
        fields = row.model_dump(include={"staff_id", "role", "score", "headcount"}, exclude_none=True)
        if row.role:
            fields["role"] = row.role.lower()
        if row.hours is not None:
            fields["hours"] = row.hours
        kind = f"hr.{row.event}"
        return [HREvent(**self.base(row, kind, when, row.model_dump()), **fields)]

    def _finance(self, row: FinanceRow) -> list[EventBase]:
        when = self.when(row.time, "time")
        fields = row.model_dump(
            include={"category", "amount", "currency", "procedure_code"}, exclude_none=True
        )
        return [FinanceEvent(**self.base(row, "finance.cost", when, row.model_dump()), **fields)]

    def _experience(self, row: ExperienceRow) -> list[EventBase]:
        when = self.when(row.time, "time")
        fields: dict[str, Any] = {"question": row.question, "score": row.score}
        if row.kind == "survey":
            fields["top_box"] = row.top_box if row.top_box is not None else (row.score or 0) >= 9
        kind = f"experience.{row.kind}"
        return [ExperienceEvent(**self.base(row, kind, when, row.model_dump()), **fields)]

    def _quality(self, row: QualityRow) -> list[EventBase]:
        when = self.when(row.time, "time")
        device = DEVICE_DAYS.get(row.event) or DEVICE_OF.get(row.event)
        fields: dict[str, Any] = {"device": device, "patient_id": row.patient_id}
        if row.days is not None:
            fields["days"] = row.days
        kind = QUALITY_TYPES[row.event]
        return [QualityEvent(**self.base(row, kind, when, row.model_dump()), **fields)]
