"""The demo hospital's back office: time-and-attendance, HR, the ledger, the survey vendor
and infection prevention, sending rows to the feed API as those systems would.

On first start it backfills what the slow KPIs need (31 days of shifts, 30 days of costs,
revenue and device days, 90 days of surveys, a year of HR records: headcount and budgeted
positions per unit and role, new hires, leavers, transfers, certifications, engagement
pulses); then it
runs live: shift changes at 07:00 and 19:00 UTC, a nurse now and then going home sick
mid-shift (the unit runs short until a float nurse arrives: the ratio KPI breaches),
surveys and complaints through the day, and yesterday's costs and device days after
midnight.

This module assembles the back office, sets its history and runs the daily close; each
system is its own module: office_records (units, staff, rows), roster, hr, surveys, ledger
and safety.
"""

from __future__ import annotations

import math
from typing import Any

from demo.hr import HumanResources
from demo.ledger import Ledger
from demo.office_records import DAY, LICENSED, MAX_RATIO, Row, _day
from demo.roster import SHIFT, Roster
from demo.safety import PI_STAGE_WEIGHTS, PI_STAGES, SafetyReports
from demo.surveys import HCAHPS_TOP, PatientSurveys
from engine.places import Places, Unit

__all__ = [
    "DAY",
    "HCAHPS_TOP",
    "LICENSED",
    "MAX_RATIO",
    "PI_STAGES",
    "PI_STAGE_WEIGHTS",
    "SHIFT",
    "BackOffice",
    "Row",
]


class BackOffice(Roster, HumanResources, PatientSurveys, Ledger, SafetyReports):
    """The back office's systems on one queue of future happenings, each turned into feed
    rows when due."""

    def __init__(self, places: Places, *, seed: int = 11, rate: float = 1.0):
        super().__init__(seed, rate)
        if not places.facilities:
            raise ValueError("the demo needs places (facility, units, beds) in the configuration")
        fac = places.facilities[0]
        self.units: dict[str, Unit] = {u.id: u for d in fac.departments for u in d.units}
        self.per_shift = {
            uid: math.ceil(u.beds * 1.1 / MAX_RATIO.get(u.type or "", 4)) for uid, u in self.units.items()
        }
        self.pool = {uid: [f"{uid}-N{i:02d}" for i in range(n * 3 + 2)] for uid, n in self.per_shift.items()}
        self.on_shift: dict[str, dict[str, Any]] = {}  # staff id -> their clock-in row
        self.started: dict[str, float] = {}  # staff id -> clock-in time
        self.shift_count = 0
        self.billing_from = 0.0
        self.accrued: tuple[float, float] = (0.0, 0.0)

    # -- setup ---------------------------------------------------------------------------
    def seed_history(self, now: float, billing_from: float | None = None) -> None:
        """billing_from: since when the EMR sends procedure charges (its traffic backfill): the
        ledger books procedure costs for those days only, so cost per procedure is not the
        costs of a month over the procedures of half a day."""
        self.billing_from = now - 12 * 3600 if billing_from is None else billing_from
        # the part of today the EMR has already charged is booked at once; the daily lines book
        # the rest of every day
        self.accrued = (max(self.billing_from, now - now % DAY), now)
        self.at(now, "procedure_accrual", since=self.accrued[0])
        day0 = now - now % DAY
        for days in range(1, 31):  # each day is reported ten minutes after it ends
            self.at(day0 - (days - 1) * DAY + 600, "daily", day=day0 - days * DAY, chain=False)
        self.at(day0 + DAY + 600, "daily", day=day0, chain=True)
        self.at(now - 370 * DAY, "hr_baseline")
        for month in range(12):
            self.at(now - (month * 30 + 5) * DAY, "engagement")
        for uid in self.units:
            for _ in range(self.rng.choice((0, 1, 1))):
                self.at(now - self.rng.uniform(2, 88) * DAY, "turnover", unit=uid)
            for k in range(self.rng.choice((2, 3, 4))):  # new-graduate RNs through the year
                self.at(
                    now - self.rng.uniform(5, 360) * DAY, "hire", unit=uid, staff=f"{uid}-G{k:02d}", role="rn"
                )
            if self.rng.random() < 0.5:  # now and then a nurse moves to another unit
                self.at(now - self.rng.uniform(3, 80) * DAY, "transfer", unit=uid)
            for staff in self.pool[uid]:
                for _ in range(self.rng.choice((0, 1, 1))):
                    self.at(now - self.rng.uniform(1, 29) * DAY, "training", unit=uid, staff=staff)
        for days in range(90):
            for uid in self.units:
                for _ in range(self.rng.choice((0, 1, 1, 2))):
                    self.at(day0 - days * DAY + self.rng.uniform(8, 20) * 3600, "survey", unit=uid)
        # shifts: the last 31 days (as far back as the stays: a ward with patients and no nurse
        # on the roster is a Title 22 breach), then the one under way, then live changes
        first = now - now % SHIFT + 7 * 3600
        while first > now:
            first -= SHIFT
        self.shift_count = 0
        for k in range(62, 0, -1):
            self.at(first - k * SHIFT, "shift_change")
        self.at(first, "shift_change")
        self.at(first + SHIFT, "shift_change")
        self.at(now + self.rng.uniform(10, 20) * 60, "sick_call")
        self.at(now + self._exp(40), "survey_live")

    # -- the ledger and infection prevention, once a day ---------------------------------
    def _daily(self, ts: float, day: float, chain: bool) -> list[Row]:
        """Yesterday's cost lines and device days; now and then a safety event."""
        if chain:
            self.at(day + 2 * DAY + 600, "daily", day=day + DAY, chain=True)
        rows: list[Row] = []
        date = _day(day)
        for uid, unit in self.units.items():
            beds = unit.beds
            occupied = beds * self.rng.uniform(0.7, 0.9)
            rows.extend(self._expenses(date, uid, occupied))
            rows.extend(self._revenue(date, uid, unit, occupied))
            # procedure costs where the EMR's procedures are done (the bedside: about 2.4 a day
            # per ICU patient, 0.6 elsewhere, as demo/billing.py charges them)
            rows.extend(self._procedure_costs(date, uid, unit, occupied, *self._billed(day)))
            if unit.type == "ed":
                continue
            rows.extend(self._device_days(date, uid, unit, occupied))
            rows.extend(self._harm_events(date, uid, unit))
            rows.extend(self._falls(date, uid, occupied))
        return rows

    # -- persistence ---------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        extra = {
            "on_shift": self.on_shift,
            "started": self.started,
            "shift_count": self.shift_count,
            "billing_from": self.billing_from,
            "accrued": list(self.accrued),
        }
        return {**super().state(), **extra}

    def load(self, state: dict[str, Any]) -> None:
        super().load(state)
        self.on_shift = state["on_shift"]
        self.started = state["started"]
        self.shift_count = state["shift_count"]
        self.billing_from = state.get("billing_from", 0.0)
        start, end = state.get("accrued", (0.0, 0.0))
        self.accrued = (start, end)
