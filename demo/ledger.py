"""The ledger: each unit's daily cost lines (labour, supplies, procedures) and revenue
(net patient service revenue, gross charges, other operating revenue), for the finance
KPIs. Procedures are costed at the rates the EMR charges them, and only for the days the
EMR has charged, so cost per procedure stays plausible.
"""

from __future__ import annotations

import math

from demo.office_records import DAY, OfficeRecords, Row, _day
from engine.places import Unit


class Ledger(OfficeRecords):
    billing_from: float  # since when the EMR sends procedure charges
    accrued: tuple[float, float]  # the span of today booked at start (_procedure_accrual)

    def _expenses(self, date: str, uid: str, occupied: float) -> list[Row]:
        """The day's labour and supplies, in proportion to the unit's patients."""
        rows: list[Row] = []
        rows.append(
            (
                "finance",
                {
                    "time": date,
                    "unit": uid,
                    "category": "labour",
                    "amount": round(occupied * self.rng.uniform(2000, 2400), 2),
                },
            )
        )
        rows.append(
            (
                "finance",
                {
                    "time": date,
                    "unit": uid,
                    "category": "supplies",
                    "amount": round(occupied * self.rng.uniform(330, 430), 2),
                },
            )
        )
        return rows

    def _revenue(self, date: str, uid: str, unit: Unit, occupied: float) -> list[Row]:
        """The day's revenue lines: net patient service revenue a little above the unit's
        expense (a thin operating margin), gross charges (inpatient on the wards, outpatient
        in the ED) and, on the first unit, other operating revenue (parking, cafeteria)."""
        gross = "gross_outpatient" if unit.type == "ed" else "gross_inpatient"
        lines = [
            ("net_patient_service", occupied * self.rng.uniform(2650, 2950)),
            (gross, occupied * self.rng.uniform(8000, 9500)),
        ]
        if uid == next(iter(self.units)):
            lines.append(("other_operating", self.rng.uniform(1500, 4000)))
        return [
            ("finance", {"time": date, "unit": uid, "category": c, "amount": round(a, 2), "kind": "revenue"})
            for c, a in lines
        ]

    def _billed(self, day: float) -> tuple[float, float]:
        """Shares of a day charged by the EMR's history (before billing_from) and by its live
        traffic (after), less what the start-up accrual booked."""

        def overlap(a: float, b: float) -> float:
            return max(0.0, min(day + DAY, b) - max(day, a)) / DAY

        live = overlap(self.billing_from, math.inf) - overlap(*self.accrued)
        return overlap(-math.inf, self.billing_from), live

    def _procedure_costs(
        self, date: str, uid: str, unit: Unit, occupied: float, history: float, live: float
    ) -> list[Row]:
        """Procedure costs where the EMR's procedures are done (per patient-day 0.5 in the ICU
        and 0.08 on wards in its history, demo/admissions.py; 2.4 and 0.58 live,
        demo/billing.py), 450-750 each; the ED's few are not costed."""
        icu = unit.type == "icu"
        procedures = occupied * (history * (0.5 if icu else 0.08) + live * (2.4 if icu else 0.58))
        if unit.type == "ed" or procedures <= 0:
            return []
        amount = round(procedures * self.rng.uniform(450, 750), 2)
        return [("finance", {"time": date, "unit": uid, "category": "procedure", "amount": amount})]

    def _procedure_accrual(self, ts: float, since: float) -> list[Row]:
        """At start: the procedures the EMR has charged today (since `since`)."""
        rows: list[Row] = []
        for uid, unit in self.units.items():
            rows.extend(self._procedure_costs(_day(ts), uid, unit, unit.beds * 0.8, 0.0, (ts - since) / DAY))
        return rows
