"""What the back office's systems share: the hospital's units, each unit's pool of nursing
staff and their roles, and rows dated as the feed API wants them. Time-and-attendance, HR,
the survey vendor, the ledger and infection prevention all count the same people and units.
"""

from __future__ import annotations

from typing import Any

from demo.sim import Simulation, at_time
from engine.places import Unit

DAY = 86400.0
MAX_RATIO = {"icu": 2, "step_down": 3, "telemetry": 4, "ed": 4, "pediatrics": 4, "med_surg": 5}
LICENSED = ("rn", "rn", "rn", "lpn")  # the mix of a unit's licensed pool

Row = tuple[str, dict[str, Any]]  # (feed, row)


def _iso(ts: float) -> str:
    return at_time(ts).isoformat().replace("+00:00", "Z")


def _day(ts: float) -> str:
    return at_time(ts).date().isoformat()


class OfficeRecords(Simulation):
    """The back office's shared state (set up by BackOffice) and who is who in it."""

    units: dict[str, Unit]
    per_shift: dict[str, int]  # unit -> nurses on each shift
    pool: dict[str, list[str]]  # unit -> its staff ids, the roster rotates through them

    def _role(self, staff: str) -> str:
        if staff.startswith("FLOAT"):
            return "rn"
        return LICENSED[int(staff.rsplit("N", 1)[1]) % len(LICENSED)]
