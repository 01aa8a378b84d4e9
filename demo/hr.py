"""HR's records, which the workforce KPIs (vacancy, turnover, first-year turnover,
certification, training, engagement) need: a year's baseline of headcount and budgeted
positions, hires, leavers, transfers between units, certifications, training hours and
engagement pulses.
"""

from __future__ import annotations

from demo.office_records import DAY, OfficeRecords, Row, _day


class HumanResources(OfficeRecords):
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
