"""Small-cell suppression: which counts behind a KPI value are counts of patients.

The CMS Cell Size Suppression Policy (https://www.hhs.gov/guidance/document/cms-cell-suppression-policy):
"no cell (e.g. admissions, discharges, patients, services, etc.) containing a value of 1 to
10 can be reported directly", nor one derivable from other reported figures; so the default
threshold k is 11. A value is too small to
show a viewer when one of its patient cells is from 1 to k-1 (0 is shown: no patient can be
recognised in it). Which counts are patient cells follows from the measure:

- stay, duration (orders, calls), top-box answers, and counts/values of patient events:
  the observations the value was computed from (`n`);
- readmission: the index discharges and the readmissions (numerator and denominator);
- ratio: its numerator and its denominator where that part counts patient events.

Staffing, HR, finance and census levels (gauges) hold no patient cells. Not covered: a cell
derived by subtraction across places (a facility's value minus its other units').
"""

from __future__ import annotations

from engine.definitions import KpiDefinition
from engine.definitions.measures import EventMeasure, EventPart, RatioMeasure, StayMeasure

DEFAULT_MIN_CELL = 11
PATIENT_FAMILIES = frozenset({"encounter", "lab", "nursecall", "experience", "quality", "procedure"})
_BY_N = frozenset({"stay", "duration", "top_box"})


def _counts_patients(part: object) -> bool:
    if isinstance(part, StayMeasure):
        return True  # stays or visits: patients
    return isinstance(part, EventPart) and part.kind == "count" and _family(part.event) in PATIENT_FAMILIES


def _family(event_type: str) -> str:
    return event_type.split(".", 1)[0]


def patient_cells(
    kpi: KpiDefinition, n: int | None, numerator: float | None, denominator: float | None
) -> list[float]:
    """The counts of patients behind one value of this KPI (empty: not patient-level)."""
    measure = kpi.measure
    if measure.kind in _BY_N:
        return [n or 0]
    if measure.kind == "readmission":
        return [numerator or 0, denominator or 0]
    if isinstance(measure, EventMeasure):
        return [n or 0] if _family(measure.event) in PATIENT_FAMILIES else []
    if isinstance(measure, RatioMeasure):
        cells = []
        if _counts_patients(measure.numerator):
            cells.append(numerator or 0)
        if _counts_patients(measure.denominator):
            cells.append(denominator or 0)
        return cells
    return []


def too_small(
    kpi: KpiDefinition, n: int | None, numerator: float | None, denominator: float | None, k: int
) -> bool:
    """A patient cell from 1 to k-1: the value must not be shown to whom small cells are hidden."""
    return any(0 < cell < k for cell in patient_cells(kpi, n, numerator, denominator))
