"""Levels derived from events: patients in each unit (census), licensed staff on shift.

ADT is a stream of moves, not of counts: admissions, transfers, discharges and the cancels
that undo them. The tracker keeps each encounter's stay as a list of (time, place, delta)
steps, turns every move into level deltas at event time, and undoes a cancelled step by
emitting its negation at the original time, so the time integral (patient-days) is exact
whatever order the messages came in.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine.events import BedEvent, EncounterEvent, EventBase, HREvent, StaffingEvent
from engine.operators.base import place_of
from engine.samples import GroupKey

Emit = Callable[[str, GroupKey, float, float], None]

DISCHARGED_RETENTION = 14 * 86400.0
"""How long a discharged stay is remembered (for A13 cancel discharge, late messages)."""


class _Stay:
    __slots__ = ("discharged", "place", "steps")

    def __init__(self) -> None:
        self.place: GroupKey | None = None
        self.steps: list[tuple[float, GroupKey, int, str]] = []  # ts, place, delta, why
        self.discharged: float | None = None


class CensusTracker:
    """Patients per unit from encounter events; emits ('patients', place, ts, delta)."""

    level = "patients"

    def __init__(self, emit: Emit):
        self.emit = emit
        self.stays: dict[str, _Stay] = {}
        self.discharges: dict[str, float] = {}  # encounter -> discharge ts, oldest first

    def handlers(self) -> dict[str, Callable[[EventBase], None]]:
        return {
            "encounter.admit": self._arrive,
            "encounter.register": self._arrive,
            "encounter.transfer": self._move,
            "encounter.update": self._update,
            "encounter.discharge": self._discharge,
            "encounter.cancel_admit": self._cancel_admit,
            "encounter.cancel_transfer": self._cancel_transfer,
            "encounter.cancel_discharge": self._cancel_discharge,
            "encounter.swap_beds": self._move,
        }

    def _step(self, stay: _Stay, ts: float, place: GroupKey, delta: int, why: str) -> None:
        stay.steps.append((ts, place, delta, why))
        self.emit(self.level, place, ts, delta)

    def _arrive(self, event: EventBase) -> None:
        assert isinstance(event, EncounterEvent)
        if event.unit is None:
            return
        stay = self.stays.get(event.encounter_id)
        if stay is None:
            stay = self.stays[event.encounter_id] = _Stay()
        place = place_of(event)
        if stay.place is not None:
            self._relocate(stay, event.ts, place)
            return
        if stay.discharged is not None and stay.discharged > event.ts:
            # The discharge came first: the stay ran from this arrival to that discharge.
            self._step(stay, event.ts, place, 1, "admit")
            self._step(stay, stay.discharged, place, -1, "discharge")
            return
        stay.discharged = None
        stay.place = place
        self._step(stay, event.ts, place, 1, "admit")

    def _relocate(self, stay: _Stay, ts: float, place: GroupKey) -> None:
        if stay.place == place or stay.place is None:
            return
        old = stay.place
        stay.place = place
        self._step(stay, ts, old, -1, "move")
        self._step(stay, ts, place, 1, "move")

    def _move(self, event: EventBase) -> None:
        assert isinstance(event, EncounterEvent)
        if event.unit is None:
            return
        stay = self.stays.get(event.encounter_id)
        if stay is None or stay.place is None:
            self._arrive(event)  # we missed the admission: the patient is here now
            return
        self._relocate(stay, event.ts, place_of(event))

    def _update(self, event: EventBase) -> None:
        assert isinstance(event, EncounterEvent)
        stay = self.stays.get(event.encounter_id)
        if stay is not None and stay.place is not None and event.unit is not None:
            self._relocate(stay, event.ts, place_of(event))

    def _discharge(self, event: EventBase) -> None:
        assert isinstance(event, EncounterEvent)
        stay = self.stays.get(event.encounter_id)
        if stay is None:
            stay = self.stays[event.encounter_id] = _Stay()
        if stay.place is None:
            stay.discharged = event.ts  # remember it; an admission may still arrive
            return
        place = stay.place
        stay.place = None
        stay.discharged = event.ts
        self.discharges.pop(event.encounter_id, None)
        self.discharges[event.encounter_id] = event.ts
        self._step(stay, event.ts, place, -1, "discharge")

    def _undo(self, stay: _Stay, indices: list[int]) -> None:
        for i in sorted(indices, reverse=True):
            ts, place, delta, _ = stay.steps.pop(i)
            self.emit(self.level, place, ts, -delta)

    def _cancel_admit(self, event: EventBase) -> None:
        assert isinstance(event, EncounterEvent)
        stay = self.stays.pop(event.encounter_id, None)
        if stay is None:
            return
        for ts, place, delta, _ in stay.steps:
            self.emit(self.level, place, ts, -delta)

    def _cancel_transfer(self, event: EventBase) -> None:
        assert isinstance(event, EncounterEvent)
        stay = self.stays.get(event.encounter_id)
        if stay is None or stay.place is None:
            return
        moves = [i for i, step in enumerate(stay.steps) if step[3] == "move"]
        if len(moves) < 2:
            return
        left = moves[-2]  # a move is (-1 at the old place, +1 at the new one)
        stay.place = stay.steps[left][1]
        self._undo(stay, moves[-2:])

    def _cancel_discharge(self, event: EventBase) -> None:
        assert isinstance(event, EncounterEvent)
        stay = self.stays.get(event.encounter_id)
        if stay is None or stay.place is not None or stay.discharged is None:
            return
        stay.discharged = None
        out = [i for i, step in enumerate(stay.steps) if step[3] == "discharge"]
        if out:
            stay.place = stay.steps[out[-1]][1]
            self._undo(stay, out[-1:])

    def prune(self, before: float) -> None:
        """Forget stays discharged long ago (oldest first, without scanning the census)."""
        cutoff = before - DISCHARGED_RETENTION
        while self.discharges:
            key, when = next(iter(self.discharges.items()))
            if when >= cutoff:
                break
            del self.discharges[key]
            stay = self.stays.get(key)
            if stay is not None and stay.place is None and stay.discharged == when:
                del self.stays[key]

    def snapshot(self) -> dict[str, Any]:
        return {
            "stays": {
                k: [
                    list(s.place) if s.place else None,
                    s.discharged,
                    [[t, list(p), d, w] for t, p, d, w in s.steps],
                ]
                for k, s in self.stays.items()
            },
            "discharges": list(self.discharges.items()),
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.stays = {}
        self.discharges = dict(state["discharges"])
        for k, (place, discharged, steps) in state["stays"].items():
            stay = _Stay()
            stay.place = tuple(place) if place else None  # type: ignore[assignment]
            stay.discharged = discharged
            stay.steps = [(t, tuple(p), d, w) for t, p, d, w in steps]  # type: ignore[misc]
            self.stays[k] = stay


class StaffTracker:
    """Who is on shift where, from roster events: licensed staff per unit feed the level
    ('licensed_staff', ...); everyone's role is kept for alert routing (the charge nurse
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
        if not event.licensed or event.unit is None:
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


