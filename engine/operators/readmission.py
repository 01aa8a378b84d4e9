"""Cohorts over a long horizon: 30-day readmissions from ADT.

Each index discharge (right patient class, not a death or a transfer out) counts in the
denominator at its discharge time, for the unit that discharged. An admission of the same
patient within `within` after it counts in the numerator at its admission time, for that
same discharging unit, so the rate belongs to the unit whose discharge it was.
Only the last index discharge per patient is kept, and only for `within`: memory stays
bounded by the patients discharged in the last 30 days.
"""

from __future__ import annotations

from typing import Any

from engine.definitions import ReadmissionMeasure
from engine.events import EncounterEvent, EventBase
from engine.operators.base import Handler, Output, place_of
from engine.operators.values import ValueOperator
from engine.samples import GroupKey


class ReadmissionOperator(ValueOperator):
    measure: ReadmissionMeasure

    def __init__(self, outputs: list[Output], unit_types: dict[GroupKey, str] | None = None):
        super().__init__(outputs, unit_types)
        self.classes = frozenset(self.measure.patient_classes)
        self.excluded = frozenset(self.measure.exclude_dispositions)
        # patient -> (discharge ts, discharging place, encounter)
        self.last_discharge: dict[str, tuple[float, GroupKey, str]] = {}
        # encounter -> patient class at admission (discharge messages may omit it)
        self.classes_seen: dict[str, str | None] = {}
        self.readmissions = 0

    def subscriptions(self) -> dict[str, Handler]:
        return {
            "encounter.admit": self.on_admit,
            "encounter.discharge": self.on_discharge,
            "encounter.cancel_discharge": self.on_cancel_discharge,
        }

    def on_admit(self, event: EventBase) -> None:
        assert isinstance(event, EncounterEvent)
        self.classes_seen[event.encounter_id] = event.patient_class
        if event.patient_class not in self.classes or not event.patient_id:
            return
        previous = self.last_discharge.get(event.patient_id)
        if previous is None:
            return
        discharged, place, encounter = previous
        gap = event.ts - discharged
        if encounter != event.encounter_id and 0 <= gap <= self.measure.within:
            self.readmissions += 1
            self.observe_ratio(place, event.ts, 1.0, 0.0, 0)
            self.known.add(place)

    def on_discharge(self, event: EventBase) -> None:
        assert isinstance(event, EncounterEvent)
        patient_class = event.patient_class or self.classes_seen.get(event.encounter_id)
        self.classes_seen.pop(event.encounter_id, None)
        if patient_class not in self.classes or not event.patient_id:
            return
        if event.disposition in self.excluded:
            return
        place = place_of(event)
        self.observe_ratio(place, event.ts, 0.0, 1.0, 1)
        self.known.add(place)
        self.last_discharge.pop(event.patient_id, None)  # re-insert: the dict stays oldest-first
        self.last_discharge[event.patient_id] = (event.ts, place, event.encounter_id)

    def on_cancel_discharge(self, event: EventBase) -> None:
        assert isinstance(event, EncounterEvent)
        if not event.patient_id:
            return
        previous = self.last_discharge.get(event.patient_id)
        if previous is not None and previous[2] == event.encounter_id:
            del self.last_discharge[event.patient_id]
            self.observe_ratio(previous[1], previous[0], 0.0, -1.0, -1)

    def _prune(self, keep_from: int) -> None:
        super()._prune(keep_from)
        horizon = keep_from * self.clock.pane - self.measure.within - self.clock.size
        while self.last_discharge:
            patient, (ts, _, _) = next(iter(self.last_discharge.items()))
            if ts >= horizon:
                break
            del self.last_discharge[patient]

    def _state(self) -> dict[str, Any]:
        state = super()._state()
        state["last_discharge"] = [
            [p, ts, list(place), enc] for p, (ts, place, enc) in self.last_discharge.items()
        ]
        state["classes_seen"] = self.classes_seen
        state["readmissions"] = self.readmissions
        return state

    def _restore(self, state: dict[str, Any]) -> None:
        super()._restore(state)
        self.last_discharge = {p: (ts, tuple(place), enc) for p, ts, place, enc in state["last_discharge"]}  # type: ignore[misc]
        self.classes_seen = dict(state["classes_seen"])
        self.readmissions = state["readmissions"]
