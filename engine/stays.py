"""Encounters as facts: where a patient was, in which class, on leave or not, and when.

ADT is a stream of facts, not of counts: admissions, transfers, leaves of absence, class
changes, discharges, and the cancels that withdraw them (A11, A12, A13). A `StayBook` keeps
each encounter's facts and calls back whenever an encounter's facts change; whoever derives
something from a stay (the census, lengths of stay, ED intervals) recomputes it from the facts
and keeps only the difference. Corrections and messages out of time order therefore give the
same answer as a clean feed.
"""

from __future__ import annotations

import math
from bisect import insort
from collections.abc import Callable, Iterator
from typing import Any

from engine.events import EncounterEvent, EventBase
from engine.samples import GroupKey

DISCHARGED_RETENTION = 14 * 86400.0
"""How long a discharged stay is remembered (for A13 cancel discharge, late messages)."""

PLACED_BY_ENCOUNTER = frozenset(
    f"nursecall.{phase}" for phase in ("placed", "acknowledged", "arrived", "ended", "cancelled")
)
"""Events that, naming no unit, take their encounter's (StayBook.place_by_encounter)."""

ARRIVE, MOVE, CLASS, LEAVE, RETURN, DISCHARGE = "arrive", "move", "class", "leave", "return", "discharge"

Fact = tuple[float, str, GroupKey | None, str | None]  # ts, kind, place, patient class


def _fact_time(fact: Fact) -> float:
    return fact[0]


State = tuple[GroupKey | None, str | None, bool]  # place, patient class, on leave


def after_fact(state: State, fact: Fact) -> State:
    """(place, class, on leave) after one more fact."""
    place, cls, away = state
    _, kind, where, klass = fact
    if klass is not None:
        cls = klass
    if kind == DISCHARGE:
        return None, cls, False
    if kind == LEAVE:
        return place, cls, place is not None
    if kind == RETURN:
        return place, cls, False
    if where is not None and (kind in (ARRIVE, MOVE) or place is not None):
        return where, cls, away
    return place, cls, away


NO_STATE: State = (None, None, False)


class Stay:
    """One encounter: its patient and its facts."""

    __slots__ = ("facts", "mark", "memo", "patient", "steps", "version")

    def __init__(self, patient: str | None = None) -> None:
        self.patient = patient
        self.facts: list[Fact] = []
        self.steps: list[Any] = []  # what the owner derived from the facts last time
        self.mark: Any = None  # the owner's note of how far `steps` went (not in snapshots)
        self.version = 0  # bumped on every change of the facts (StayBook._changed)
        self.memo: dict[Any, tuple[int, Any]] | None = None  # readers' results at a version

    def timeline(self) -> Iterator[tuple[float, str, GroupKey | None, str | None, bool, GroupKey | None]]:
        """(ts, fact kind, place, class, on leave) after each fact, in time order, and the
        place the fact itself named (a discharge names the unit discharged from)."""
        state = NO_STATE
        for fact in self.facts:  # kept in time order (StayBook.add)
            state = after_fact(state, fact)
            yield fact[0], fact[1], state[0], state[1], state[2], fact[2]

    def state(self) -> tuple[GroupKey | None, str | None, bool]:
        """(place, class, on leave) after every fact."""
        last: tuple[GroupKey | None, str | None, bool] = (None, None, False)
        for _, _, place, cls, away, _ in self.timeline():
            last = (place, cls, away)
        return last

    def place_at(self, ts: float) -> GroupKey | None:
        """Where the patient was at ts (None: not yet arrived, or discharged)."""
        place: GroupKey | None = None
        for when, _, where, _, _, _ in self.timeline():
            if when > ts:
                break
            place = where
        return place

    @property
    def place(self) -> GroupKey | None:
        """Where the patient is now (None once discharged)."""
        return self.state()[0]

    def last_ts(self) -> float:
        return self.facts[-1][0] if self.facts else -math.inf

    def discharged(self) -> float | None:
        """When the stay ended (its last fact is a discharge), else None."""
        if not self.facts:
            return None
        last = self.facts[-1]
        return last[0] if last[1] == DISCHARGE else None


OnChange = Callable[[str, Stay], None]


