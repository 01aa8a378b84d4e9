"""Patient flow in the demo hospital's EMR, as ADT messages: ED arrivals (A04), decisions
to admit (A06), admissions (A01), transfers (A02), discharges (A03) and readmissions within
30 days, both the backfilled past (length of stay, patient days) and the live census.
Here beds are taken and freed, so labs, nurse calls and billing find patients where they are.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from connectors.hl7v2 import messages as m
from demo.patients import PatientRecords, Stay
from demo.sim import at_time as _dt


class Admissions(PatientRecords):
    # -- the past, backfilled on first start ---------------------------------------------
    def _past_stay(self, ts: float, unit: str, los: float, readmit_by: float, bed: str) -> list[str]:
        stay = Stay(**self._new_person(), unit=unit, bed=bed, patient_class="I", admitted=ts)
        self.at(ts + los, "past_discharge", stay=asdict(stay), readmit_by=readmit_by)
        rate = 0.5 if unit in self.icu else 0.08  # procedures per patient day
        for _ in range(sum(1 for _ in range(max(1, round(los / 86400))) if self.rng.random() < rate)):
            self._schedule_charge(ts + self.rng.uniform(0, los), stay)
        return [self._adt("A01", ts, stay, admit=_dt(ts))]

    def _past_ed_visit(self, ts: float, start: float) -> list[str]:
        """An ED visit of the past day: sent home, or admitted (A06 in the ED), boarded, moved
        to a ward and discharged before the live start (the ward's beds stay the live model's)."""
        assert self.ed is not None
        stay = Stay(**self._new_person(), unit=self.ed.id, bed="H1", patient_class="E", admitted=ts)
        out = [self._adt("A04", ts, stay, admit=_dt(ts))]
        decided = ts + self._lognormal_minutes(200, 0.4)
        if self.rng.random() < 0.18 and self.wards:
            departed = decided + self._lognormal_minutes(150, 0.5)
            left = min(departed + self._lognormal_minutes(600, 0.5), start - 600)
            if left > departed:
                admitted = Stay(**{**asdict(stay), "patient_class": "I"})
                ward = Stay(**{**asdict(admitted), "unit": self.rng.choice(self.wards), "bed": "H1"})
                self.at(decided, "past_adt", trigger="A06", stay=asdict(admitted))
                self.at(departed, "past_adt", trigger="A02", stay=asdict(ward), prior=self.ed.id)
                self.at(left, "past_adt", trigger="A03", stay=asdict(ward))
                return out
        self.at(decided, "past_adt", trigger="A03", stay=asdict(stay))
        return out

    def _past_adt(self, ts: float, trigger: str, stay: dict[str, Any], prior: str | None = None) -> list[str]:
        s = Stay(**stay)
        extra: dict[str, Any] = {"admit": _dt(s.admitted)}
        if prior is not None:
            extra["prior"] = m.Location(prior, "", "H1", self.facility)
        if trigger == "A03":
            lwbs = s.unit == self.ed.id if self.ed is not None else False
            extra.update(discharge=_dt(ts), disposition="LWBS" if lwbs and self.rng.random() < 0.03 else "01")
        return [self._adt(trigger, ts, s, **extra)]

    def _past_discharge(self, ts: float, stay: dict[str, Any], readmit_by: float) -> list[str]:
        s = Stay(**stay)
        out = [self._adt("A03", ts, s, admit=_dt(s.admitted), discharge=_dt(ts), disposition="01")]
        if self.rng.random() < 0.12 and ts + 43200 < readmit_by:
            person = {k: stay[k] for k in ("mrn", "family", "given", "birth", "sex")}
            self.at(self.rng.uniform(ts + 43200, readmit_by), "readmit", person=person)
        return out

    # -- the live census -----------------------------------------------------------------
    def _admit(
        self,
        ts: float,
        unit: str,
        planned_from: float | None = None,
        visit: str | None = None,
        bed: str | None = None,
    ) -> list[str]:
        """Admit to unit; the initial census (planned_from) leaves only after the live start."""
        taken = {s.bed for s in self.stays.values() if s.unit == unit}
        bed = bed if bed is not None and bed not in taken else self._free_bed(unit)
        if bed is None:
            return []
        if visit is not None and visit in self.stays:
            stay = self.stays[visit]
            prior = self._loc(stay)
            stay.unit, stay.bed, stay.patient_class, stay.admitted = unit, bed, "I", ts
            msg = self._adt("A01", ts, stay, prior=prior, admit=_dt(ts))
        else:
            stay = Stay(**self._new_person(), unit=unit, bed=bed, patient_class="I", admitted=ts)
            self.stays[stay.visit] = stay
            msg = self._adt("A01", ts, stay, admit=_dt(ts))
        if planned_from is None:
            leave = ts + self._lognormal_minutes(3.2 * 1440, 0.55)
            step_down = ts + self._lognormal_minutes(2 * 1440, 0.5)
        else:
            leave = planned_from + self.rng.uniform(0.5, 72) * 3600
            step_down = planned_from + self.rng.uniform(0.5, 48) * 3600
        if unit in self.icu and self.wards:
            self.at(min(step_down, leave - 600), "step_down", visit=stay.visit)
        self.at(leave, "discharge", visit=stay.visit)
        return [msg]

    def _readmit(self, ts: float, person: dict[str, str]) -> list[str]:
        unit = self.rng.choice(self.wards)
        bed = self._free_bed(unit)
        if bed is None:
            return []
        self.counter += 1
        stay = Stay(
            visit=f"V{self.counter:07d}", **person, unit=unit, bed=bed, patient_class="I", admitted=ts
        )
        self.stays[stay.visit] = stay
        self.at(ts + self._lognormal_minutes(3.2 * 1440, 0.55), "discharge", visit=stay.visit)
        return [self._adt("A01", ts, stay, admit=_dt(ts))]

    def _ed_arrival(self, ts: float) -> list[str]:
        self.at(ts + self._exp(15), "ed_arrival")
        assert self.ed is not None
        bed = self._free_bed(self.ed.id)
        if bed is None:
            return []
        stay = Stay(**self._new_person(), unit=self.ed.id, bed=bed, patient_class="E", admitted=ts)
        self.stays[stay.visit] = stay
        for _ in range(self.rng.choice((1, 1, 2))):
            self.at(ts + self.rng.uniform(5, 25) * 60, "stat_order", unit=self.ed.id, visit=stay.visit)
        self.at(ts + self._lognormal_minutes(200, 0.4), "ed_disposition", visit=stay.visit)
        return [self._adt("A04", ts, stay, admit=_dt(ts))]

    def _ed_disposition(self, ts: float, visit: str) -> list[str]:
        stay = self.stays.get(visit)
        if stay is None:
            return []
        if self.rng.random() < 0.11:  # ED patients admitted: decided now (A06 in the ED), a bed later
            stay.patient_class = "I"
            self.at(ts + self._lognormal_minutes(150, 0.5), "ed_to_bed", visit=visit)
            return [self._adt("A06", ts, stay, admit=_dt(ts))]
        del self.stays[visit]
        left = "LWBS" if self.rng.random() < 0.03 else "01"  # some leave before a provider sees them
        return [self._adt("A03", ts, stay, discharge=_dt(ts), disposition=left)]

    def _ed_to_bed(self, ts: float, visit: str) -> list[str]:
        """An admitted ED patient leaves for a ward or ICU bed (boarding ends), or waits on."""
        if visit not in self.stays:
            return []
        targets = self.icu * 2 + self.wards * 3
        for unit in self.rng.sample(targets, len(targets)):
            admitted = self._admit(ts, unit, visit=visit)
            if admitted:
                return admitted
        self.at(ts + 1800, "ed_to_bed", visit=visit)
        return []

    def _elective_admit(self, ts: float) -> list[str]:
        self.at(ts + self._exp(300), "elective_admit")
        units = self.wards + self.icu  # post-operative patients go to the ICU now and then
        if not units:
            return []
        return self._admit(ts, self.rng.choice(units))

    def _step_down(self, ts: float, visit: str) -> list[str]:
        stay = self.stays.get(visit)
        if stay is None or stay.unit not in self.icu:
            return []
        target = self.rng.choice(self.wards)
        bed = self._free_bed(target)
        if bed is None:
            self.at(ts + 3600, "step_down", visit=visit)
            return []
        prior = self._loc(stay)
        stay.unit, stay.bed = target, bed
        return [self._adt("A02", ts, stay, prior=prior, admit=_dt(stay.admitted))]

    def _discharge(self, ts: float, visit: str) -> list[str]:
        stay = self.stays.pop(visit, None)
        if stay is None:
            return []
        if self.rng.random() < 0.12 and self.wards:  # about one in eight comes back within 30 days
            person = {k: getattr(stay, k) for k in ("mrn", "family", "given", "birth", "sex")}
            self.at(ts + self.rng.uniform(2, 28) * 86400 / self.rate, "readmit", person=person)
        return [self._adt("A03", ts, stay, admit=_dt(stay.admitted), discharge=_dt(ts), disposition="01")]
