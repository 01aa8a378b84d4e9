"""The tabular MIMIC-IV import (`carescore import mimic`, connectors/feeds/mimic.py) speaks the
same vocabulary as the HL7 path: through the period report it gives the length of stay and
the 30-day readmission cohort that tests/test_mimic_hl7_proof.py computes from the published
definitions with polars over the CSVs (the same functions, written from the standards; none of
them imports the engine). MIMIC's own dates are used here, unshifted: whole-day shifts change
neither midnight counts nor calendar-day gaps."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import orjson
import polars as pl
import pytest

from connectors.feeds.mimic import mimic_events
from engine.config import REPO_ROOT
from engine.definitions import load_catalogue
from engine.eventframe import frame_from_records
from engine.events import dump_event
from engine.reports import Reporter
from tests import mimic_hl7 as mh
from tests.conftest import needs_testdata
from tests.test_mimic_hl7_proof import length_of_stay, readmission_cohort

CATALOGUE = load_catalogue(REPO_ROOT / "kpi_defs")


@pytest.fixture(scope="module")
def imported() -> dict[str, Any]:
    folder = needs_testdata("mimic-iv-demo")
    events = [e for e in mimic_events(folder) if e.type.startswith("encounter.")]
    data = mh.Mimic(
        admissions=mh.read(folder, "admissions"),
        transfers=mh.read(folder, "transfers"),
        labevents=pl.DataFrame(),
        patients=mh.read(folder, "patients"),
        shifts=pl.DataFrame(),
        today=date.today(),
    )
    reporter = Reporter(frame_from_records([orjson.loads(dump_event(e)) for e in events]))
    span = (datetime(2100, 1, 1, tzinfo=UTC), datetime(2300, 1, 1, tzinfo=UTC))
    return {"data": data, "reporter": reporter, "span": span}


def facility(imported: dict[str, Any], kpi: str) -> Any:
    rows = imported["reporter"].report(CATALOGUE[kpi], *imported["span"], "facility")
    assert len(rows) == 1
    return rows[0]


def test_length_of_stay_from_the_tabular_import(imported: dict[str, Any]) -> None:
    expected = length_of_stay(imported["data"])["value"]  # 233 inpatient stays, midnight count
    mean = facility(imported, "average_length_of_stay")
    assert (mean.n, mean.value) == (expected.len(), pytest.approx(expected.mean(), rel=1e-12))
    assert facility(imported, "average_length_of_stay_median").value == pytest.approx(expected.median())


def test_readmission_cohort_from_the_tabular_import(imported: dict[str, Any]) -> None:
    cohort = readmission_cohort(imported["data"])["value"]  # CMS HWR index stays, 1 if readmitted
    row = facility(imported, "readmission_30d_rate")
    assert (row.numerator, row.denominator) == (cohort.sum(), cohort.len())
    assert cohort.sum() > 0
