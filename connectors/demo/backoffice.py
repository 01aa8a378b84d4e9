"""The demo hospital's back office: time-and-attendance, HR, the ledger, the survey vendor
and infection prevention, sending rows to the feed API as those systems would.

On first start it backfills what the slow KPIs need (14 days of shifts, 30 days of costs
and device days, 90 days of surveys and HR records, a year of engagement pulses); then it
runs live: shift changes at 07:00 and 19:00 UTC, a nurse now and then going home sick
mid-shift (the unit runs short until a float nurse arrives: the ratio KPI breaches),
surveys and complaints through the day, and yesterday's costs and device days after
midnight.
"""

from __future__ import annotations

import math
from typing import Any

from connectors.demo.sim import Simulation, at_time
from engine.places import Places, Unit

DAY = 86400.0
SHIFT = 12 * 3600.0
MAX_RATIO = {"icu": 2, "step_down": 3, "telemetry": 4, "ed": 4, "pediatrics": 4, "med_surg": 5}
LICENSED = ("rn", "rn", "rn", "lpn")  # the mix of a unit's licensed pool

Row = tuple[str, dict[str, Any]]  # (feed, row)


def _iso(ts: float) -> str:
    return at_time(ts).isoformat().replace("+00:00", "Z")


def _day(ts: float) -> str:
    return at_time(ts).date().isoformat()


