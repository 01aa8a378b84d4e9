"""The demo hospital's EMR, nurse-call and billing systems: realistic HL7 v2 over MLLP.

It is a peer outside carescore, talking to the MLLP listener like a real interface engine:
ED arrivals (A04) and dispositions, admissions (A01), transfers (A02) and discharges (A03),
STAT and routine lab orders (ORM^O01) and results (ORU^R01), nurse calls (IHE PCD ACM
ORU^R40: placed, acknowledged, ended) and procedures with their charges (DFT^P03 with FT1 and
PR1). Readmissions happen: some discharged patients come back within 30 days. On first start it backfills
history (past stays for length of stay, the current census, the last hours of labs), then
runs in real time. Now and then a unit's lab goes slow, so STAT turnaround breaches and
alerts fire and later resolve; the first slowdown lands within a minute of start.
Its state is saved in the data folder, so a restart continues the same hospital.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

from connectors.hl7v2 import messages as m
from demo.sim import Simulation, at_time
from engine.places import Places

log = logging.getLogger(__name__)

FAMILY = [
    "Garcia",
    "Smith",
    "Nguyen",
    "Okafor",
    "Kowalski",
    "Haddad",
    "Johansson",
    "Patel",
    "Rossi",
    "Kim",
    "Moreau",
    "Silva",
    "Novak",
    "Cohen",
    "Murphy",
    "Tanaka",
    "Ahmed",
    "Schmidt",
    "Lopez",
    "Brown",
]
GIVEN = [
    "Ana",
    "James",
    "Linh",
    "Chidi",
    "Marta",
    "Omar",
    "Sofia",
    "Raj",
    "Giulia",
    "Min",
    "Claire",
    "Pedro",
    "Eva",
    "Noah",
    "Aoife",
    "Yuki",
    "Sara",
    "Jonas",
    "Lucia",
    "Ben",
]
HISTORY_DAYS = 30  # what the first start backfills: the longest patient-day KPI window
PROCEDURES = [
    ("36556", "Central venous catheter insertion", 1450.0),
    ("31500", "Emergency endotracheal intubation", 980.0),
    ("93306", "Transthoracic echocardiogram", 1210.0),
    ("51702", "Urinary catheter insertion", 185.0),
    ("12002", "Simple wound repair", 340.0),
]
STAT_TESTS = [
    ("6598-7", "Troponin T", "ng/L", 5, 60),
    ("2524-7", "Lactate", "mmol/L", 0.5, 6.0),
    ("2823-3", "Potassium", "mmol/L", 3.0, 6.2),
]
ROUTINE_TESTS = [
    ("58410-2", "CBC panel", "10*3/uL", 4, 15),
    ("51990-0", "Basic metabolic panel", "mmol/L", 130, 148),
]


@dataclass
class Stay:
    visit: str
    mrn: str
    family: str
    given: str
    birth: str
    sex: str
    unit: str
    bed: str
    patient_class: str
    admitted: float

    def patient(self) -> m.Patient:
        return m.Patient(self.mrn, self.family, self.given, self.birth, self.sex)


_dt = at_time


class DemoHospital(Simulation):
    """The simulation itself: a queue of future happenings, each turned into HL7 when due."""

    def __init__(self, places: Places, *, seed: int = 7, rate: float = 1.0):
        if not places.facilities:
            raise ValueError("the demo needs places (facility, units, beds) in the configuration")
        fac = places.facilities[0]
        self.facility = fac.id
        self.units = {u.id: u for d in fac.departments for u in d.units}
        self.ed = next((u for u in self.units.values() if u.type == "ed"), None)
        self.icu = [u.id for u in self.units.values() if u.type == "icu"]
        self.wards = [u.id for u in self.units.values() if u.type not in ("ed", "icu")]
        super().__init__(seed, rate)
        self.stays: dict[str, Stay] = {}
        self.counter = 0
        self.sent = 0
        self.slow: dict[str, int] = {}  # unit -> STAT orders still to come back slow
        self.busy: dict[str, int] = {}  # unit -> nurse calls still to be answered slowly

    # -- people and beds -----------------------------------------------------------------
    def _new_person(self) -> dict[str, str]:
        self.counter += 1
        year = self.rng.randint(1935, 2005)
        return {
            "visit": f"V{self.counter:07d}",
            "mrn": f"MRN{100000 + self.counter}",
            "family": self.rng.choice(FAMILY),
            "given": self.rng.choice(GIVEN),
            "birth": f"{year}{self.rng.randint(1, 12):02d}{self.rng.randint(1, 28):02d}",
            "sex": self.rng.choice("FM"),
        }

    def _control_id(self) -> str:
        self.sent += 1
        return f"DEMO{self.sent:010d}"

    def _free_bed(self, unit: str) -> str | None:
        taken = {s.bed for s in self.stays.values() if s.unit == unit}
        beds = [f"{i + 1:02d}" for i in range(self.units[unit].beds)]
        free = [b for b in beds if b not in taken]
        return self.rng.choice(free) if free else None

    def _loc(self, stay: Stay) -> m.Location:
        return m.Location(stay.unit, stay.unit, stay.bed, self.facility)

    def _visit(self, stay: Stay) -> m.Visit:
        return m.Visit(stay.patient(), stay.patient_class, self._loc(stay), stay.visit, self.facility)

    def _adt(self, trigger: str, ts: float, stay: Stay, **extra: Any) -> str:
        return m.adt(trigger, _dt(ts), self._visit(stay), control_id=self._control_id(), **extra)

    # -- setup ---------------------------------------------------------------------------
    def seed_history(self, now: float, backfill: float) -> None:
        """A month of past stays bed by bed (length of stay, patient days, readmissions), the
        census of today, then live traffic from now - backfill."""
        start = now - backfill
        for unit_id, unit in self.units.items():
            if unit.type == "ed":
                continue
            beds = [f"{i + 1:02d}" for i in range(unit.beds)]
            occupied = set(self.rng.sample(beds, int(unit.beds * self.rng.uniform(0.7, 0.85))))
            median_los = 2.5 if unit_id in self.icu else 3.2
            for bed in beds:
                until = start
                if bed in occupied:
                    until = start - self.rng.uniform(0.2, 6) * 86400
                    self.at(until, "admit", unit=unit_id, planned_from=start, bed=bed)
                t = start - HISTORY_DAYS * 86400 + self.rng.uniform(0, 3) * 86400
                while True:
                    los = self._lognormal_minutes(median_los * 1440, 0.55)
                    if t + los > until - 3600:
                        break
                    self.at(t, "past_stay", unit=unit_id, los=los, readmit_by=start, bed=bed)
                    t += los + self.rng.uniform(2, 20) * 3600
        if self.ed is not None:
            # the ED's last day before the live start (ED intervals need a day of departures)
            t = start - 86400
            while t < start - 4 * 3600:
                self.at(t, "past_ed_visit", start=start)
                t += self._exp(15)
            self.at(start, "ed_arrival")
        self.at(start + 60, "elective_admit")
        self.at(start + 120, "lab_rounds")
        self.at(start + 180, "call_rounds")
        self.at(start + 240, "procedure_rounds")
        self.at(now + self.rng.uniform(15, 30) * 60, "call_surge")
        if self.icu:
            # The first slowdown: ICU STAT results that come back just after start, 85-100 min late,
            # in a busy ICU hour (a trauma admission): with the hour's other STAT results the ICU
            # has the 20 values its STAT p90 needs, and 4 of them slow make the p90 critical.
            for i in range(4):
                self.at(
                    now - 100 * 60 + i * 240,
                    "stat_order",
                    unit=self.icu[0],
                    slow_until=now + 8 + 4 * i,
                )
            for i in range(20):
                self.at(now - 80 * 60 + i * 150, "stat_order", unit=self.icu[0], slow_until=None)
        self.at(now + self.rng.uniform(25, 40) * 60, "slowdown")

    # -- happenings ----------------------------------------------------------------------
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

    def _lab_rounds(self, ts: float) -> list[str]:
        """Every 20 minutes: some inpatients get routine labs, ICU patients STAT ones."""
        self.at(ts + 1200, "lab_rounds")
        for stay in list(self.stays.values()):
            if stay.patient_class != "I":
                continue
            if stay.unit in self.icu and self.rng.random() < 0.11 * self.rate:
                self.at(ts + self.rng.uniform(0, 1200), "stat_order", unit=stay.unit, visit=stay.visit)
            elif self.rng.random() < 0.04 * self.rate:
                self.at(ts + self.rng.uniform(0, 1200), "routine_order", visit=stay.visit)
            elif self.rng.random() < 0.008 * self.rate:
                self.at(ts + self.rng.uniform(0, 1200), "stat_order", unit=stay.unit, visit=stay.visit)
        return []

    def _call_rounds(self, ts: float) -> list[str]:
        """Every 10 minutes: each inpatient calls now and then (about every 3 hours)."""
        self.at(ts + 600, "call_rounds")
        for stay in list(self.stays.values()):
            if self.rng.random() < 0.055 * self.rate:
                self.at(ts + self.rng.uniform(0, 600), "call", visit=stay.visit)
        return []

    def _call(self, ts: float, visit: str) -> list[str]:
        stay = self.stays.get(visit)
        if stay is None:
            return []
        self.counter += 1
        call_id = f"NC{self.counter:08d}"
        if self.rng.random() < 0.08:
            # The call ends at the bedside before anyone acknowledges it on a device: answered in
            # the room, or the patient pressed cancel. ACM's "end" cannot tell them apart, so
            # carescore counts it as answered then.
            self.at(
                ts + self.rng.uniform(20, 90), "call_phase", stay=asdict(stay), call_id=call_id, phase="end"
            )
        else:
            if self.busy.get(stay.unit, 0) > 0:
                self.busy[stay.unit] -= 1
                wait = self.rng.uniform(7, 14) * 60
            else:
                wait = self._lognormal_minutes(1.6, 0.6)
            answered = ts + wait
            way = self.rng.random()
            if way < 0.6:  # acknowledged on the nurse's phone, presence registered on arrival
                self.at(answered, "call_phase", stay=asdict(stay), call_id=call_id, phase="continue")
                self.at(
                    answered + self.rng.uniform(30, 120), "call_presence", stay=asdict(stay), call_id=call_id
                )
            elif way < 0.85:  # the nurse goes straight in: presence first, no acknowledgement
                self.at(answered, "call_presence", stay=asdict(stay), call_id=call_id)
            else:  # acknowledged, answered over the intercom: no presence
                self.at(answered, "call_phase", stay=asdict(stay), call_id=call_id, phase="continue")
            self.at(
                answered + self.rng.uniform(150, 600),
                "call_phase",
                stay=asdict(stay),
                call_id=call_id,
                phase="end",
            )
        return [m.nurse_call(_dt(ts), self._visit(stay), call_id, "start", control_id=self._control_id())]

    def _call_phase(self, ts: float, stay: dict[str, Any], call_id: str, phase: str) -> list[str]:
        state = "acknowledged" if phase == "continue" else ""
        visit = self._visit(Stay(**stay))
        return [m.nurse_call(_dt(ts), visit, call_id, phase, state=state, control_id=self._control_id())]

    def _call_presence(self, ts: float, stay: dict[str, Any], call_id: str) -> list[str]:
        """Staff presence registered in the room (badge or room button), sent as an OBX in the
        alert's ORU^R40, as presence-capable nurse call systems do (not an ACM observation)."""
        visit = self._visit(Stay(**stay))
        segs = [
            m.msh(
                "ORU^R40^ORU_R40",
                _dt(ts),
                facility=visit.facility,
                app="NURSECALL",
                control_id=self._control_id(),
            ),
            visit.pid(),
            visit.pv1(),
            m.segment(
                "OBR",
                {1: "1", 3: f"{call_id}^NURSECALL", 4: "196616^MDC_EVT_ALARM^MDC", 7: m.format_dtm(_dt(ts))},
            ),
            m.segment("OBX", {1: "1", 2: "ST", 3: "STAFF_PRESENCE^Staff presence^L", 5: "present", 11: "F"}),
        ]
        return ["\r".join(segs) + "\r"]

    def _call_surge(self, ts: float) -> list[str]:
        """A unit gets busy: its next calls wait 7-14 minutes (the response KPIs breach)."""
        unit = self.rng.choice(self.wards or list(self.units))
        self.busy[unit] = self.rng.randint(5, 8)
        self.at(ts + self.rng.uniform(50, 90) * 60, "call_surge")
        return []

    def _procedure_rounds(self, ts: float) -> list[str]:
        """Every 30 minutes: a few procedures, charged by the billing system (DFT^P03)."""
        self.at(ts + 1800, "procedure_rounds")
        for stay in list(self.stays.values()):
            if self.rng.random() < (0.05 if stay.unit in self.icu else 0.012) * self.rate:
                self._schedule_charge(ts + self.rng.uniform(0, 1800), stay)
        return []

    def _schedule_charge(self, when: float, stay: Stay) -> None:
        code, name, price = self.rng.choice(PROCEDURES)
        amount = round(price * self.rng.uniform(0.9, 1.2), 2)
        self.at(when, "charge", stay=asdict(stay), code=code, name=name, amount=amount)

    def _charge(self, ts: float, stay: dict[str, Any], code: str, name: str, amount: float) -> list[str]:
        visit = self._visit(Stay(**stay))
        return [m.procedure_charge(_dt(ts), visit, (code, name), amount, control_id=self._control_id())]

    def _slowdown(self, ts: float) -> list[str]:
        candidates = [u for u in self.units if u in self.icu or (self.ed and u == self.ed.id)] or list(
            self.units
        )
        unit = self.rng.choice(candidates)
        self.slow[unit] = self.rng.randint(3, 5)
        log.info("demo: lab slowdown begins", extra={"unit": unit})
        self.at(ts + self.rng.uniform(35, 70) * 60, "slowdown")
        return []

    def _order(self, ts: float, stay: Stay, priority: str, tat: float, test: tuple[Any, ...]) -> list[str]:
        self.counter += 1
        order_id = f"ORD{self.counter:08d}"
        self.at(
            ts + tat,
            "result",
            stay=asdict(stay),
            order_id=order_id,
            priority=priority,
            ordered=ts,
            test=list(test),
        )
        return [
            m.lab_order(
                _dt(ts),
                self._visit(stay),
                order_id,
                (test[0], test[1]),
                priority,
                control_id=self._control_id(),
            )
        ]

    def _stat_order(
        self, ts: float, unit: str, visit: str | None = None, slow_until: float | None = None
    ) -> list[str]:
        stay = self.stays.get(visit) if visit else None
        if stay is None:
            pool = [s for s in self.stays.values() if s.unit == unit]
            if not pool:
                return []
            stay = self.rng.choice(pool)
        if slow_until is not None:
            tat = slow_until - ts
        elif self.slow.get(unit, 0) > 0:
            self.slow[unit] -= 1
            tat = self.rng.uniform(82, 115) * 60
        else:
            tat = self._lognormal_minutes(31, 0.33)
        return self._order(ts, stay, "S", tat, self.rng.choice(STAT_TESTS))

    def _routine_order(self, ts: float, visit: str) -> list[str]:
        stay = self.stays.get(visit)
        if stay is None:
            return []
        return self._order(ts, stay, "R", self._lognormal_minutes(150, 0.4), self.rng.choice(ROUTINE_TESTS))

    def _result(
        self,
        ts: float,
        stay: dict[str, Any],
        order_id: str,
        priority: str,
        ordered: float,
        test: list[Any],
    ) -> list[str]:
        s = Stay(**stay)
        span = ts - ordered
        collected = ordered + span * self.rng.uniform(0.1, 0.3)
        received = collected + span * self.rng.uniform(0.05, 0.2)
        value = f"{self.rng.uniform(test[3], test[4]):.1f}"
        return [
            m.lab_result(
                _dt(ts),
                self._visit(s),
                order_id,
                (test[0], test[1]),
                priority,
                ordered=_dt(ordered),
                collected=_dt(collected),
                received=_dt(received),
                value=value,
                units=test[2],
                control_id=self._control_id(),
            )
        ]

    # -- persistence ---------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            **super().state(),
            "stays": {k: asdict(v) for k, v in self.stays.items()},
            "counter": self.counter,
            "sent": self.sent,
            "slow": self.slow,
            "busy": self.busy,
        }

    def load(self, state: dict[str, Any]) -> None:
        super().load(state)
        self.stays = {k: Stay(**v) for k, v in state["stays"].items()}
        self.counter = state["counter"]
        self.sent = state["sent"]
        self.slow = state["slow"]
        self.busy = state.get("busy", {})
