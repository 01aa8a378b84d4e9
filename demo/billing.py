"""The billing system: bedside procedures charged as DFT^P03 (FT1 and PR1), more often in
the ICU; the back office's ledger (demo/ledger.py) costs them at the same rates.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from connectors.hl7v2 import messages as m
from demo.patients import PatientRecords, Stay
from demo.sim import at_time as _dt

PROCEDURES = [
    ("36556", "Central venous catheter insertion", 1450.0),
    ("31500", "Emergency endotracheal intubation", 980.0),
    ("93306", "Transthoracic echocardiogram", 1210.0),
    ("51702", "Urinary catheter insertion", 185.0),
    ("12002", "Simple wound repair", 340.0),
]


class Billing(PatientRecords):
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
