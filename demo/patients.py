"""Who is in the demo hospital and where: patients, their stays and beds, and the HL7
envelope every EMR message shares. The hospital's systems (admissions, labs, nurse calls,
billing) build on this one record, so a patient moved by one is where the others find them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from connectors.hl7v2 import messages as m
from demo.sim import Simulation
from demo.sim import at_time as _dt
from engine.places import Unit

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


class PatientRecords(Simulation):
    """The hospital's shared state (set up by DemoHospital) and the helpers every system uses."""

    facility: str
    units: dict[str, Unit]
    ed: Unit | None
    icu: list[str]
    wards: list[str]
    stays: dict[str, Stay]
    counter: int  # numbers visits, calls and orders alike
    sent: int  # numbers the messages (MSH-10)

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

    # -- provided by the billing system (demo/billing.py) --------------------------------
    def _schedule_charge(self, when: float, stay: Stay) -> None:
        """A procedure on this stay, charged when done: past stays bring theirs."""
        raise NotImplementedError
