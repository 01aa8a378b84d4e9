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

import gzip
import re
import signal
import sqlite3
import subprocess
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml

from connectors.feeds.mimic import mimic_events
from engine.config import REPO_ROOT
from engine.definitions import load_catalogue
from engine.eventframe import log_frame
from engine.reports import Reporter
from tests import mimic_hl7 as mh
from tests.conftest import needs_testdata
from tests.test_backfill import carescore, command, settings_doc, user_env
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
    return {"folder": folder, "data": root / "data", "stdout": done.stdout, "stderr": done.stderr, "log": log}


@pytest.fixture(scope="module")
def cli_import(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return import_mimic(tmp_path_factory.mktemp("mimic-import"))


def test_the_import_moves_each_patient_to_end_before_it(cli_import: dict[str, Any]) -> None:
    """Every event at its CSV time plus its patient's days, those of tests/mimic_hl7.py's own
    reading of the rule (last time on day 1 + subject_id % 24 before the import's date)."""
    log = cli_import["log"]
    received = log["received_time"].min()
    assert log["received_time"].max() == received  # one import, one arrival time
    assert log["event_time"].max() < received
    folder = cli_import["folder"]
    days = mh.load(folder, received.date()).shifts
    adm, tr, lab = (mh.read(folder, name) for name in ("admissions", "transfers", "labevents"))

    def rows(frame: pl.DataFrame, prefix: str, key: str, column: str) -> pl.DataFrame:
        return frame.select(
            source_id=pl.lit(prefix) + pl.col(key).cast(pl.String),
            subject_id=pl.col("subject_id"),
            t=pl.col(column).cast(pl.Datetime("us")),
        )

    moves = tr.filter(pl.col("eventtype").is_in(["transfer", "ED"]) & pl.col("hadm_id").is_not_null())
    original = pl.concat(
        [
            rows(adm, "mimic:adm:", "hadm_id", "admittime"),
            rows(adm, "mimic:dis:", "hadm_id", "dischtime"),
            rows(moves, "mimic:tr:", "transfer_id", "intime"),  # of an admission
            rows(lab, "mimic:lo:", "labevent_id", "charttime"),
            rows(lab, "mimic:lc:", "labevent_id", "charttime"),
            rows(lab.filter(pl.col("storetime").is_not_null()), "mimic:lr:", "labevent_id", "storetime"),
        ]
    ).filter(pl.col("t").is_not_null())
    want = original.join(days, on="subject_id").select(
        "source_id", want=(pl.col("t") + pl.duration(days=pl.col("days"))).dt.replace_time_zone("UTC")
    )
    got = log.select("source_id", got=pl.col("event_time").cast(pl.Datetime("us", "UTC")))
    joined = got.join(want, on="source_id", how="full", coalesce=True)
    assert joined.height == log.height > 300_000  # every event stored came from one CSV time
    assert joined.filter(pl.col("got").is_null() | pl.col("want").is_null()).height == 0
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


def test_the_imports_time_bounds_refuse_rows_and_keep_its_batches(
    cli_import: dict[str, Any], tmp_path: Path
) -> None:
    """engine.max_age at five years: every event older than that, counted from the start of the
    import's UTC day, is refused, shown and counted in the import's summary, and the rest are
    stored. The same import run again finds every batch already there, also the first of
    323,325 events' (more than the snapshot keeps event keys for), so it stores nothing twice."""
    bounded = import_mimic(tmp_path, max_age="1825d")
    log = bounded["log"]
    received = log["received_time"].min()
    day = datetime(received.year, received.month, received.day, tzinfo=UTC)
    everything = cli_import["log"]
    # the same rows as the unbounded import, moved by the whole days between the two imports
    moved = timedelta(days=(received.date() - everything["received_time"].min().date()).days)
    older = everything.filter(pl.col("event_time") + moved < day - timedelta(days=1825))
    assert 0 < older.height < everything.height
    assert f"{older.height:,} refused for their time" in bounded["stdout"]
    assert set(log["source_id"]) == set(everything["source_id"]) - set(older["source_id"])
    shown = [line for line in bounded["stderr"].splitlines() if line.startswith("refused mimic:")]
    assert len(shown) == 20 and all("engine.max_age" in line for line in shown)
    again = import_mimic(tmp_path, max_age="1825d")  # the same data folder
    assert again["stdout"].startswith("done: 0 events stored, ")
    assert again["log"].height == log.height


def kill_inside_a_batch(folder: Path, config: Path, data: Path) -> bool:
    """`carescore import mimic`, SIGKILLed once the log has grown 5 MB at a moment its newest
    segment does not end with a batch's end (a write under way); True if the log it leaves
    ends inside a batch (the write was still under way when the signal came)."""

    def newest() -> tuple[Path | None, int]:
        segments = sorted((data / "events").glob("events-*.ndjson"))
        total = sum(p.stat().st_size for p in segments)
        return (segments[-1] if segments else None), total

    def tail(segment: Path) -> bytes:
        with open(segment, "rb") as fh:
            fh.seek(max(0, segment.stat().st_size - 3))
            return fh.read()

    start = newest()[1]
    proc = subprocess.Popen(
        carescore("import", "mimic", str(folder), "--config", str(config)),
        cwd=REPO_ROOT,
        env=user_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while proc.poll() is None:
            segment, size = newest()
            if segment is not None and size > start + 5_000_000 and tail(segment) not in (b"", b"  \n"):
                break
            time.sleep(0.0005)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    segment = newest()[0]
    return proc.returncode == -signal.SIGKILL and segment is not None and tail(segment) not in (b"", b"  \n")


def test_an_import_killed_inside_a_batch_and_run_again_stores_each_event_once(
    cli_import: dict[str, Any], tmp_path: Path
) -> None:
    """`carescore import mimic` SIGKILLed while it writes a batch (tried again in a fresh data
    folder until a kill lands inside one; at most six times), then run again into the same data folder: the
    log holds every event of the uninterrupted import exactly once (its batches already stored
    are duplicates, the one the kill cut is cut back at the start and stored whole)."""
    folder = needs_testdata("mimic-iv-demo")
    for tries in range(1, 7):  # a fresh data folder each time: the import has the log to write
        data = tmp_path / f"try-{tries}"
        config = tmp_path / f"carescore-{tries}.yaml"
        config.write_text(yaml.safe_dump(settings_doc(data)))
        if kill_inside_a_batch(folder, config, data):
            break
    else:
        raise AssertionError("no kill in six landed inside a batch's write")
    again = command("import", "mimic", str(folder), "--config", str(config))
    assert again.returncode == 0, again.stderr[-2000:]
    log = log_frame(sorted((data / "events").glob("events-*.ndjson")))
    assert log["source_id"].n_unique() == log.height
    assert set(log["source_id"]) == set(cli_import["log"]["source_id"])


def test_an_import_that_fills_the_disk_stops_cleanly_and_run_again_stores_each_event_once(
    cli_import: dict[str, Any], small_disk: Path, tmp_path: Path
) -> None:
    """`carescore import mimic` into a data folder on a 48 MB filesystem (the demo's log alone
    is about 160 MB): the write that finds the disk full is cut back, the import stops with
    exit status 1 and says what to do (not a traceback). With the filesystem grown to 400 MB,
    the same import stores the rest: the log holds every event of the uninterrupted import
    exactly once."""
    folder = needs_testdata("mimic-iv-demo")
    config = tmp_path / "carescore.yaml"
    config.write_text(yaml.safe_dump(settings_doc(small_disk / "data")))
    full = command("import", "mimic", str(folder), "--config", str(config))
    assert full.returncode == 1, full.stderr[-2000:]
    assert "No space left on device" in full.stderr
    assert "run the same import again" in full.stderr
    assert "Traceback" not in full.stderr
    # no snapshot: the next start replays the batches since the last one, as after a kill (the
    # windows whose history write failed are closed and written again)
    assert not list((small_disk / "data").glob("snapshot*"))
    grow = ["mount", "-o", "remount,size=400m", str(small_disk)]
    grown = subprocess.run(grow, capture_output=True, text=True)
    assert grown.returncode == 0, grown.stderr
    again = command("import", "mimic", str(folder), "--config", str(config))
    assert again.returncode == 0, again.stderr[-2000:]
    done = re.search(r"done: ([\d,]+) events stored, ([\d,]+) already there", again.stdout)
    assert done is not None, again.stdout[-500:]
    stored, there = (int(n.replace(",", "")) for n in done.groups())
    assert 0 < stored < cli_import["log"].height  # the first run's batches were kept
    assert stored + there == cli_import["log"].height
    log = log_frame(sorted((small_disk / "data" / "events").glob("events-*.ndjson")))
    assert log["source_id"].n_unique() == log.height
    assert set(log["source_id"]) == set(cli_import["log"]["source_id"])


ADMISSIONS = (
    "subject_id,hadm_id,admittime,dischtime,deathtime,admission_type,discharge_location,edregtime,edouttime\n"
    "10,100,2150-01-01 08:00:00,2150-01-03 10:00:00,,URGENT,HOME,,\n"
)


def extract(root: Path, labs: str, admissions: str = ADMISSIONS) -> Path:
    """A hand-made MIMIC extract: subject 10's one admission (its last time the discharge at
    2150-01-03 10:00) and one transfer, with these lab rows (`labs`: the CSV with its header)."""
    hosp = root / "hosp"
    hosp.mkdir(parents=True)

    def table(name: str, text: str) -> None:
        (hosp / f"{name}.csv.gz").write_bytes(gzip.compress(text.encode()))

    table("admissions", admissions)
    table(
        "transfers",
        "subject_id,hadm_id,transfer_id,eventtype,careunit,intime,outtime\n"
        "10,100,1,admit,Medicine,2150-01-01 08:00:00,2150-01-03 10:00:00\n",
    )
    table("labevents", labs)
    return root


def import_extract(root: Path, folder: Path, **engine: Any) -> tuple[Any, pl.DataFrame | None]:
    """`carescore import mimic` of a hand-made extract into a data folder of its own."""
    doc = settings_doc(root / "data")
    doc["engine"].update(engine)
    config = root / "carescore.yaml"
    config.write_text(yaml.safe_dump(doc))
    done = command("import", "mimic", str(folder), "--config", str(config))
    segments = sorted((root / "data" / "events").glob("events-*.ndjson"))
    return done, log_frame(segments) if segments else None


def test_max_age_counts_from_the_start_of_the_imports_day_not_its_hour(tmp_path: Path) -> None:
    """Subject 10's discharge (2150-01-03) moves to day 1 + 10 % 24 = 11 before the import's
    date D, so every time moves by the days from 2150-01-14 to D. With max_age 1825 days the
    limit is D 00:00 UTC - 1825 days, in the extract's own times 2150-01-14 00:00 - 1825 days:
    2145-01-14 to 2150-01-14 is 5 * 365 + 1 days (2148-02-29), so the limit is 2145-01-15 00:00.
    A lab collected a minute before it is refused, one a minute after is kept, whatever the
    hour of the run. Against the clock, the second was refused at any hour after 00:01 UTC, and
    a row refused in the evening but kept in the morning gave the same import other batch keys
    (stored twice when run again)."""
    limit = datetime(2150, 1, 14) - timedelta(days=1825)
    assert limit == datetime(2145, 1, 15)  # the hand count above
    before, after = limit - timedelta(minutes=1), limit + timedelta(minutes=1)
    labs = (
        "labevent_id,subject_id,hadm_id,itemid,charttime,storetime,priority\n"
        f"1,10,,50912,{before:%Y-%m-%d %H:%M:%S},,ROUTINE\n"
        f"2,10,,50912,{after:%Y-%m-%d %H:%M:%S},,ROUTINE\n"
    )
    done, log = import_extract(tmp_path, extract(tmp_path / "extract", labs), max_age="1825d")
    assert done.returncode == 0, done.stderr[-2000:]
    assert log is not None
    assert sorted(log["source_id"]) == ["mimic:adm:100", "mimic:dis:100", "mimic:lc:2", "mimic:lo:2"]
    assert "2 refused for their time" in done.stdout


def test_an_extract_without_the_optional_columns_imports(tmp_path: Path) -> None:
    """No death or ED columns in admissions, no storetime or priority in labevents (an export
    that leaves out what it does not have): read as empty. Before, the shift selected every
    time column and the import stopped on polars' ColumnNotFoundError. The lab collected at
    2150-01-02 06:00 moves with the discharge by 2026-11-23 - 2150-01-03 days (day 11 before
    2026-12-04): 2026-11-22 06:00; no storetime, so no result."""
    admissions = (
        "subject_id,hadm_id,admittime,dischtime,admission_type,discharge_location\n"
        "10,100,2150-01-01 08:00:00,2150-01-03 10:00:00,URGENT,HOME\n"
    )
    labs = "labevent_id,subject_id,hadm_id,itemid,charttime\n7,10,100,50912,2150-01-02 06:00:00\n"
    folder = extract(tmp_path, labs, admissions)
    events = {e.source_id: e for e in mimic_events(folder, datetime(2026, 12, 4, 3, tzinfo=UTC))}
    assert {k: e.event_time for k, e in events.items()} == {
        "mimic:adm:100": datetime(2026, 11, 21, 8, tzinfo=UTC),
        "mimic:dis:100": datetime(2026, 11, 23, 10, tzinfo=UTC),
        "mimic:lo:7": datetime(2026, 11, 22, 6, tzinfo=UTC),
        "mimic:lc:7": datetime(2026, 11, 22, 6, tzinfo=UTC),
    }
    assert events["mimic:dis:100"].disposition == "01"  # HOME, no deathtime
    assert events["mimic:lo:7"].priority is None


def test_an_extract_without_a_needed_column_is_refused_naming_it(tmp_path: Path) -> None:
    """labevents without charttime: the import stops before storing anything, exit status 2,
    and says which file lacks which column (not a traceback)."""
    labs = "labevent_id,subject_id,hadm_id,itemid,storetime\n7,10,100,50912,2150-01-02 07:30:00\n"
    done, log = import_extract(tmp_path, extract(tmp_path / "extract", labs))
    assert done.returncode == 2
    assert "labevents.csv.gz: no column charttime" in done.stderr
    assert "Traceback" not in done.stderr
    assert log is None or log.height == 0


def test_a_time_that_is_not_one_is_refused_naming_its_row(tmp_path: Path) -> None:
    """A lab whose charttime is a day-first date (02/01/2150 06:00) in the second data row, and
    one with a one-digit hour and minute in the third: the import stops before storing
    anything, exit status 2, naming the file, the column, the first row and its value (not
    polars' traceback)."""
    labs = (
        "labevent_id,subject_id,hadm_id,itemid,charttime\n"
        "7,10,100,50912,2150-01-02 06:00:00\n"
        "8,10,100,50912,02/01/2150 06:00\n"
        "9,10,100,50912,2150-01-02 6:5\n"  # polars' own format reads 06:05: a guess, refused
    )
    done, log = import_extract(tmp_path, extract(tmp_path / "extract", labs))
    assert done.returncode == 2, done.stderr
    assert "labevents.csv.gz: column charttime: 2 values are not times" in done.stderr
    assert "data row 2: '02/01/2150 06:00'" in done.stderr
    assert "Traceback" not in done.stderr
    assert log is None or log.height == 0


def test_times_written_as_other_exports_write_them_import(tmp_path: Path) -> None:
    """Times with a T between date and time and a fraction of a second, without seconds (and
    spaces around), or a date alone (midnight) read as MIMIC-IV's own form does. Subject 10's
    last time is still the discharge, 2150-01-03 10:00, moved to 2026-11-23 (day 1 + 10 % 24
    = 11 before 2026-12-04): every time moves to the same clock time 2026-11-23 - 2150-01-03
    days later, so 2150-01-02 is 2026-11-22."""
    labs = (
        "labevent_id,subject_id,hadm_id,itemid,charttime,storetime\n"
        "7,10,100,50912,2150-01-02T06:00:00.250,2150-01-02 07:30\n"
        "8,10,100,50912,2150-01-02,\n"
        '9,10,100,50912," 2150-01-02 05:00 ",\n'
    )
    folder = extract(tmp_path / "extract", labs)
    events = {e.source_id: e.event_time for e in mimic_events(folder, datetime(2026, 12, 4, 3, tzinfo=UTC))}
    six = datetime(2026, 11, 22, 6, 0, 0, 250_000, tzinfo=UTC)
    assert events == {
        "mimic:adm:100": datetime(2026, 11, 21, 8, tzinfo=UTC),
        "mimic:dis:100": datetime(2026, 11, 23, 10, tzinfo=UTC),
        "mimic:lo:7": six,
        "mimic:lc:7": six,
        "mimic:lr:7": datetime(2026, 11, 22, 7, 30, tzinfo=UTC),
        "mimic:lo:8": datetime(2026, 11, 22, tzinfo=UTC),
        "mimic:lc:8": datetime(2026, 11, 22, tzinfo=UTC),
        "mimic:lo:9": datetime(2026, 11, 22, 5, tzinfo=UTC),
        "mimic:lc:9": datetime(2026, 11, 22, 5, tzinfo=UTC),
    }


def test_an_extract_without_a_table_is_refused_naming_it(tmp_path: Path) -> None:
    folder = extract(tmp_path / "extract", "labevent_id,subject_id,hadm_id,itemid,charttime\n")
    (folder / "hosp" / "transfers.csv.gz").unlink()
    done, log = import_extract(tmp_path, folder)
    assert done.returncode == 2, done.stderr
    assert "transfers.csv.gz: no such file" in done.stderr
    assert "Traceback" not in done.stderr
    assert log is None or log.height == 0


def test_an_extract_without_deaths_or_ed_visits_imports(tmp_path: Path) -> None:
    """A hand-made extract: one patient (subject 10), one admission with its death and ED
    columns empty throughout, one transfer, one lab test. The patient's last time, the
    discharge at 2150-01-03 10:00, moves to day 1 + 10 % 24 = 11 before 2026-12-04, the
    2026-11-23: every time moves by the same 2026-11-23 - 2150-01-03 days."""
    hosp = tmp_path / "hosp"
    hosp.mkdir()

    def table(name: str, text: str) -> None:
        (hosp / f"{name}.csv.gz").write_bytes(gzip.compress(text.encode()))

    table(
        "admissions",
        "subject_id,hadm_id,admittime,dischtime,deathtime,admission_type,discharge_location,edregtime,edouttime\n"
        "10,100,2150-01-01 08:00:00,2150-01-03 10:00:00,,URGENT,HOME,,\n",
    )
    table(
        "transfers",
        "subject_id,hadm_id,transfer_id,eventtype,careunit,intime,outtime\n"
        "10,100,1,admit,Medicine,2150-01-01 08:00:00,2150-01-02 09:00:00\n"
        "10,100,2,transfer,Cardiology,2150-01-02 09:00:00,2150-01-03 10:00:00\n",
    )
    table(
        "labevents",
        "labevent_id,subject_id,hadm_id,itemid,charttime,storetime,priority\n"
        "7,10,100,50912,2150-01-02 06:00:00,2150-01-02 07:30:00,STAT\n",
    )
    events = {e.source_id: e.event_time for e in mimic_events(tmp_path, datetime(2026, 12, 4, 3, tzinfo=UTC))}
    assert events == {
        "mimic:adm:100": datetime(2026, 11, 21, 8, tzinfo=UTC),
        "mimic:dis:100": datetime(2026, 11, 23, 10, tzinfo=UTC),
        "mimic:tr:2": datetime(2026, 11, 22, 9, tzinfo=UTC),
        "mimic:lo:7": datetime(2026, 11, 22, 6, tzinfo=UTC),
        "mimic:lc:7": datetime(2026, 11, 22, 6, tzinfo=UTC),
        "mimic:lr:7": datetime(2026, 11, 22, 7, 30, tzinfo=UTC),
    }
