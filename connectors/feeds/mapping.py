"""Valid feed rows to canonical events.

Each event's source_id is derived from the row's content, so sending a file again stores
nothing new, and a staffing row sent at clock-in and again at clock-out stores its start once.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, tzinfo
from typing import Any

from connectors.feeds.schemas import (
    REVENUE_CATEGORIES,
    ExperienceRow,
    FeedRow,
    FinanceRow,
    HRRow,
    QualityRow,
    StaffingRow,
    When,
)
from connectors.pipeline import InputRejected, digest
from connectors.places import PlaceLookup
from engine import hcahps
from engine.events import (
    EventBase,
    ExperienceEvent,
    FinanceEvent,
    HREvent,
    QualityEvent,
    StaffingEvent,
)
from engine.places import PlaceIndex, UnknownPlace
from engine.timebounds import DEFAULT_BOUNDS, TimeBounds
from engine.vocabulary import DIRECT_CARE_ROLES, INJURY_FALL_LEVELS, LICENSED_ROLES, canonical_role

SURVEY_COLUMNS = frozenset({"discharge", "survey_id", "answer"})
DEVICE_DAYS = {"central_line_days": "central_line", "catheter_days": "urinary_catheter"}
DEVICE_OF = {"clabsi": "central_line", "cauti": "urinary_catheter"}
QUALITY_TYPES = {
    "clabsi": "quality.clabsi",
    "cauti": "quality.cauti",
    "central_line_days": "quality.device_days",
    "catheter_days": "quality.device_days",
    "fall": "quality.fall",
    "fall_injury": "quality.fall_injury",
    "pressure_injury": "quality.pressure_injury",
}
ADDED_QUALITY_COLUMNS = ("stage", "present_on_admission", "injury")


ADDED_HR_COLUMNS = ("positions", "certification", "hire_date", "from_unit", "scale_max")


def _key(row: FeedRow, added: tuple[str, ...]) -> dict[str, Any]:
    """The row's content as its identity; columns added to the schema later stay out while
    empty, so a file sent before they existed and sent again keeps its ids (stored once)."""
    return row.model_dump(exclude={n for n in added if getattr(row, n) is None})


def _a_year_after(day: date) -> date:
    try:
        return day.replace(year=day.year + 1)
    except ValueError:  # 29 February
        return day.replace(year=day.year + 1, day=28) + timedelta(days=1)


class RowError(InputRejected):
    """A row that validated but cannot be placed or timed (the pipeline's InputRejected);
    `field` names the column."""

    def __init__(self, field: str | None, message: str):
        super().__init__(message, field)
        self.field = field
        self.message = message


class FeedMapper:
    def __init__(
        self, index: PlaceIndex, zone: tzinfo, received: datetime, bounds: TimeBounds = DEFAULT_BOUNDS
    ):
        self.index = index
        self.places = PlaceLookup(index)
        self.zone = zone
        self.received = received
        self.bounds = bounds

    def events(self, row: FeedRow) -> list[EventBase]:
        builder = getattr(self, f"_{row.feed}")
        return builder(row)  # type: ignore[no-any-return]

    # -- shared --------------------------------------------------------------------------
    def when(self, value: When, field: str) -> datetime:
        if isinstance(value, datetime):
            moment = value if value.tzinfo else value.replace(tzinfo=self.zone)
        else:
            moment = datetime.combine(value, time(0), self.zone)
        problem = self.bounds.problem(moment, self.received)
        if problem is not None:
            if moment > self.received:
                problem += "; send records when they happen (a planned roster is not time-and-attendance)"
            raise RowError(field, problem)
        return moment

    def base(self, row: FeedRow, kind: str, when: datetime, key: Any) -> dict[str, Any]:
        try:  # a feed refuses every place that is not configured (a file is sent again)
            place = self.places.locate(row.facility, row.unit, strict=True)
        except UnknownPlace as exc:
            raise RowError(exc.kind, str(exc)) from None
        row_digest = digest(repr(key))
        return {
            "type": kind,
            "event_time": when,
            "received_time": self.received,
            "source": "feed",
            "source_id": f"feed:{row.feed}:{row_digest}:{kind}",
            **place,
        }

    # -- feeds -------------------------------------------------------------------------------
    def _staffing(self, row: StaffingRow) -> list[EventBase]:
        start = self.when(row.shift_start, "shift_start")
        role = canonical_role(row.role)
        licensed = row.licensed if row.licensed is not None else role in LICENSED_ROLES
        direct = row.direct_care if row.direct_care is not None else role in DIRECT_CARE_ROLES
        person: dict[str, Any] = {
            "staff_id": row.staff_id,
            "role": role,
            "licensed": licensed,
            "direct_care": direct,
        }
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
        fields = row.model_dump(
            include={"staff_id", "role", "score", "headcount", "positions", "certification"},
            exclude_none=True,
        )
        if row.role:
            fields["role"] = canonical_role(row.role)
        if row.hours is not None:
            fields["hours"] = row.hours
        if row.hire_date is not None:
            if row.hire_date > when.date():
                raise RowError("hire_date", f"hire_date {row.hire_date} is after the separation")
            fields["first_year"] = when.date() < _a_year_after(row.hire_date)
        if row.from_unit is not None:
            facility = self.places.facility(row.facility, admit=False, fallback="UNKNOWN")
            assert facility is not None
            try:
                department, unit = self.places.unit(facility, row.from_unit, strict=True, name_known=False)
            except UnknownPlace as exc:
                raise RowError("from_unit", str(exc)) from None
            fields.update(prior_department=department, prior_unit=unit)
        kind = f"hr.{row.event}"
        return [HREvent(**self.base(row, kind, when, _key(row, ADDED_HR_COLUMNS)), **fields)]

    def _finance(self, row: FinanceRow) -> list[EventBase]:
        when = self.when(row.time, "time")
        fields = row.model_dump(
            include={"category", "amount", "currency", "procedure_code"}, exclude_none=True
        )
        kind = "finance.revenue" if row.category in REVENUE_CATEGORIES else "finance.cost"
        key = _key(row, ("kind",))
        return [FinanceEvent(**self.base(row, kind, when, key), **fields)]

    def _experience(self, row: ExperienceRow) -> list[EventBase]:
        received = self.when(row.time, "time")
        kind = f"experience.{row.kind}"
        # rows without the survey columns keep the idempotency key they had before them
        key = {k: v for k, v in row.model_dump().items() if v is not None or k not in SURVEY_COLUMNS}
        fields: dict[str, Any] = {"question": row.question, "score": row.score}
        if row.kind == "complaint":
            return [ExperienceEvent(**self.base(row, kind, received, key), **fields)]
        when = self.when(row.discharge, "discharge") if row.discharge is not None else received
        fields["survey_id"] = row.survey_id or row.response_id
        item = hcahps.lookup(row.question) if row.question else None
        if item is None:  # the sender's own item: stored as sent, in no HCAHPS measure
            top = row.top_box if row.top_box is not None else None if row.score is None else row.score >= 9
            fields.update(answer=row.answer, top_box=top)
            return [ExperienceEvent(**self.base(row, kind, when, key), **fields)]
        if not fields["survey_id"]:
            raise RowError(
                "survey_id",
                f"{row.question} is HCAHPS item {item.id} (Q{item.number}): send survey_id (or response_id), "
                "the returned questionnaire it belongs to; the KPIs count surveys, not answers",
            )
        fields.update(item=item.id, domain=item.domain)
        if item.role == "about_you":  # patient-mix adjustment data: its receipt only, not the answer
            fields["score"] = None
        elif (raw := row.answer if row.answer is not None else row.score) is not None:
            try:
                answer, top = hcahps.score(item.id, raw)
            except ValueError as exc:
                raise RowError("answer" if row.answer is not None else "score", str(exc)) from None
            if row.top_box is not None and top is not None and row.top_box != top:
                raise RowError(
                    "top_box",
                    f"top_box {str(row.top_box).lower()} disagrees with the answer {answer!r}: the top box "
                    f"of {item.id} is {hcahps.DOMAINS[item.domain or ''].top_box!r}",
                )
            fields.update(answer=answer, top_box=top)
        elif item.role == "scored":  # a vendor's top-box flag without the answer
            fields["top_box"] = row.top_box
        survey_key = ("hcahps", row.facility, fields["survey_id"], item.id)  # one answer per survey and item
        return [ExperienceEvent(**self.base(row, kind, when, survey_key), **fields)]

    def _quality(self, row: QualityRow) -> list[EventBase]:
        when = self.when(row.time, "time")
        device = DEVICE_DAYS.get(row.event) or DEVICE_OF.get(row.event)
        fields: dict[str, Any] = {"device": device, "patient_id": row.patient_id}
        if row.days is not None:
            fields["days"] = row.days
        if row.event == "pressure_injury":
            fields["stage"] = row.stage
            fields["present_on_admission"] = row.present_on_admission
        kind = QUALITY_TYPES[row.event]
        # columns added later stay out of the key while empty: a file sent before they existed
        # and sent again keeps its ids (stored once)
        key = row.model_dump(exclude={n for n in ADDED_QUALITY_COLUMNS if getattr(row, n) is None})
        if row.event in ("fall", "fall_injury"):
            return self._fall(row, when, key, fields)
        return [QualityEvent(**self.base(row, kind, when, key), **fields)]

    def _fall(self, row: QualityRow, when: datetime, key: Any, fields: dict[str, Any]) -> list[EventBase]:
        """Every fall is a quality.fall (NDNQI falls, all injury levels); one with minor or worse
        injury is also a quality.fall_injury (falls with injury). A fall_injury row is both."""
        fields = {**fields, "injury": row.injury}
        events: list[EventBase] = [QualityEvent(**self.base(row, "quality.fall", when, key), **fields)]
        if row.event == "fall_injury" or row.injury in INJURY_FALL_LEVELS:
            events.append(QualityEvent(**self.base(row, "quality.fall_injury", when, key), **fields))
        return events
