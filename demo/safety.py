"""Infection prevention and patient safety, reported once a day per inpatient unit:
central-line and catheter days (the denominators of CLABSI and CAUTI rates), the rare
infection or pressure injury, and falls with their injury level.
"""

from __future__ import annotations

from typing import Any

from demo.office_records import OfficeRecords, Row
from engine.places import Unit

# pressure injuries as a wound-care team finds them (stage mix, roughly as in prevalence surveys)
PI_STAGES = ("1", "2", "3", "4", "unstageable", "dti")
PI_STAGE_WEIGHTS = (30, 40, 5, 2, 8, 15)


class SafetyReports(OfficeRecords):
    def _device_days(self, date: str, uid: str, unit: Unit, occupied: float) -> list[Row]:
        """Patients with a central line or a urinary catheter: many in the ICU, few elsewhere."""
        rows: list[Row] = []
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
        return rows

    def _harm_events(self, date: str, uid: str, unit: Unit) -> list[Row]:
        """Now and then a CLABSI (ICU only), a CAUTI or a pressure injury."""
        rows: list[Row] = []
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
        return rows

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
