"""Building HL7 v2.5.1 messages (for the demo hospital, tests and benchmarks).

Fields are placed by their HL7 position, so the builders read like the spec tables.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from connectors.hl7v2.dtm import format_dtm

_control = itertools.count(1)


def segment(name: str, fields: dict[int, str]) -> str:
    """A segment with fields at their positions (1-based), empty in between."""
    size = max(fields) if fields else 0
    values = [fields.get(i, "") for i in range(1, size + 1)]
    return "|".join([name, *values])


def msh(
    mtype: str,
    when: datetime,
    *,
    facility: str,
    app: str = "DEMO-EMR",
    control_id: str | None = None,
    version: str = "2.5.1",
) -> str:
    return "MSH|^~\\&|" + "|".join(
        [
            app,
            facility,
            "CARESCORE",
            facility,
            format_dtm(when),
            "",
            mtype,
            control_id or f"{app}-{next(_control):09d}",
            "P",
            version,
        ]
    )


@dataclass(frozen=True)
class Patient:
    mrn: str
    family: str
    given: str
    birth: str
    sex: str


@dataclass(frozen=True)
class Location:
    unit: str
    room: str = ""
    bed: str = ""
    facility: str = ""

    def pl(self) -> str:
        return f"{self.unit}^{self.room}^{self.bed}^{self.facility}"


@dataclass(frozen=True)
class Visit:
    """Who and where a message is about: the PID and PV1 every builder below writes."""

    patient: Patient
    patient_class: str
    location: Location
    visit: str
    facility: str

    def pid(self) -> str:
        p = self.patient
        return segment(
            "PID",
            {1: "1", 3: f"{p.mrn}^^^{self.facility}^MR", 5: f"{p.family}^{p.given}", 7: p.birth, 8: p.sex},
        )

    def pv1(
        self,
        *,
        prior: Location | None = None,
        admit: datetime | None = None,
        discharge: datetime | None = None,
        disposition: str = "",
    ) -> str:
        fields = {
            1: "1",
            2: self.patient_class,
            3: self.location.pl(),
            19: f"{self.visit}^^^{self.facility}^VN",
        }
        if prior is not None:
            fields[6] = prior.pl()
        if disposition:
            fields[36] = disposition
        if admit is not None:
            fields[44] = format_dtm(admit)
        if discharge is not None:
            fields[45] = format_dtm(discharge)
        return segment("PV1", fields)


def adt(trigger: str, when: datetime, visit: Visit, control_id: str | None = None, **pv1_fields: Any) -> str:
    segs = [
        msh(f"ADT^{trigger}^ADT_A01", when, facility=visit.facility, control_id=control_id),
        segment("EVN", {1: trigger, 2: format_dtm(when)}),
        visit.pid(),
        visit.pv1(**pv1_fields),
    ]
    return "\r".join(segs) + "\r"


def lab_order(
    when: datetime,
    visit: Visit,
    order_id: str,
    test: tuple[str, str],
    priority: str,
    control_id: str | None = None,
) -> str:
    segs = [
        msh("ORM^O01^ORM_O01", when, facility=visit.facility, control_id=control_id),
        visit.pid(),
        visit.pv1(),
        segment("ORC", {1: "NW", 2: f"{order_id}^DEMO-EMR", 7: f"^^^^^{priority}", 9: format_dtm(when)}),
        segment(
            "OBR",
            {
                1: "1",
                2: f"{order_id}^DEMO-EMR",
                4: f"{test[0]}^{test[1]}^LN",
                5: priority,
                6: format_dtm(when),
            },
        ),
    ]
    return "\r".join(segs) + "\r"


def lab_result(
    when: datetime,
    visit: Visit,
    order_id: str,
    test: tuple[str, str],
    priority: str,
    *,
    ordered: datetime,
    collected: datetime,
    received: datetime,
    value: str,
    units: str,
    status: str = "F",
    control_id: str | None = None,
) -> str:
    segs = [
        msh("ORU^R01^ORU_R01", when, facility=visit.facility, control_id=control_id),
        visit.pid(),
        visit.pv1(),
        segment("ORC", {1: "RE", 2: f"{order_id}^DEMO-EMR", 3: f"F{order_id}^LAB", 7: f"^^^^^{priority}"}),
        segment(
            "OBR",
            {
                1: "1",
                2: f"{order_id}^DEMO-EMR",
                3: f"F{order_id}^LAB",
                4: f"{test[0]}^{test[1]}^LN",
                5: priority,
                6: format_dtm(ordered),
                7: format_dtm(collected),
                14: format_dtm(received),
                22: format_dtm(when),
                25: status,
            },
        ),
        segment(
            "OBX",
            {
                1: "1",
                2: "NM",
                3: f"{test[0]}^{test[1]}^LN",
                5: value,
                6: units,
                11: status,
                14: format_dtm(when),
            },
        ),
    ]
    return "\r".join(segs) + "\r"


def nurse_call(
    when: datetime,
    visit: Visit,
    call_id: str,
    phase: str,
    *,
    state: str = "",
    control_id: str | None = None,
) -> str:
    """IHE PCD ACM ORU^R40: one alert (OBR-3 its id); OBX event phase start / continue / end,
    and on acknowledgement the alarm inactivation state."""
    segs = [
        msh("ORU^R40^ORU_R40", when, facility=visit.facility, app="NURSECALL", control_id=control_id),
        visit.pid(),
        visit.pv1(),
        segment(
            "OBR", {1: "1", 3: f"{call_id}^NURSECALL", 4: "196616^MDC_EVT_ALARM^MDC", 7: format_dtm(when)}
        ),
        segment("OBX", {1: "1", 2: "ST", 3: "68481^MDC_ATTR_EVENT_PHASE^MDC", 5: phase, 11: "F"}),
    ]
    if state:
        segs.append(
            segment("OBX", {1: "2", 2: "ST", 3: "68483^MDC_ATTR_ALARM_INACTIVATION_STATE^MDC", 5: state})
        )
    return "\r".join(segs) + "\r"


def procedure_charge(
    when: datetime,
    visit: Visit,
    procedure: tuple[str, str],
    amount: float,
    *,
    control_id: str | None = None,
) -> str:
    """DFT^P03 for a procedure done: the charge (FT1) and the procedure itself (PR1)."""
    code = f"{procedure[0]}^{procedure[1]}^CPT"
    segs = [
        msh("DFT^P03^DFT_P03", when, facility=visit.facility, app="BILLING", control_id=control_id),
        segment("EVN", {1: "P03", 2: format_dtm(when)}),
        visit.pid(),
        visit.pv1(),
        segment(
            "FT1",
            {
                1: "1",
                4: format_dtm(when),
                6: "CG",
                7: procedure[0],
                10: "1",
                11: f"{amount:.2f}^USD",
                25: code,
            },
        ),
        segment("PR1", {1: "1", 3: code, 5: format_dtm(when)}),
    ]
    return "\r".join(segs) + "\r"
