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

This module assembles the hospital and sets its first day; each system is its own module:
patients (stays, beds, the HL7 envelope), admissions, labs, nurse_calls and billing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from demo.admissions import Admissions
from demo.billing import PROCEDURES, Billing
from demo.labs import BACKLOG_RAMP, ROUTINE_TESTS, STAT_TESTS, Labs
from demo.nurse_calls import NurseCalls
from demo.patients import FAMILY, GIVEN, Stay
from engine.places import Places

__all__ = [
    "FAMILY",
    "GIVEN",
    "HISTORY_DAYS",
    "PROCEDURES",
    "ROUTINE_TESTS",
    "STAT_TESTS",
    "DemoHospital",
    "Stay",
]

HISTORY_DAYS = 30  # what the first start backfills: the longest patient-day KPI window


class DemoHospital(Admissions, Labs, NurseCalls, Billing):
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

    # -- setup ---------------------------------------------------------------------------
    def seed_history(self, now: float, backfill: float, scenarios: Sequence[str] = ()) -> None:
        """A month of past stays bed by bed (length of stay, patient days, readmissions), the
        census of today, then live traffic from now - backfill; and the scenarios asked for
        (stat_backlog, demo/labs.py), which replace the first STAT slowdown on the ICU (a step
        there would breach before the backlog does) and delay the random ones until it is over."""
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
        if "stat_backlog" in scenarios and self.icu:
            self.stat_backlog(self.icu[0], now)
            self.at(now + BACKLOG_RAMP + self.rng.uniform(25, 40) * 60, "slowdown")
            return
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
