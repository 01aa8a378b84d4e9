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
"""

from __future__ import annotations

import math
from typing import Any

from demo.sim import Simulation, at_time
from engine.places import Places, Unit

DAY = 86400.0
SHIFT = 12 * 3600.0
MAX_RATIO = {"icu": 2, "step_down": 3, "telemetry": 4, "ed": 4, "pediatrics": 4, "med_surg": 5}
LICENSED = ("rn", "rn", "rn", "lpn")  # the mix of a unit's licensed pool
HCAHPS_TOP = {  # the demo's chance of a top-box answer, by HCAHPS measure
    "nurse_communication": 0.86,
    "doctor_communication": 0.86,
    "responsiveness": 0.76,
    "communication_about_medicines": 0.75,
    "discharge_information": 0.9,
    "care_transition": 0.6,
    "cleanliness": 0.78,
    "quietness": 0.68,
    "overall_rating": 0.78,
    "recommend": 0.77,
}
# pressure injuries as a wound-care team finds them (stage mix, roughly as in prevalence surveys)
PI_STAGES = ("1", "2", "3", "4", "unstageable", "dti")
PI_STAGE_WEIGHTS = (30, 40, 5, 2, 8, 15)

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
            uid: math.ceil(u.beds * 1.1 / MAX_RATIO.get(u.type or "", 4)) for uid, u in self.units.items()
        }
        self.pool = {uid: [f"{uid}-N{i:02d}" for i in range(n * 3 + 2)] for uid, n in self.per_shift.items()}
        self.on_shift: dict[str, dict[str, Any]] = {}  # staff id -> their clock-in row
        self.started: dict[str, float] = {}  # staff id -> clock-in time
        self.shift_count = 0
        self.billing_from = 0.0
        self.accrued: tuple[float, float] = (0.0, 0.0)

    def _role(self, staff: str) -> str:
        if staff.startswith("FLOAT"):
            return "rn"
        return LICENSED[int(staff.rsplit("N", 1)[1]) % len(LICENSED)]

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
        """HR's baseline: each unit's headcount per role and its budgeted RN positions (a
        little above the RNs on the books: a few vacancies); then certifications over a month
        for about half of the RNs (some of them a second credential)."""
        rows: list[Row] = []
        for uid, pool in self.pool.items():
            day = _day(ts)
            for role in sorted({self._role(s) for s in pool}):
                count = sum(1 for s in pool if self._role(s) == role)
                rows.append(
                    ("hr", {"event": "headcount", "time": day, "unit": uid, "role": role, "headcount": count})
                )
                if role == "rn":
                    budget = count + self.rng.choice((4, 5, 5, 6))  # the year's new graduates, and a few more
                    rows.append(
                        (
                            "hr",
                            {
                                "event": "positions",
                                "time": day,
                                "unit": uid,
                                "role": role,
                                "positions": budget,
                            },
                        )
                    )
            for staff in pool:
                if self._role(staff) == "rn" and self.rng.random() < 0.5:
                    for credential in self.rng.choice((("CCRN",), ("CMSRN",), ("CCRN", "PCCN"))):
                        when = ts + self.rng.uniform(1, 30) * DAY
                        self.at(when, "certified", unit=uid, staff=staff, credential=credential)
        return rows

    def _certified(self, ts: float, unit: str, staff: str, credential: str = "CCRN") -> list[Row]:
        row = {
            "event": "certification_granted",
            "time": _day(ts),
            "unit": unit,
            "staff_id": staff,
            "role": "rn",
            "certification": credential,
        }
        return [("hr", row)]

    def _transfer(self, ts: float, unit: str) -> list[Row]:
        """A nurse moves to another unit: not turnover, the headcounts move."""
        others = [u for u in self.units if u != unit]
        if not others:
            return []
        staff = self.rng.choice([s for s in self.pool[unit] if self._role(s) == "rn"] or self.pool[unit])
        row = {
            "event": "transfer",
            "time": _day(ts),
            "unit": self.rng.choice(others),
            "from_unit": unit,
            "staff_id": f"{staff}-X",  # their employee number (the pool id stays with the unit)
            "role": self._role(staff),
        }
        return [("hr", row)]

    def _turnover(self, ts: float, unit: str) -> list[Row]:
        """Someone leaves; their replacement starts two to six weeks later."""
        leaver = self.rng.choice(self.pool[unit])
        tenure = self.rng.uniform(400, 4000) * DAY
        rows: list[Row] = [
            (
                "hr",
                {
                    "event": "separation",
                    "time": _day(ts),
                    "unit": unit,
                    "staff_id": leaver,
                    "role": self._role(leaver),
                    "hire_date": _day(ts - tenure),
                },
            )
        ]
        hired = ts + self.rng.uniform(14, 42) * DAY
        if hired < self.clock + 120 * DAY:
            self.at(hired, "hire", unit=unit, staff=leaver)
        return rows

    def _hire(self, ts: float, unit: str, staff: str, role: str | None = None) -> list[Row]:
        """A hire; about a fifth of new RNs leave within their first year."""
        role = role or self._role(staff)
        if role == "rn" and self.rng.random() < 0.22:
            self.at(
                ts + self.rng.uniform(60, 330) * DAY, "first_year_leaver", unit=unit, staff=staff, hired=ts
            )
        return [("hr", {"event": "hire", "time": _day(ts), "unit": unit, "staff_id": staff, "role": role})]

    def _first_year_leaver(self, ts: float, unit: str, staff: str, hired: float) -> list[Row]:
        row = {
            "event": "separation",
            "time": _day(ts),
            "unit": unit,
            "staff_id": staff,
            "role": "rn",
            "hire_date": _day(hired),
        }
        return [("hr", row)]

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
        if self.units[unit].type == "ed":
            return []  # HCAHPS surveys inpatients, for the unit they were discharged from
        return [("experience", row) for row in self._hcahps(ts, unit)]

    def _hcahps(self, ts: float, unit: str) -> list[dict[str, Any]]:
        """A returned HCAHPS survey as the vendor's file has it: one row per answered item (CMS
        question numbers, answers as worded), following the screeners' skip instructions, for
        a discharge 2-14 days before it came back. A slightly better than average hospital."""
        rng = self.rng
        discharged = ts - rng.uniform(2, 14) * DAY
        base = {"kind": "survey", "time": _iso(ts), "discharge": _day(discharged), "unit": unit}
        base["survey_id"] = f"SV-{unit}-{int(ts * 1000)}"
        bias = (sum(map(ord, unit)) % 7 - 3) / 100  # units differ a little
        rows: list[dict[str, Any]] = []

        def ask(number: int, answer: str) -> None:
            rows.append({**base, "question": f"Q{number}", "answer": answer})

        def often(domain: str) -> str:
            if rng.random() < HCAHPS_TOP[domain] + bias:
                return "Always"
            return rng.choices(("Usually", "Sometimes", "Never"), (70, 20, 10))[0]

        for n in (1, 2, 3):
            ask(n, often("nurse_communication"))
        ask(4, "9" if rng.random() < 0.1 else often("responsiveness"))  # 9: never pressed the call button
        for n in (5, 6, 7):
            ask(n, often("doctor_communication"))
        ask(8, often("cleanliness"))
        ask(9, often("quietness"))
        needed_help = rng.random() < 0.6
        ask(10, "Yes" if needed_help else "No")  # screener: Q11 only for patients who needed help
        if needed_help:
            ask(11, often("responsiveness"))
        new_medicine = rng.random() < 0.65
        ask(12, "Yes" if new_medicine else "No")  # screener: Q13-Q14 only with a new medicine
        if new_medicine:
            ask(13, often("communication_about_medicines"))
            ask(14, often("communication_about_medicines"))
        went = rng.choices(("Own home", "Someone else's home", "Another health facility"), (85, 5, 10))[0]
        ask(15, went)  # screener: Q16-Q17 only for patients who did not go to another facility
        if went != "Another health facility":
            for n in (16, 17):
                ask(n, "Yes" if rng.random() < HCAHPS_TOP["discharge_information"] + bias else "No")
        if rng.random() < HCAHPS_TOP["overall_rating"] + bias:
            ask(18, rng.choice(("9", "10", "10")))
        else:
            ask(18, str(rng.choices((8, 7, 6, 5, 3), (50, 25, 12, 8, 5))[0]))
        if rng.random() < HCAHPS_TOP["recommend"] + bias:
            ask(19, "Definitely yes")
        else:
            ask(19, rng.choices(("Probably yes", "Probably no", "Definitely no"), (75, 17, 8))[0])
        for n in (20, 21, 22):
            if n == 22 and rng.random() < 0.1:
                ask(22, "5")  # I was not given any medicine when I left the hospital
            elif rng.random() < HCAHPS_TOP["care_transition"] + bias:
                ask(n, "Strongly agree")
            else:
                ask(n, rng.choices(("Agree", "Disagree", "Strongly disagree"), (80, 15, 5))[0])
        return rows

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
            rows.extend(self._revenue(date, uid, unit, occupied))
            # procedure costs where the EMR's procedures are done (the bedside: about 2.4 a day
            # per ICU patient, 0.6 elsewhere, as demo/hospital.py charges them)
            rows.extend(self._procedure_costs(date, uid, unit, occupied, *self._billed(day)))
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
                ("pressure_injury", 0.016),
            ):
                if self.rng.random() < chance:
                    row: dict[str, Any] = {"event": event, "time": date, "unit": uid}
                    if event == "pressure_injury":  # wound care records every one it finds
                        row["stage"] = self.rng.choices(PI_STAGES, PI_STAGE_WEIGHTS)[0]
                        row["present_on_admission"] = self.rng.random() < 0.45
                    rows.append(("quality", row))
            rows.extend(self._falls(date, uid, occupied))
        return rows

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
        """Procedure costs where the EMR's procedures are done (demo/hospital.py: per
        patient-day 0.5 in the ICU and 0.08 on wards in its history, 2.4 and 0.58 live), 450-750
        each; the ED's few are not costed."""
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

    def _falls(self, date: str, uid: str, occupied: float) -> list[Row]:
        """Falls at about the NDNQI adult rate (3.5 per 1,000 patient-days), a quarter of them
        with injury (Bouldin 2013), each with its injury level."""
        rows: list[Row] = []
        for k in range(2):
            if self.rng.random() < occupied * 0.0035 / 2:
                injury = self.rng.choices(("none", "minor", "moderate", "major"), (74, 20, 4, 2))[0]
                row = {
                    "event": "fall",
                    "time": date,
                    "unit": uid,
                    "injury": injury,
                    "record_id": f"RL-{uid}-{date}-{k}",
                }
                rows.append(("quality", row))
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
