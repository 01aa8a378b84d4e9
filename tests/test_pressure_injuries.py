"""Hospital-acquired pressure injuries per 1,000 patient-days, written from the NDNQI definition.

NDNQI's hospital-acquired pressure injury (HAPI) measure counts pressure injuries of stage 2
and above, unstageable injuries and deep tissue pressure injuries (NPIAP stages) that were not
present on admission; stage 1 injuries and injuries documented on admission are not counted.
carescore counts them as an incidence rate: HAPIs found on the unit / its patient-days x 1,000
(patient-days = hours each inpatient spent on the unit / 24, NDNQI's "actual hours" method).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from connectors.feeds.mapping import FeedMapper
from connectors.feeds.schemas import QualityRow
from engine.config import REPO_ROOT
from engine.core import Engine
from engine.definitions import load_catalogue
from engine.definitions.measures import EventPart, RatioMeasure
from engine.eventframe import frame_from_records
from engine.events import EncounterEvent, EventBase
from engine.places import Places
from engine.report_events import matching

KPI = "pressure_injuries_per_1000_patient_days"
START = datetime(2026, 3, 1, tzinfo=UTC)
END = START + timedelta(days=25)

# Quality feed rows from the wound-care team, 4W, all inside the trailing 30 days:
#   WC-1  stage 1, hospital-acquired        not counted: stage 1 is below NDNQI's stage 2+
#   WC-2  stage 2, present on admission     not counted: community-acquired
#   WC-3  stage 3, hospital-acquired        counted
#   WC-4  unstageable, hospital-acquired    counted (NDNQI counts unstageable)
#   WC-5  DTPI ("DTPI"), hospital-acquired  counted (NDNQI counts deep tissue injury)
#   WC-6  stage 4, present on admission     not counted: community-acquired
#   WC-7  stage II ("II"), hospital-acq.    counted (the stage is read as 2)
# Patient-days: 4 inpatients on 4W from START to END (25 days) = 4 x 25 = 100 patient-days.
# Expected: 4 HAPIs / 100 patient-days x 1,000 = 40.0 per 1,000 patient-days.
ROWS: list[dict[str, Any]] = [
    {"record_id": "WC-1", "stage": "1", "present_on_admission": "false", "time": "2026-03-04"},
    {"record_id": "WC-2", "stage": "2", "present_on_admission": "true", "time": "2026-03-06"},
    {"record_id": "WC-3", "stage": "3", "present_on_admission": "false", "time": "2026-03-09"},
    {"record_id": "WC-4", "stage": "unstageable", "present_on_admission": "N", "time": "2026-03-12"},
    {"record_id": "WC-5", "stage": "DTPI", "present_on_admission": "no", "time": "2026-03-15"},
    {"record_id": "WC-6", "stage": 4, "present_on_admission": True, "time": "2026-03-18"},
    {"record_id": "WC-7", "stage": "II", "present_on_admission": False, "time": "2026-03-21"},
]
EXPECTED = 4 / 100 * 1000


def _stay(kind: str, when: datetime, visit: str) -> EncounterEvent:
    return EncounterEvent(
        type=kind,  # type: ignore[arg-type]
        event_time=when,
        received_time=when,
        source="hl7v2",
        source_id=f"{visit}:{kind}",
        encounter_id=visit,
        facility="DEMO",
        department="medicine",
        unit="4W",
        patient_class="inpatient" if kind == "encounter.admit" else None,
    )


def _feed_events(places: Places, rows: list[dict[str, Any]]) -> list[EventBase]:
    mapper = FeedMapper(places.index(), UTC, END)
    events: list[EventBase] = []
    for row in rows:
        events += mapper.events(QualityRow.model_validate({"event": "pressure_injury", "unit": "4W", **row}))
    return events


def test_hapi_rate_counts_stage_2_and_above_not_present_on_admission(places: Places) -> None:
    catalogue = load_catalogue(REPO_ROOT / "kpi_defs")
    engine = Engine(catalogue, places)
    visits = [f"HAPI{i}" for i in range(4)]
    events: list[EventBase] = [_stay("encounter.admit", START, v) for v in visits]
    events += [_stay("encounter.discharge", END, v) for v in visits]
    events += _feed_events(places, ROWS)
    # the device-day row only moves the feed's watermark to END; it is not in this KPI
    events += FeedMapper(places.index(), UTC, END).events(
        QualityRow.model_validate({"event": "catheter_days", "unit": "4W", "time": "2026-03-26", "days": 1})
    )
    for event in sorted(events, key=lambda e: e.ts):
        engine.process(event)

    samples = {(s.group.unit, s.group.department): s for s in engine.live(END.timestamp()) if s.kpi == KPI}
    unit = samples[("4W", "medicine")]
    assert (unit.numerator, unit.denominator) == (pytest.approx(4), pytest.approx(100))
    assert unit.value == pytest.approx(EXPECTED)
    facility = samples[(None, None)]  # no other unit had a HAPI or these patients
    assert facility.value == pytest.approx(EXPECTED)

    # the period report filters the log the same way (stage list and present_on_admission)
    measure = catalogue.kpis[KPI].measure
    assert isinstance(measure, RatioMeasure) and isinstance(measure.numerator, EventPart)
    frame = frame_from_records([e.model_dump(mode="json") for e in events])
    counted = matching(frame, measure.numerator)
    assert sorted(counted["stage"].to_list()) == ["2", "3", "dti", "unstageable"]


@pytest.mark.parametrize(
    ("row", "field"),
    [
        ({"event": "pressure_injury", "present_on_admission": "false"}, "stage"),
        ({"event": "pressure_injury", "stage": "2"}, "present_on_admission"),
        ({"event": "pressure_injury", "stage": "5", "present_on_admission": "false"}, "stage"),
        ({"event": "clabsi", "stage": "2"}, "stage"),
    ],
)
def test_a_pressure_injury_row_must_say_its_stage_and_whether_present_on_admission(
    row: dict[str, Any], field: str
) -> None:
    """Without them the injury cannot be classed, and counting or dropping it silently would
    both be wrong: the row is refused and names the column."""
    with pytest.raises(ValidationError) as failure:
        QualityRow.model_validate({"unit": "4W", "time": "2026-03-04", **row})
    assert [e["loc"] for e in failure.value.errors()] == [(field,)]


def test_rows_without_the_new_columns_keep_their_ids(places: Places) -> None:
    """A quality file sent before stage/present_on_admission existed, sent again, is stored once."""
    mapper = FeedMapper(places.index(), UTC, END)
    row = QualityRow.model_validate({"event": "clabsi", "unit": "ICU", "time": "2026-03-04"})
    (event,) = mapper.events(row)
    legacy = {"event": "clabsi", "time": row.time, "days": None, "patient_id": None, "record_id": None}
    legacy_row = {"unit": "ICU", "facility": None, **legacy}
    before = FeedMapper(places.index(), UTC, END).base(row, "quality.clabsi", event.event_time, legacy_row)
    assert event.source_id == before["source_id"]
