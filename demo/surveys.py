"""The survey vendor: returned HCAHPS surveys item by item, as CMS words them, and
complaints, through the day; 90 days backfilled, since HCAHPS KPIs are quarterly.
"""

from __future__ import annotations

from typing import Any

from demo.office_records import DAY, OfficeRecords, Row, _day, _iso

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


class PatientSurveys(OfficeRecords):
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
