"""Small builders of canonical events for engine tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import count
from typing import Any

from engine.events import EncounterEvent, LabEvent
from engine.history import History

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
_ids = count()

UNITS = {"ICU": "critical_care", "4W": "medicine", "3E": "medicine", "ED": "emergency"}


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def _place(unit: str | None) -> dict[str, Any]:
    return {"facility": "DEMO", "department": UNITS.get(unit or ""), "unit": unit}


def lab(kind: str, minutes: float, order: str, unit: str | None = "ICU", **fields: Any) -> LabEvent:
    when = at(minutes)
    return LabEvent(
        type=kind,  # type: ignore[arg-type]
        event_time=when,
        received_time=fields.pop("received", when),
        source=fields.pop("source", "hl7v2"),
        source_id=f"t{next(_ids)}",
        order_id=order,
        **_place(unit),
        **fields,
    )


def enc(kind: str, minutes: float, visit: str, unit: str | None = "4W", **fields: Any) -> EncounterEvent:
    when = at(minutes)
    return EncounterEvent(
        type=kind,  # type: ignore[arg-type]
        event_time=when,
        received_time=fields.pop("received", when),
        source="hl7v2",
        source_id=f"t{next(_ids)}",
        encounter_id=visit,
        **_place(unit),
        **fields,
    )


def ts(minutes: float) -> float:
    return at(minutes).timestamp()


def every_window(history: History, end: datetime | None = None) -> set[tuple[object, ...]]:
    """Every window a history answers (ending by `end`), without the time it was computed at."""
    return {
        (w.kpi, w.group, w.window.start, w.window.end, w.value, w.numerator, w.denominator, w.n, w.status)
        for kpi, facility, department, unit in history.series()
        for w in history.query(
            kpi, facility=facility, department=department or None, unit=unit or None, end=end, limit=10**7
        )
        if (w.group.department or "", w.group.unit or "") == (department, unit)
    }
