"""Time-and-attendance: 12-hour shifts changing at 07:00 and 19:00 UTC, clock-ins and
clock-outs with overtime now and then, and a nurse going home sick mid-shift, so the unit
runs short until a float nurse arrives and the nurse-to-patient ratio KPI breaches.
"""

from __future__ import annotations

from typing import Any

from demo.office_records import OfficeRecords, Row, _iso

SHIFT = 12 * 3600.0


class Roster(OfficeRecords):
    on_shift: dict[str, dict[str, Any]]  # staff id -> their clock-in row
    started: dict[str, float]  # staff id -> clock-in time
    shift_count: int  # shifts so far: where the rotation through each pool stands

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
