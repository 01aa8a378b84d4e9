"""Levels derived from events: each tracker turns events into steps (level, place, ts, delta)
that the engine feeds to the operators and the period report integrates over time.

Here: direct-care licensed staff on shift (roster events) and staffed beds that close and
reopen. The patient census is engine/census.py, HR headcount engine/roster.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine.events import BedEvent, EventBase, StaffingEvent
from engine.operators.base import place_of
from engine.samples import GroupKey

Emit = Callable[[str, GroupKey, float, float], None]
"""How a tracker reports a step: (level, place, ts, delta)."""


class StaffTracker:
    """Who is on shift where, from roster events: direct-care licensed nurses per unit feed
    the level ('licensed_staff', ...); everyone's role is kept for alert routing (the charge nurse
    of a unit is whoever is on shift there with that role)."""

    level = "licensed_staff"

    def __init__(self, emit: Emit):
        self.emit = emit
        self.on_shift: dict[str, tuple[float, GroupKey]] = {}
        self.roster: dict[str, tuple[str, GroupKey]] = {}  # staff id -> (role, place), everyone

    def holders(self, role: str) -> list[tuple[str, GroupKey]]:
        """(staff id, place) of everyone on shift with this role."""
        return [(staff, place) for staff, (r, place) in self.roster.items() if r == role]

    def handlers(self) -> dict[str, Callable[[EventBase], None]]:
        return {"staffing.shift_start": self._start, "staffing.shift_end": self._end}

    def _start(self, event: EventBase) -> None:
        assert isinstance(event, StaffingEvent)
        if event.unit is not None:
            self.roster[event.staff_id] = (event.role, place_of(event))
        if not event.licensed or not event.direct_care or event.unit is None:
            previous = self.on_shift.pop(event.staff_id, None)  # e.g. now the charge nurse
            if previous is not None:
                self.emit(self.level, previous[1], event.ts, -1)
            return
        previous = self.on_shift.get(event.staff_id)
        if previous is not None:
            self.emit(self.level, previous[1], event.ts, -1)
        place = place_of(event)
        self.on_shift[event.staff_id] = (event.ts, place)
        self.emit(self.level, place, event.ts, 1)

    def _end(self, event: EventBase) -> None:
        assert isinstance(event, StaffingEvent)
        self.roster.pop(event.staff_id, None)
        previous = self.on_shift.pop(event.staff_id, None)
        if previous is not None:
            self.emit(self.level, previous[1], event.ts, -1)

    def snapshot(self) -> dict[str, Any]:
        return {
            "on_shift": {k: [ts, list(p)] for k, (ts, p) in self.on_shift.items()},
            "roster": {k: [role, list(p)] for k, (role, p) in self.roster.items()},
        }

    def restore(self, state: dict[str, Any]) -> None:
        if "on_shift" not in state:  # snapshots before the roster was kept
            state = {"on_shift": state, "roster": {}}
        self.on_shift = {k: (ts, tuple(p)) for k, (ts, p) in state["on_shift"].items()}  # type: ignore[misc]
        self.roster = {k: (role, tuple(p)) for k, (role, p) in state["roster"].items()}  # type: ignore[misc]


class BedTracker:
    """Staffed beds that close and reopen: emits ('beds', place, ts, -1 / +1).

    Beds start as counted in the places config; a bed reported unavailable leaves the count
    until it is reported available again."""

    level = "beds"

    def __init__(self, emit: Emit):
        self.emit = emit
        self.beds: dict[str, tuple[GroupKey, bool]] = {}

    def handlers(self) -> dict[str, Callable[[EventBase], None]]:
        return {"bed.status": self._status}

    def _status(self, event: EventBase) -> None:
        assert isinstance(event, BedEvent)
        place = place_of(event)
        previous = self.beds.get(event.bed_id)
        was_available = previous[1] if previous is not None else True
        old_place = previous[0] if previous is not None else place
        if not was_available:
            self.emit(self.level, old_place, event.ts, 1)
        if not event.available:
            self.emit(self.level, place, event.ts, -1)
        self.beds[event.bed_id] = (place, event.available)

    def snapshot(self) -> dict[str, Any]:
        return {k: [list(p), a] for k, (p, a) in self.beds.items()}

    def restore(self, state: dict[str, Any]) -> None:
        self.beds = {k: (tuple(p), a) for k, (p, a) in state.items()}  # type: ignore[misc]