class BackOffice(Simulation):
    def __init__(self, places: Places, *, seed: int = 11, rate: float = 1.0):
        super().__init__(seed, rate)
        if not places.facilities:
            raise ValueError("the demo needs places (facility, units, beds) in the configuration")
        fac = places.facilities[0]
        self.units: dict[str, Unit] = {u.id: u for d in fac.departments for u in d.units}
        self.per_shift = {
            uid: math.ceil(u.beds * 0.95 / MAX_RATIO.get(u.type or "", 4)) for uid, u in self.units.items()
        }
        self.pool = {uid: [f"{uid}-N{i:02d}" for i in range(n * 3 + 2)] for uid, n in self.per_shift.items()}
        self.on_shift: dict[str, dict[str, Any]] = {}  # staff id -> their clock-in row
        self.started: dict[str, float] = {}  # staff id -> clock-in time
        self.shift_count = 0

    def _role(self, staff: str) -> str:
        if staff.startswith("FLOAT"):
            return "rn"
        return LICENSED[int(staff.rsplit("N", 1)[1]) % len(LICENSED)]

    # -- setup ---------------------------------------------------------------------------
    def seed_history(self, now: float) -> None:
        day0 = now - now % DAY
        for days in range(1, 31):  # each day is reported ten minutes after it ends
            self.at(day0 - (days - 1) * DAY + 600, "daily", day=day0 - days * DAY, chain=False)
        self.at(day0 + DAY + 600, "daily", day=day0, chain=True)
        self.at(now - 100 * DAY, "hr_baseline")
        for month in range(12):
            self.at(now - (month * 30 + 5) * DAY, "engagement")
        for uid in self.units:
            for _ in range(self.rng.choice((0, 1, 1))):
                self.at(now - self.rng.uniform(2, 88) * DAY, "turnover", unit=uid)
            for staff in self.pool[uid]:
                for _ in range(self.rng.choice((0, 1, 1))):
                    self.at(now - self.rng.uniform(1, 29) * DAY, "training", unit=uid, staff=staff)
        for days in range(90):
            for uid in self.units:
                for _ in range(self.rng.choice((0, 1, 1, 2))):
                    self.at(day0 - days * DAY + self.rng.uniform(8, 20) * 3600, "survey", unit=uid)
        # shifts: the last 14 days, then the one under way, then live changes
        first = now - now % SHIFT + 7 * 3600
        while first > now:
            first -= SHIFT
        self.shift_count = 0
        for k in range(28, 0, -1):
            self.at(first - k * SHIFT, "shift_change")
        self.at(first, "shift_change")
        self.at(first + SHIFT, "shift_change")
        self.at(now + self.rng.uniform(10, 20) * 60, "sick_call")
        self.at(now + self._exp(40), "survey_live")

    # -- staffing ------------------------------------------------------------------------
    def _shift_change(self, ts: float) -> list[Row]:
        """Clock-outs of the shift ending (with hours, overtime now and then), clock-ins of
        the one starting; the next change is scheduled 12 hours on."""
        rows = [self._clock_out(staff, ts + self._overtime()) for staff in list(self.on_shift)]
        self.shift_count += 1
        for uid, need in self.per_shift.items():
            pool = self.pool[uid]
            start = (self.shift_count * need) % len(pool)
            for j in range(need):
                rows.append(self._clock_in(pool[(start + j) % len(pool)], uid, ts))
        if not any(action == "shift_change" for _, _, action, _ in self.queue):
            self.at(ts + SHIFT, "shift_change")
        return rows

    def _overtime(self) -> float:
        return self.rng.uniform(1, 3) * 3600 if self.rng.random() < 0.03 else 0.0

    def _clock_in(self, staff: str, unit: str, ts: float) -> Row:
        row = {"staff_id": staff, "role": self._role(staff), "unit": unit, "shift_start": _iso(ts)}
        self.on_shift[staff] = row
        self.started[staff] = ts
        return "staffing", dict(row)

    def _clock_out(self, staff: str, ts: float) -> Row:
        row = self.on_shift.pop(staff)
        worked = (ts - self.started.pop(staff)) / 3600
        overtime = max(0.0, worked - 12.0)
        return "staffing", {
            **row,
            "shift_end": _iso(ts),
            "worked_hours": round(worked, 2),
            "overtime_hours": round(overtime, 2),
        }

    def _sick_call(self, ts: float) -> list[Row]:
        """A licensed nurse goes home; a float nurse comes 30-75 minutes later."""
        self.at(ts + self._exp(70), "sick_call")
        licensed = [s for s, r in self.on_shift.items() if r["role"] in ("rn", "lpn")]
        if not licensed:
            return []
        staff = self.rng.choice(licensed)
        unit = self.on_shift[staff]["unit"]
        self.at(ts + self.rng.uniform(30, 75) * 60, "float_in", unit=unit)
        return [self._clock_out(staff, ts)]

    def _float_in(self, ts: float, unit: str) -> list[Row]:
        staff = f"FLOAT-{int(ts) % 100000:05d}"
        return [self._clock_in(staff, unit, ts)]

    # -- HR ------------------------------------------------------------------------------
    def _hr_baseline(self, ts: float) -> list[Row]:
        """Everyone on the books (as hires on one day), then certifications over a month."""
        rows: list[Row] = []
        for uid, pool in self.pool.items():
            for staff in pool:
                rows.extend(self._hire(ts, uid, staff))
                if self._role(staff) == "rn" and self.rng.random() < 0.5:
                    self.at(ts + self.rng.uniform(1, 30) * DAY, "certified", unit=uid, staff=staff)
        return rows

    def _certified(self, ts: float, unit: str, staff: str) -> list[Row]:
        row = {
            "event": "certification_granted",
            "time": _day(ts),
            "unit": unit,
            "staff_id": staff,
            "role": "rn",
        }
        return [("hr", row)]

    def _turnover(self, ts: float, unit: str) -> list[Row]:
        """Someone leaves; their replacement starts two to six weeks later."""
        leaver = self.rng.choice(self.pool[unit])
        rows: list[Row] = [
            (
                "hr",
                {
                    "event": "separation",
                    "time": _day(ts),
                    "unit": unit,
                    "staff_id": leaver,
                    "role": self._role(leaver),
                },
            )
        ]
        hired = ts + self.rng.uniform(14, 42) * DAY
        if hired < self.clock + 120 * DAY:
            self.at(hired, "hire", unit=unit, staff=leaver)
        return rows

    def _hire(self, ts: float, unit: str, staff: str) -> list[Row]:
        return [
            (
                "hr",
                {
                    "event": "hire",
                    "time": _day(ts),
                    "unit": unit,
                    "staff_id": staff,
                    "role": self._role(staff),
                },
            )
        ]

    def _training(self, ts: float, unit: str, staff: str) -> list[Row]:
        hours = self.rng.choice((1, 2, 2, 4, 8))
        row = {
            "event": "training",
            "time": _day(ts),
            "unit": unit,
            "staff_id": staff,
            "role": self._role(staff),
            "hours": hours,
        }
        return [("hr", row)]

    def _engagement(self, ts: float) -> list[Row]:
        rows: list[Row] = []
        for uid, pool in self.pool.items():
            for staff in self.rng.sample(pool, min(4, len(pool))):
                score = round(min(5.0, max(1.0, self.rng.gauss(3.95, 0.35))), 2)  # a 1-5 scale
                rows.append(
                    (
                        "hr",
                        {
                            "event": "engagement",
                            "time": _day(ts),
                            "unit": uid,
                            "staff_id": staff,
                            "score": score,
                        },
                    )
                )
        return rows

    # -- patient experience --------------------------------------------------------------
    def _survey(self, ts: float, unit: str) -> list[Row]:
        if self.rng.random() < 0.04:
            return [
                (
                    "experience",
                    {"kind": "complaint", "time": _iso(ts), "unit": unit, "question": "communication"},
                )
            ]
        score = min(10, max(0, round(self.rng.gauss(9.4, 1.1))))
        row = {"kind": "survey", "time": _iso(ts), "unit": unit, "question": "overall-rating", "score": score}
        return [("experience", row)]

    def _survey_live(self, ts: float) -> list[Row]:
        self.at(ts + self._exp(40), "survey_live")
        return self._survey(ts, self.rng.choice(list(self.units)))

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
            if unit.type in ("icu", "ed"):
                for _ in range(self.rng.randint(0, 3)):
                    rows.append(
                        (
                            "finance",
                            {
                                "time": date,
                                "unit": uid,
                                "category": "procedure",
                                "amount": round(self.rng.uniform(600, 2400), 2),
                            },
                        )
                    )
            if unit.type == "ed":
                continue
            line, catheter = (0.6, 0.5) if unit.type == "icu" else (0.05, 0.15)
            rows.append(
                (
                    "quality",
                    {
                        "event": "central_line_days",
                        "time": date,
                        "unit": uid,
                        "days": max(1, round(occupied * line)),
                    },
                )
            )
            rows.append(
                (
                    "quality",
                    {
                        "event": "catheter_days",
                        "time": date,
                        "unit": uid,
                        "days": max(1, round(occupied * catheter)),
                    },
                )
            )
            for event, chance in (
                ("clabsi", 0.004 if unit.type == "icu" else 0.0),
                ("cauti", 0.004),
                ("fall_injury", 0.008),
                ("pressure_injury", 0.008),
            ):
                if self.rng.random() < chance:
                    rows.append(("quality", {"event": event, "time": date, "unit": uid}))
        return rows

    # -- persistence ---------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        extra = {"on_shift": self.on_shift, "started": self.started, "shift_count": self.shift_count}
        return {**super().state(), **extra}

    def load(self, state: dict[str, Any]) -> None:
        super().load(state)
        self.on_shift = state["on_shift"]
        self.started = state["started"]
        self.shift_count = state["shift_count"]
