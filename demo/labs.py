"""The lab as the EMR sees it: STAT and routine orders (ORM^O01) and their results
(ORU^R01). Now and then a unit's lab goes slow, so STAT turnaround breaches and alerts fire
and later resolve; that is what makes the demo's alerting visible.

The scenario `stat_backlog` (demo.scenarios) is a breach that builds up, what a forecast alert
is for: a busy ICU orders a STAT test every 2 minutes from 3 hours before the demo starts
(enough for its STAT p90, which needs 20 results an hour, and for the 24 closed windows a
forecast needs); until the start they come back in about 30 minutes, then an analyser is down
and the backlog builds: over the next 90 minutes each order's turnaround grows from 30 to 90
minutes, after which the lab is back to normal.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Any

from connectors.hl7v2 import messages as m
from demo.patients import PatientRecords, Stay
from demo.sim import at_time as _dt

log = logging.getLogger("demo.hospital")  # the name it logged under before the hospital was split

STAT_TESTS = [
    ("6598-7", "Troponin T", "ng/L", 5, 60),
    ("2524-7", "Lactate", "mmol/L", 0.5, 6.0),
    ("2823-3", "Potassium", "mmol/L", 3.0, 6.2),
]
ROUTINE_TESTS = [
    ("58410-2", "CBC panel", "10*3/uL", 4, 15),
    ("51990-0", "Basic metabolic panel", "mmol/L", 130, 148),
]


BACKLOG_BASELINE = 3 * 3600.0
"""stat_backlog: the busy ICU's STAT orders with normal turnaround before the demo starts."""
BACKLOG_RAMP = 90 * 60.0
"""stat_backlog: how long the turnaround grows after the start, from 30 to 90 minutes."""
BACKLOG_EVERY = 120.0


class Labs(PatientRecords):
    slow: dict[str, int]  # unit -> STAT orders still to come back slow

    def stat_backlog(self, unit: str, start: float) -> None:
        """Schedule the scenario (see above) on `unit`, the backlog building from `start`."""
        t = start - BACKLOG_BASELINE
        while t < start + BACKLOG_RAMP:
            self.at(t, "backlog_order", unit=unit, start=start)
            t += BACKLOG_EVERY

    def _backlog_order(self, ts: float, unit: str, start: float) -> list[str]:
        grown = max(0.0, ts - start) / BACKLOG_RAMP  # 0 before the start, 1 at the ramp's end
        tat = (30 + 60 * grown) * 60 * self.rng.uniform(0.95, 1.05)
        return self._stat_order(ts, unit, slow_until=ts + tat)

    def _lab_rounds(self, ts: float) -> list[str]:
        """Every 20 minutes: some inpatients get routine labs, ICU patients STAT ones."""
        self.at(ts + 1200, "lab_rounds")
        for stay in list(self.stays.values()):
            if stay.patient_class != "I":
                continue
            if stay.unit in self.icu and self.rng.random() < 0.11 * self.rate:
                self.at(ts + self.rng.uniform(0, 1200), "stat_order", unit=stay.unit, visit=stay.visit)
            elif self.rng.random() < 0.04 * self.rate:
                self.at(ts + self.rng.uniform(0, 1200), "routine_order", visit=stay.visit)
            elif self.rng.random() < 0.008 * self.rate:
                self.at(ts + self.rng.uniform(0, 1200), "stat_order", unit=stay.unit, visit=stay.visit)
        return []

    def _slowdown(self, ts: float) -> list[str]:
        candidates = [u for u in self.units if u in self.icu or (self.ed and u == self.ed.id)] or list(
            self.units
        )
        unit = self.rng.choice(candidates)
        self.slow[unit] = self.rng.randint(3, 5)
        log.info("demo: lab slowdown begins", extra={"unit": unit})
        self.at(ts + self.rng.uniform(35, 70) * 60, "slowdown")
        return []

    def _order(self, ts: float, stay: Stay, priority: str, tat: float, test: tuple[Any, ...]) -> list[str]:
        self.counter += 1
        order_id = f"ORD{self.counter:08d}"
        self.at(
            ts + tat,
            "result",
            stay=asdict(stay),
            order_id=order_id,
            priority=priority,
            ordered=ts,
            test=list(test),
        )
        return [
            m.lab_order(
                _dt(ts),
                self._visit(stay),
                order_id,
                (test[0], test[1]),
                priority,
                control_id=self._control_id(),
            )
        ]

    def _stat_order(
        self, ts: float, unit: str, visit: str | None = None, slow_until: float | None = None
    ) -> list[str]:
        stay = self.stays.get(visit) if visit else None
        if stay is None:
            pool = [s for s in self.stays.values() if s.unit == unit]
            if not pool:
                return []
            stay = self.rng.choice(pool)
        if slow_until is not None:
            tat = slow_until - ts
        elif self.slow.get(unit, 0) > 0:
            self.slow[unit] -= 1
            tat = self.rng.uniform(82, 115) * 60
        else:
            tat = self._lognormal_minutes(31, 0.33)
        return self._order(ts, stay, "S", tat, self.rng.choice(STAT_TESTS))

    def _routine_order(self, ts: float, visit: str) -> list[str]:
        stay = self.stays.get(visit)
        if stay is None:
            return []
        return self._order(ts, stay, "R", self._lognormal_minutes(150, 0.4), self.rng.choice(ROUTINE_TESTS))

    def _result(
        self,
        ts: float,
        stay: dict[str, Any],
        order_id: str,
        priority: str,
        ordered: float,
        test: list[Any],
    ) -> list[str]:
        s = Stay(**stay)
        span = ts - ordered
        collected = ordered + span * self.rng.uniform(0.1, 0.3)
        received = collected + span * self.rng.uniform(0.05, 0.2)
        value = f"{self.rng.uniform(test[3], test[4]):.1f}"
        return [
            m.lab_result(
                _dt(ts),
                self._visit(s),
                order_id,
                (test[0], test[1]),
                priority,
                ordered=_dt(ordered),
                collected=_dt(collected),
                received=_dt(received),
                value=value,
                units=test[2],
                control_id=self._control_id(),
            )
        ]
