"""The nurse call system, as IHE PCD ACM alerts (ORU^R40): calls placed, acknowledged on a
phone, staff presence in the room, calls ended. A unit gets busy now and then, so call
response times breach the way they do on a short-staffed shift.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from connectors.hl7v2 import messages as m
from demo.patients import PatientRecords, Stay
from demo.sim import at_time as _dt


class NurseCalls(PatientRecords):
    busy: dict[str, int]  # unit -> nurse calls still to be answered slowly

    def _call_rounds(self, ts: float) -> list[str]:
        """Every 10 minutes: each inpatient calls now and then (about every 3 hours)."""
        self.at(ts + 600, "call_rounds")
        for stay in list(self.stays.values()):
            if self.rng.random() < 0.055 * self.rate:
                self.at(ts + self.rng.uniform(0, 600), "call", visit=stay.visit)
        return []

    def _call(self, ts: float, visit: str) -> list[str]:
        stay = self.stays.get(visit)
        if stay is None:
            return []
        self.counter += 1
        call_id = f"NC{self.counter:08d}"
        if self.rng.random() < 0.08:
            # The call ends at the bedside before anyone acknowledges it on a device: answered in
            # the room, or the patient pressed cancel. ACM's "end" cannot tell them apart, so
            # carescore counts it as answered then.
            self.at(
                ts + self.rng.uniform(20, 90), "call_phase", stay=asdict(stay), call_id=call_id, phase="end"
            )
        else:
            if self.busy.get(stay.unit, 0) > 0:
                self.busy[stay.unit] -= 1
                wait = self.rng.uniform(7, 14) * 60
            else:
                wait = self._lognormal_minutes(1.6, 0.6)
            answered = ts + wait
            way = self.rng.random()
            if way < 0.6:  # acknowledged on the nurse's phone, presence registered on arrival
                self.at(answered, "call_phase", stay=asdict(stay), call_id=call_id, phase="continue")
                self.at(
                    answered + self.rng.uniform(30, 120), "call_presence", stay=asdict(stay), call_id=call_id
                )
            elif way < 0.85:  # the nurse goes straight in: presence first, no acknowledgement
                self.at(answered, "call_presence", stay=asdict(stay), call_id=call_id)
            else:  # acknowledged, answered over the intercom: no presence
                self.at(answered, "call_phase", stay=asdict(stay), call_id=call_id, phase="continue")
            self.at(
                answered + self.rng.uniform(150, 600),
                "call_phase",
                stay=asdict(stay),
                call_id=call_id,
                phase="end",
            )
        return [m.nurse_call(_dt(ts), self._visit(stay), call_id, "start", control_id=self._control_id())]

    def _call_phase(self, ts: float, stay: dict[str, Any], call_id: str, phase: str) -> list[str]:
        state = "acknowledged" if phase == "continue" else ""
        visit = self._visit(Stay(**stay))
        return [m.nurse_call(_dt(ts), visit, call_id, phase, state=state, control_id=self._control_id())]

    def _call_presence(self, ts: float, stay: dict[str, Any], call_id: str) -> list[str]:
        """Staff presence registered in the room (badge or room button), sent as an OBX in the
        alert's ORU^R40, as presence-capable nurse call systems do (not an ACM observation)."""
        visit = self._visit(Stay(**stay))
        segs = [
            m.msh(
                "ORU^R40^ORU_R40",
                _dt(ts),
                facility=visit.facility,
                app="NURSECALL",
                control_id=self._control_id(),
            ),
            visit.pid(),
            visit.pv1(),
            m.segment(
                "OBR",
                {1: "1", 3: f"{call_id}^NURSECALL", 4: "196616^MDC_EVT_ALARM^MDC", 7: m.format_dtm(_dt(ts))},
            ),
            m.segment("OBX", {1: "1", 2: "ST", 3: "STAFF_PRESENCE^Staff presence^L", 5: "present", 11: "F"}),
        ]
        return ["\r".join(segs) + "\r"]

    def _call_surge(self, ts: float) -> list[str]:
        """A unit gets busy: its next calls wait 7-14 minutes (the response KPIs breach)."""
        unit = self.rng.choice(self.wards or list(self.units))
        self.busy[unit] = self.rng.randint(5, 8)
        self.at(ts + self.rng.uniform(50, 90) * 60, "call_surge")
        return []