NURSE_ROLES = frozenset({"rn", "registered_nurse", "nurse"})


class RosterTracker:
    """Headcount from HR events: staff per unit, registered nurses, certified nurses.

    hr.headcount sets a unit's staff level (a baseline from the HR system); hires and
    separations move it; certifications granted/expired move the certified nurses.
    """

    levels = ("staff", "registered_nurses", "certified_nurses")

    def __init__(self, emit: Emit):
        self.emit = emit
        self.people: dict[str, tuple[GroupKey, bool, bool]] = {}  # staff -> place, nurse, certified
        self.staff_level: dict[GroupKey, float] = {}

    def handlers(self) -> dict[str, Callable[[EventBase], None]]:
        return {
            "hr.hire": self._hire,
            "hr.separation": self._separation,
            "hr.certification_granted": self._certified,
            "hr.certification_expired": self._expired,
            "hr.headcount": self._headcount,
        }

    def _move(self, level: str, place: GroupKey, ts: float, delta: float) -> None:
        if level == "staff":
            self.staff_level[place] = self.staff_level.get(place, 0.0) + delta
        self.emit(level, place, ts, delta)

    def _hire(self, event: EventBase) -> None:
        assert isinstance(event, HREvent)
        if not event.staff_id or event.staff_id in self.people:
            return
        place = place_of(event)
        nurse = (event.role or "").lower() in NURSE_ROLES
        self.people[event.staff_id] = (place, nurse, False)
        self._move("staff", place, event.ts, 1)
        if nurse:
            self._move("registered_nurses", place, event.ts, 1)

    def _separation(self, event: EventBase) -> None:
        assert isinstance(event, HREvent)
        person = self.people.pop(event.staff_id or "", None)
        if person is None:
            # not hired through this feed: still leaves the unit's headcount
            self._move("staff", place_of(event), event.ts, -1)
            if (event.role or "").lower() in NURSE_ROLES:
                self._move("registered_nurses", place_of(event), event.ts, -1)
            return
        place, nurse, certified = person
        self._move("staff", place, event.ts, -1)
        if nurse:
            self._move("registered_nurses", place, event.ts, -1)
        if certified:
            self._move("certified_nurses", place, event.ts, -1)

    def _certified(self, event: EventBase) -> None:
        assert isinstance(event, HREvent)
        staff = event.staff_id or ""
        person = self.people.get(staff)
        if person is None:
            # a nurse already on staff before the feed started: count them now
            person = (place_of(event), True, False)
            self._move("staff", person[0], event.ts, 1)
            self._move("registered_nurses", person[0], event.ts, 1)
        place, nurse, certified = person
        if nurse and not certified:
            self.people[staff] = (place, nurse, True)
            self._move("certified_nurses", place, event.ts, 1)
        elif not nurse:
            self.people[staff] = person

    def _expired(self, event: EventBase) -> None:
        assert isinstance(event, HREvent)
        staff = event.staff_id or ""
        person = self.people.get(staff)
        if person is not None and person[2]:
            self.people[staff] = (person[0], person[1], False)
            self._move("certified_nurses", person[0], event.ts, -1)

    def _headcount(self, event: EventBase) -> None:
        assert isinstance(event, HREvent)
        if event.headcount is None:
            return
        place = place_of(event)
        delta = event.headcount - self.staff_level.get(place, 0.0)
        if delta:
            self._move("staff", place, event.ts, delta)

    def snapshot(self) -> dict[str, Any]:
        return {
            "people": {k: [list(p), n, c] for k, (p, n, c) in self.people.items()},
            "staff_level": [[list(k), v] for k, v in self.staff_level.items()],
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.people = {k: (tuple(p), n, c) for k, (p, n, c) in state["people"].items()}  # type: ignore[misc]
        self.staff_level = {tuple(k): v for k, v in state["staff_level"]}  # type: ignore[misc]


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