class StayBook:
    """Every encounter's facts, kept from the encounter events. Each listener is called with
    (key, stay) after each change: one book serves the census and every stay KPI. A stay
    whose facts are all withdrawn is reported once with no facts, then forgotten."""

    def __init__(self, on_change: OnChange | None = None):
        self.listeners: list[OnChange] = [on_change] if on_change is not None else []
        self.stays: dict[str, Stay] = {}
        self.by_patient: dict[str, set[str]] = {}
        self.discharges: dict[str, float] = {}  # encounter -> discharge ts, oldest first
        self.forgotten = 0  # stays forgotten so far: what follows the book sweeps when it grows

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
            "encounter.leave_start": self._leave,
            "encounter.leave_end": self._return,
        }

    def place_by_encounter(self, event: EventBase) -> EventBase:
        """An event that names its encounter but no unit (a FHIR Communication nurse call),
        placed at the unit the encounter was on at the event's time, as far as the encounter's
        facts known now say; unchanged when the encounter is unknown here or was on no unit."""
        key = getattr(event, "encounter_id", None)
        stay = self.stays.get(key) if key is not None else None
        place = stay.place_at(event.ts) if stay is not None else None
        if place is None or place[0] != event.facility:
            return event
        return event.replacing({"department": place[1], "unit": place[2], "place": place})

    def add(self, key: str, fact: Fact, patient: str | None = None) -> None:
        """Record a fact (also used for facts derived from time passing, e.g. an expiry)."""
        stay = self.stays.get(key)
        if stay is None:
            stay = self.stays[key] = Stay(patient)
        if patient and stay.patient is None:
            stay.patient = patient
        if stay.patient:
            self.by_patient.setdefault(stay.patient, set()).add(key)
        insort(stay.facts, fact, key=_fact_time)  # time order; same time: arrival order
        self._changed(key, stay)

    def _changed(self, key: str, stay: Stay) -> None:
        stay.version += 1
        for listener in self.listeners:
            listener(key, stay)
        ended = stay.discharged()
        self.discharges.pop(key, None)
        if ended is not None:
            self.discharges[key] = ended

    def _fact(
        self, event: EncounterEvent, kind: str, where: GroupKey | None, default_class: str | None
    ) -> None:
        self.add(
            event.encounter_id,
            (event.ts, kind, where, event.patient_class or default_class),
            event.patient_id,
        )

    def _arrive(self, event: EventBase) -> None:
        assert isinstance(event, EncounterEvent)
        if event.unit is None:
            return
        default = "inpatient" if event.type == "encounter.admit" else "outpatient"
        self._fact(event, ARRIVE, event.place, default)

    def _move(self, event: EventBase) -> None:
        assert isinstance(event, EncounterEvent)
        if event.unit is None:
            return
        self._fact(event, MOVE, event.place, None if event.encounter_id in self.stays else "inpatient")

    def _update(self, event: EventBase) -> None:
        """A08/A07: a new unit is a move of a patient already here; a new class counts from now."""
        assert isinstance(event, EncounterEvent)
        if event.encounter_id not in self.stays:
            return
        self._fact(event, CLASS, event.place if event.unit is not None else None, None)

    def _leave(self, event: EventBase) -> None:
        assert isinstance(event, EncounterEvent)
        self._fact(event, LEAVE, None, None)

    def _return(self, event: EventBase) -> None:
        assert isinstance(event, EncounterEvent)
        self._fact(event, RETURN, None, None)

    def _discharge(self, event: EventBase) -> None:
        assert isinstance(event, EncounterEvent)
        self._fact(event, DISCHARGE, event.place if event.unit is not None else None, None)

    def _cancel_admit(self, event: EventBase) -> None:
        assert isinstance(event, EncounterEvent)
        stay = self.stays.get(event.encounter_id)
        if stay is None:
            return
        stay.facts = []
        self._changed(event.encounter_id, stay)
        self._forget(event.encounter_id)

    def _cancel_last(self, event: EventBase, kinds: tuple[str, ...]) -> None:
        assert isinstance(event, EncounterEvent)
        stay = self.stays.get(event.encounter_id)
        if stay is None:
            return
        found = [i for i, f in enumerate(stay.facts) if f[1] in kinds]
        if not found:
            return
        stay.facts.pop(found[-1])  # the latest (facts are in time order)
        self._changed(event.encounter_id, stay)

    def _cancel_transfer(self, event: EventBase) -> None:
        self._cancel_last(event, (MOVE,))

    def _cancel_discharge(self, event: EventBase) -> None:
        self._cancel_last(event, (DISCHARGE,))

    def _forget(self, key: str) -> None:
        self.forgotten += 1
        stay = self.stays.pop(key, None)
        self.discharges.pop(key, None)
        if stay is not None and stay.patient:
            keys = self.by_patient.get(stay.patient)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self.by_patient[stay.patient]

    def prune(self, before: float) -> None:
        """Forget stays discharged long ago (oldest discharge first: stop at the first recent one)."""
        cutoff = before - DISCHARGED_RETENTION
        while self.discharges:
            key, when = next(iter(self.discharges.items()))
            if when >= cutoff:
                break
            stay = self.stays.get(key)
            if stay is None or stay.discharged() == when:
                self._forget(key)
            else:
                del self.discharges[key]

    def snapshot(self) -> dict[str, Any]:
        return {
            "stays": {
                k: [s.patient, [[t, kind, list(p) if p else None, c] for t, kind, p, c in s.facts], s.steps]
                for k, s in self.stays.items()
            },
            "discharges": list(self.discharges.items()),
        }

    def restore(self, state: dict[str, Any], steps: Callable[[Any], Any] = lambda s: s) -> None:
        self.stays, self.by_patient = {}, {}
        self.discharges = dict(state["discharges"])
        for k, (patient, facts, derived) in state["stays"].items():
            stay = Stay(patient)
            stay.facts = [(t, kind, tuple(p) if p else None, c) for t, kind, p, c in facts]  # type: ignore[misc]
            stay.facts.sort(key=_fact_time)
            stay.steps = steps(derived)
            self.stays[k] = stay
            if patient:
                self.by_patient.setdefault(patient, set()).add(k)
