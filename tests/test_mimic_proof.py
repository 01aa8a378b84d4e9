"""The tabular MIMIC-IV import (`carescore import mimic`, connectors/feeds/mimic.py) speaks the
same vocabulary as the HL7 path: through the period report it gives the length of stay and
the 30-day readmission cohort that tests/test_mimic_hl7_proof.py computes from the published
definitions with polars over the CSVs (the same functions, written from the standards; none of
them imports the engine). The import moves each patient by whole days to end before it (MIMIC's
own dates are a century ahead, which engine.max_future refuses); whole-day shifts change
neither midnight counts nor calendar-day gaps, so the CSVs' own dates give the expected values.

`carescore import mimic` itself runs as a user runs it (the CLI, a data folder of its own): the
log holds each patient at tests/mimic_hl7.py's dates (that module's own reading of the rule),
windows are closed as the import goes, and time bounds refuse rows as they refuse any feed's."""

from __future__ import annotations

import sqlite3
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml

from engine.config import REPO_ROOT
from engine.definitions import load_catalogue
from engine.eventframe import log_frame
from engine.reports import Reporter
from tests import mimic_hl7 as mh
from tests.conftest import needs_testdata
from tests.test_backfill import command, settings_doc
from tests.test_mimic_hl7_proof import length_of_stay, readmission_cohort

CATALOGUE = load_catalogue(REPO_ROOT / "kpi_defs")


@pytest.fixture(scope="module")
def imported(cli_import: dict[str, Any]) -> dict[str, Any]:
    """The period reports over what `carescore import mimic` stored (its event log)."""
    folder = cli_import["folder"]
    data = mh.Mimic(
        admissions=mh.read(folder, "admissions"),
        transfers=mh.read(folder, "transfers"),
        labevents=pl.DataFrame(),
        patients=mh.read(folder, "patients"),
        shifts=pl.DataFrame(),
        today=date.today(),
    )
    log = cli_import["log"]
    reporter = Reporter(log.filter(pl.col("type").str.starts_with("encounter.")))
    span = (datetime(2000, 1, 1, tzinfo=UTC), log["received_time"].max() + timedelta(days=1))
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


def import_mimic(root: Path, **engine: Any) -> dict[str, Any]:
    """`carescore import mimic` of the demo into a data folder of its own (as a user runs it)."""
    folder = needs_testdata("mimic-iv-demo")
    doc = settings_doc(root / "data")
    doc["engine"].update(engine)
    config = root / "carescore.yaml"
    config.write_text(yaml.safe_dump(doc))
    done = command("import", "mimic", str(folder), "--config", str(config))
    assert done.returncode == 0, done.stderr[-2000:]
    log = log_frame(sorted((root / "data" / "events").glob("events-*.ndjson")))
    return {"folder": folder, "data": root / "data", "stdout": done.stdout, "log": log}


@pytest.fixture(scope="module")
def cli_import(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return import_mimic(tmp_path_factory.mktemp("mimic-import"))


def test_the_import_moves_each_patient_to_end_before_it(cli_import: dict[str, Any]) -> None:
    """tests/mimic_hl7.py's reading of the rule: each patient's last time on day
    1 + subject_id % 24 before the import's date, every time moved by the same whole days."""
    log = cli_import["log"]
    received = log["received_time"].min()
    assert log["received_time"].max() == received  # one import, one arrival time
    assert log["event_time"].max() < received
    expected = mh.load(cli_import["folder"], received.date()).admissions  # type: ignore[union-attr]
    admits = log.filter(pl.col("type") == "encounter.admit").select(
        hadm_id=pl.col("source_id").str.strip_prefix("mimic:adm:").cast(pl.Int64), got=pl.col("event_time")
    )
    joined = admits.join(
        expected.select("hadm_id", want=pl.col("admittime").dt.replace_time_zone("UTC")), on="hadm_id"
    )
    assert joined.height == expected.height > 0  # every admission of the demo
    assert joined.filter(pl.col("got") != pl.col("want")).height == 0
    assert "refused" not in cli_import["stdout"]


def test_the_import_closes_windows_as_it_goes(cli_import: dict[str, Any]) -> None:
    """Before any `carescore run`, the history holds the closed windows of the imported
    years (as live streaming would have closed them), not a snapshot of open panes."""
    db = sqlite3.connect(cli_import["data"] / "history.sqlite")
    try:
        rows = db.execute(
            "SELECT count(*), min(window_end), max(window_end) FROM runs"
            " JOIN series ON series.id = runs.series"
            " WHERE kpi = 'average_length_of_stay' AND facility = 'MIMIC' AND status != 'no_data'"
        ).fetchone()
    finally:
        db.close()
    count, first, last = rows
    log = cli_import["log"]
    assert count > 0
    assert first >= log["event_time"].min().timestamp()
    assert last <= log["received_time"].max().timestamp()


def test_the_imports_time_bounds_refuse_rows_as_dead_letters(
    cli_import: dict[str, Any], tmp_path: Path
) -> None:
    """engine.max_age at five years: every event older than that is a dead letter naming the
    setting, counted in the import's summary; the rest are stored."""
    bounded = import_mimic(tmp_path, max_age="1825d")
    everything = cli_import["log"]
    cutoff = everything["received_time"].min() - timedelta(days=1825)
    expected_refused = everything.filter(pl.col("event_time") < cutoff).height
    assert 0 < expected_refused < everything.height
    assert f"{expected_refused:,} refused for their time" in bounded["stdout"]
    assert bounded["log"].height == everything.height - expected_refused
    assert bounded["log"]["event_time"].min() >= cutoff
    db = sqlite3.connect(bounded["data"] / "deadletters.sqlite")
    try:
        reasons = [r for (r,) in db.execute("SELECT reason FROM dead_letters")]
    finally:
        db.close()
    assert len(reasons) == expected_refused
    assert all("engine.max_age" in r for r in reasons)
