"""30-day readmissions from ADT, as a cohort of index discharges.

CMS's hospital-wide measure (and HCUP's all-cause rate) is a cohort: each index discharge
is followed for 30 days, and the rate for a period is readmitted index stays / index stays
discharged in that period. So both the numerator and the denominator count at the index
discharge's time and place (the discharging unit): a period can never exceed 100 %, and a
period's rate is complete only 30 days after it ends (the KPI's grace says so).

Index discharges: the KPI's patient classes, alive, not against medical advice, not
transferred to another acute care hospital (NUBC codes in the measure). A readmission is the
first admission of the same patient within 30 calendar days (dates in the site's time zone)
after an index discharge, of another encounter; one per index. An index discharged with a
NUBC "planned acute readmission" status (81-95) is followed, but its readmission is not
counted (planned).
A11 (cancel admit) withdraws a counted readmission; A13 (cancel discharge) withdraws an index
discharge and its readmission; A40 (merge) moves the merged-away patient's index stays to the
surviving identifier.

`Cohort` holds the rule once; the stream operator and the period report both feed it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import tzinfo
from typing import Any

from engine.definitions.measures import ReadmissionMeasure
from engine.events import EncounterEvent, EventBase
from engine.operators.base import Handler, Output, place_of
from engine.operators.values import ValueOperator
from engine.samples import GroupKey
from engine.windows import local_day

DAY = 86400.0
PLANNED_READMISSION = frozenset(str(c) for c in range(81, 96))
"""NUBC discharge statuses 81-95: discharged with a planned acute care readmission."""

Emit = Callable[[GroupKey, float, float, float, int], None]  # place, ts, d_num, d_den, d_n


class _Index:
    __slots__ = ("encounter", "place", "planned", "readmitted_by", "ts")

    def __init__(self, ts: float, place: GroupKey, encounter: str, planned: bool) -> None:
        self.ts = ts
        self.place = place
        self.encounter = encounter
        self.planned = planned
        self.readmitted_by: str | None = None

    def to_state(self) -> list[Any]:
        return [self.ts, list(self.place), self.encounter, self.planned, self.readmitted_by]

    @classmethod
    def from_state(cls, state: list[Any]) -> _Index:
        index = cls(state[0], tuple(state[1]), state[2], state[3])  # type: ignore[arg-type]
        index.readmitted_by = state[4]
        return index


class Cohort:
    """Index discharges per patient (the last `within`), and the readmissions against them."""

    def __init__(self, measure: ReadmissionMeasure, emit: Emit, zone: tzinfo | None = None):
        self.measure = measure
        self.zone = zone  # calendar days are the site's
        self.emit = emit
        self.classes = frozenset(measure.patient_classes)
        self.excluded = frozenset(measure.exclude_dispositions)
        self.days = round(measure.within / DAY)
        self.index: dict[str, list[_Index]] = {}  # patient -> index discharges, oldest first
        self.classes_seen: dict[str, str | None] = {}  # encounter -> class at admission
        self.readmissions = 0
        self.pruned_to = -math.inf
        # discharges that are not index stays by their status (death, AMA, acute transfer):
        # encounter -> (patient, ts, place), in case an A08 corrects the status
        self.left: dict[str, tuple[str, float, GroupKey]] = {}
        # encounter -> the patients whose index stays hold it (one, but for merges and
        # re-identified patients): an A13 or a corrected status finds its stay without a walk
        # of the whole cohort (some 15,000 stays in a 40-unit hospital)
        self.holders: dict[str, dict[str, None]] = {}

    def handlers(self) -> dict[str, Callable[[EventBase], None]]:
        return {
            "encounter.admit": self.on_admit,
            "encounter.discharge": self.on_discharge,
            "encounter.cancel_discharge": self.on_cancel_discharge,
            "encounter.cancel_admit": self.on_cancel_admit,
            "encounter.merge": self.on_merge,
            "encounter.update": self.on_update,
        }

    def on_update(self, event: EventBase) -> None:
        """A08 / A07: a corrected class counts for the discharge to come; a corrected discharge
        status of a discharged stay withdraws its index (now a death, AMA or transfer) or makes
        it one (no longer). A readmission admitted before such a reinstatement is not matched."""
        assert isinstance(event, EncounterEvent)
        if event.patient_class is not None and event.encounter_id in self.classes_seen:
            self.classes_seen[event.encounter_id] = event.patient_class
        disposition = event.disposition
        if disposition is None:
            return
        if disposition in self.excluded:
            withdrawn = self._withdraw(event.encounter_id)
            if withdrawn is not None:
                self.left[event.encounter_id] = (withdrawn[0], withdrawn[1].ts, withdrawn[1].place)
        elif event.encounter_id in self.left:
            patient, ts, place = self.left.pop(event.encounter_id)
            self._index(patient, ts, place, event.encounter_id, disposition)

    def _within(self, discharged: float, admitted: float) -> bool:
        if admitted < discharged:
            return False
        if self.measure.within % DAY:  # not whole days: elapsed time
            return admitted - discharged <= self.measure.within
        return local_day(admitted, self.zone) - local_day(discharged, self.zone) <= self.days  # calendar days

    def on_admit(self, event: EventBase) -> None:
        assert isinstance(event, EncounterEvent)
        if event.patient_class is not None or event.encounter_id not in self.classes_seen:
            self.classes_seen[event.encounter_id] = event.patient_class
        if event.patient_class not in self.classes or not event.patient_id:
            return
        candidates = [
            i
            for i in self.index.get(event.patient_id, ())
            if i.encounter != event.encounter_id and self._within(i.ts, event.ts)
        ]
        if not candidates or any(i.readmitted_by == event.encounter_id for i in candidates):
            return
        index = max(candidates, key=lambda i: i.ts)  # the most recent index stay
        if index.readmitted_by is not None or index.planned:
            return
        index.readmitted_by = event.encounter_id
        self.readmissions += 1
        self.emit(index.place, index.ts, 1.0, 0.0, 0)

    def on_discharge(self, event: EventBase) -> None:
        assert isinstance(event, EncounterEvent)
        patient_class = event.patient_class or self.classes_seen.get(event.encounter_id)
        self.classes_seen.pop(event.encounter_id, None)
        if patient_class not in self.classes or not event.patient_id:
            return
        if event.disposition in self.excluded:
            self.left[event.encounter_id] = (event.patient_id, event.ts, place_of(event))
            return
        self._index(event.patient_id, event.ts, place_of(event), event.encounter_id, event.disposition)

    def _index(
        self, patient: str, ts: float, place: GroupKey, encounter: str, disposition: str | None
    ) -> None:
        stays = self.index.setdefault(patient, [])
        if any(i.encounter == encounter for i in stays):
            return  # a repeated discharge of the same stay
        index = _Index(ts, place, encounter, (disposition or "") in PLANNED_READMISSION)
        stays.append(index)
        stays.sort(key=lambda i: i.ts)
        self.holders.setdefault(encounter, {})[patient] = None
        self.emit(index.place, index.ts, 0.0, 1.0, 1)

    def _release(self, encounter: str, patient: str) -> None:
        """The patient holds no index stay of the encounter any more (if so)."""
        if any(i.encounter == encounter for i in self.index.get(patient, ())):
            return
        holders = self.holders.get(encounter)
        if holders is not None:
            holders.pop(patient, None)
            if not holders:
                del self.holders[encounter]

    def on_cancel_discharge(self, event: EventBase) -> None:
        assert isinstance(event, EncounterEvent)
        self.left.pop(event.encounter_id, None)
        self._withdraw(event.encounter_id)

    def _withdraw(self, encounter: str) -> tuple[str, _Index] | None:
        """Take an index stay (and its readmission) back out of the cohort: of the patients
        holding the encounter, the first in the cohort's order, as a walk of it would find."""
        holders = self.holders.get(encounter)
        if not holders:
            return None
        patient = next(iter(holders)) if len(holders) == 1 else next(p for p in self.index if p in holders)
        stays = self.index[patient]
        index = next(i for i in stays if i.encounter == encounter)
        stays.remove(index)
        self.emit(index.place, index.ts, 0.0, -1.0, -1)
        if index.readmitted_by is not None:
            self.readmissions -= 1
            self.emit(index.place, index.ts, -1.0, 0.0, 0)
        if not stays:
            del self.index[patient]
        self._release(encounter, patient)
        return patient, index

    def on_cancel_admit(self, event: EventBase) -> None:
        """A11: an admission that never happened was no readmission."""
        assert isinstance(event, EncounterEvent)
        self.classes_seen.pop(event.encounter_id, None)
        for index in self.index.get(event.patient_id or "", ()):
            if index.readmitted_by == event.encounter_id:
                index.readmitted_by = None
                self.readmissions -= 1
                self.emit(index.place, index.ts, -1.0, 0.0, 0)

    def on_merge(self, event: EventBase) -> None:
        """A40: the merged-away identifier's index stays now belong to the survivor, and so do
        its discharges that are no index stay yet (an A08 may still correct their status)."""
        assert isinstance(event, EncounterEvent)
        gone, survivor = event.other_encounter_id, event.patient_id
        if not gone or not survivor or gone == survivor:
            return
        for encounter, (patient, ts, place) in list(self.left.items()):
            if patient == gone:
                self.left[encounter] = (survivor, ts, place)
        if gone not in self.index:
            return
        moved = self.index.pop(gone)
        stays = self.index.setdefault(survivor, []) + moved
        self.index[survivor] = sorted(stays, key=lambda i: i.ts)
        for index in moved:
            holders = self.holders[index.encounter]
            holders.pop(gone, None)
            holders[survivor] = None

    def prune(self, before: float) -> None:
        """Forget index stays whose follow-up ended before `before`."""
        horizon = before - self.measure.within - 2 * DAY  # calendar days: a local day can be 25 h
        if horizon < self.pruned_to + DAY:
            return  # at most once a day: the index stays are kept a day longer than needed
        self.pruned_to = horizon
        self.left = {k: v for k, v in self.left.items() if v[1] >= horizon}
        for patient in list(self.index):
            stays = [i for i in self.index[patient] if i.ts >= horizon]
            gone = {i.encounter for i in self.index[patient] if i.ts < horizon}
            if stays:
                self.index[patient] = stays
            else:
                del self.index[patient]
            for encounter in gone:
                self._release(encounter, patient)

    def to_state(self) -> dict[str, Any]:
        return {
            "index": {p: [i.to_state() for i in stays] for p, stays in self.index.items()},
            "classes_seen": self.classes_seen,
            "readmissions": self.readmissions,
            "left": {k: [p, ts, list(place)] for k, (p, ts, place) in self.left.items()},
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.index = {p: [_Index.from_state(s) for s in stays] for p, stays in state["index"].items()}
        self.holders = {}
        for patient, stays in self.index.items():
            for index in stays:
                self.holders.setdefault(index.encounter, {})[patient] = None
        self.classes_seen = dict(state["classes_seen"])
        self.readmissions = state["readmissions"]
        self.left = {k: (p, ts, tuple(place)) for k, (p, ts, place) in state.get("left", {}).items()}  # type: ignore[misc]


class ReadmissionOperator(ValueOperator):
    measure: ReadmissionMeasure

    def __init__(
        self,
        outputs: list[Output],
        unit_types: dict[GroupKey, str] | None = None,
        zone: tzinfo | None = None,
    ):
        super().__init__(outputs, unit_types, zone)
        self.cohort = Cohort(self.measure, self._observe, zone)

    @property
    def readmissions(self) -> int:
        return self.cohort.readmissions

    def _observe(self, place: GroupKey, ts: float, num: float, den: float, n: int) -> None:
        self.observe_ratio(place, ts, num, den, n)
        self.known.add(place)

    def subscriptions(self) -> dict[str, Handler]:
        return self.cohort.handlers()

    def _prune(self, keep_from: int) -> None:
        super()._prune(keep_from)
        self.cohort.prune(self.clock.start(keep_from - self.clock.k))

    def _state(self) -> dict[str, Any]:
        state = super()._state()
        state["cohort"] = self.cohort.to_state()
        return state

    def _restore(self, state: dict[str, Any]) -> None:
        super()._restore(state)
        self.cohort.restore(state["cohort"])
