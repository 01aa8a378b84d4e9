"""Tabular import of the MIMIC-IV (demo) hospital module as canonical events.

What becomes what (codes translated into engine/vocabulary.py's words):
- admissions.csv: encounter.admit at admittime (class observation for the EU/DIRECT/
  AMBULATORY OBSERVATION admission types, else inpatient) and encounter.discharge at
  dischtime, for the care unit the patient was admitted to / left from (transfers.csv);
  discharge_location -> NUBC discharge status (DISPOSITIONS; a deathtime is 20, expired).
- transfers.csv: eventtype 'transfer' -> encounter.transfer into careunit at intime; 'ED'
  rows of an admission -> encounter.register (emergency) at intime.
- labevents.csv: lab.order and lab.collect at charttime (MIMIC keeps no order time) and,
  when stored, lab.result (final) at storetime, one order per labevent_id; priority
  STAT/ROUTINE -> stat/routine, empty -> none. Lab events have no unit (hospital level).

MIMIC shifts dates per patient (into 2110-2201), so only per-patient quantities (length
of stay, readmissions, lab turnaround) are meaningful; hospital-wide windows are not. Those
dates are a century ahead, which engine.max_future refuses, so each patient is moved again
here by a whole number of days: the patient's last recorded time (of any admission,
transfer or lab column) falls on day 1 + subject_id % 24 before the import's UTC date, so
the import ends within the last 25 days and nothing is in the future. Whole days of 24 h
keep every interval and every UTC calendar-date difference (midnight counts and the
readmission rule's days in UTC; in a site zone with daylight saving, a time within an hour
of midnight can change local date).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import polars as pl

from engine.events import EncounterEvent, EventBase, LabEvent

FACILITY = "MIMIC"
OBSERVATION_TYPES = frozenset({"EU OBSERVATION", "DIRECT OBSERVATION", "AMBULATORY OBSERVATION"})
"""admission_type values that are observation (outpatient) stays; "OBSERVATION ADMIT" is an
inpatient admission (its stays average eight days and reach the ICU)."""
DISPOSITIONS = {  # discharge_location -> NUBC patient discharge status (engine/vocabulary.py)
    "HOME": "01",
    "HOME HEALTH CARE": "06",
    "SKILLED NURSING FACILITY": "03",
    "REHAB": "62",
    "CHRONIC/LONG TERM ACUTE CARE": "63",
    "PSYCH FACILITY": "65",
    "HOSPICE": "50",
    "ACUTE HOSPITAL": "02",
    "AGAINST ADVICE": "07",
    "DIED": "20",
    "OTHER FACILITY": "70",
}
PRIORITIES = {"STAT": "stat", "ROUTINE": "routine"}


TIME_FORMATS = ("%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%d %H:%M", "%Y-%m-%d")
"""MIMIC-IV writes `2180-05-06 22:23:00`; other exports a T for the space, fractions of a
second, no seconds or a date alone (midnight)."""
TIME_SHAPE = r"^\d{4}-\d{2}-\d{2}(?:[ T]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?)?$"
"""What TIME_FORMATS may read, digit by digit: the formats alone take `06:5` for 06:05 and a
three-digit year, which would be read wrong, not refused."""
ADMISSION_TIMES = ("admittime", "dischtime", "deathtime", "edregtime", "edouttime")
TRANSFER_TIMES = ("intime", "outtime")
LAB_TIMES = ("charttime", "storetime")
TABLES = {  # per table: the columns it must have, the times no row may leave empty, and the
    # columns an extract may leave out (read as empty: no deaths, no ED visits, no results)
    "admissions": (
        ("subject_id", "hadm_id", "admittime", "dischtime", "admission_type", "discharge_location"),
        ("admittime",),
        ("deathtime", "edregtime", "edouttime"),
    ),
    "transfers": (
        ("subject_id", "hadm_id", "transfer_id", "eventtype", "careunit", "intime"),
        ("intime",),
        ("outtime",),
    ),
    "labevents": (
        ("labevent_id", "subject_id", "hadm_id", "itemid", "charttime"),
        ("charttime",),
        ("storetime", "priority"),
    ),
}


class MimicExtractError(ValueError):
    """A table the import cannot read as MIMIC-IV: the file, the column and why."""


def _read(folder: Path, name: str, times: tuple[str, ...]) -> pl.DataFrame:
    """A table, its time columns read as times even when empty (an extract without deaths),
    the optional columns it lacks added empty; a missing or unreadable file, a needed column
    missing, a needed time left empty or a value that is not a time (_parse_times) is a
    MimicExtractError naming the file (and the column)."""
    path = folder / "hosp" / f"{name}.csv.gz"
    try:
        frame = pl.read_csv(
            path,
            infer_schema_length=200_000,
            schema_overrides={c: pl.String for c in times},
        )
    except FileNotFoundError as exc:
        raise MimicExtractError(f"{path}: no such file (carescore import mimic needs it)") from exc
    except pl.exceptions.PolarsError as exc:
        raise MimicExtractError(f"{path}: not readable as CSV: {str(exc).splitlines()[0]}") from exc
    columns, filled, optional = TABLES[name]
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise MimicExtractError(f"{path}: no column {', '.join(missing)} (carescore import mimic needs it)")
    frame = _parse_times(path, frame, [c for c in times if c in frame.columns])
    for column in filled:
        empty = frame.filter(pl.col(column).is_null()).height
        if empty:
            raise MimicExtractError(
                f"{path}: column {column} is empty in {empty:,} row{'s' if empty > 1 else ''} "
                "(every row needs a time)"
            )
    return frame.with_columns(
        [
            pl.lit(None, pl.Datetime("us") if c in times else pl.String).alias(c)
            for c in optional
            if c not in frame.columns
        ]
    )


def _parse_times(path: Path, frame: pl.DataFrame, times: list[str]) -> pl.DataFrame:
    """The time columns as times (TIME_FORMATS); a value that is none of them is a
    MimicExtractError naming the file, the column, the row (after the header) and the value."""

    def parsed(column: str) -> pl.Expr:
        text = pl.col(column).str.strip_chars()
        text = pl.when(text.str.contains(TIME_SHAPE)).then(text.str.replace("T", " ", literal=True))
        tries = [text.str.to_datetime(f, time_unit="us", strict=False) for f in TIME_FORMATS]
        return pl.coalesce(tries).alias(column)

    result = frame.with_columns([parsed(c) for c in times])
    for column in times:
        bad = frame.with_row_index("row", offset=1).filter(
            pl.col(column).is_not_null() & result[column].is_null()
        )
        if bad.height:
            row, value = bad.row(0, named=True)["row"], bad[column][0]
            raise MimicExtractError(
                f"{path}: column {column}: {bad.height:,} "
                f"{'value is not a time' if bad.height == 1 else 'values are not times'} "
                "(YYYY-MM-DD HH:MM:SS, or with a T, a fraction, no seconds or a date alone), "
                f"the first in data row {row}: {value!r}"
            )
    return result


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC)


def _shifted(
    admissions: pl.DataFrame, transfers: pl.DataFrame, labs: pl.DataFrame, today: date
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """The three tables with each patient's times moved by whole days (the module docstring)."""
    times = [admissions.select("subject_id", pl.col(c).alias("t")) for c in ADMISSION_TIMES]
    times += [transfers.select("subject_id", pl.col(c).alias("t")) for c in TRANSFER_TIMES]
    times += [labs.select("subject_id", pl.col(c).alias("t")) for c in LAB_TIMES]
    last = pl.concat(times).drop_nulls().group_by("subject_id").agg(pl.col("t").max().alias("last"))
    days = last.select(
        "subject_id",
        days=(pl.lit(today) - pl.duration(days=1 + pl.col("subject_id") % 24) - pl.col("last").dt.date())
        .dt.total_days()
        .cast(pl.Int64),
    )

    def moved(frame: pl.DataFrame, columns: tuple[str, ...]) -> pl.DataFrame:
        frame = frame.join(days, on="subject_id", how="left", maintain_order="left")
        return frame.with_columns(
            [(pl.col(c) + pl.duration(days=pl.col("days").fill_null(0))).alias(c) for c in columns]
        ).drop("days")

    return moved(admissions, ADMISSION_TIMES), moved(transfers, TRANSFER_TIMES), moved(labs, LAB_TIMES)


def mimic_events(folder: Path, received: datetime | None = None) -> Iterator[EventBase]:
    """Every event, in event-time order (a replay sends them in the order they happened),
    each patient moved to end within the 25 days before `received` (default now)."""
    received = received or datetime.now(UTC)
    admissions, transfers, labs = _shifted(
        _read(folder, "admissions", ADMISSION_TIMES),
        _read(folder, "transfers", TRANSFER_TIMES),
        _read(folder, "labevents", LAB_TIMES),
        received.date(),
    )
    transfers = transfers.filter(pl.col("hadm_id").is_not_null())
    first_unit = (
        transfers.filter(pl.col("eventtype") == "admit").group_by("hadm_id").agg(pl.col("careunit").first())
    )
    last_unit = (
        transfers.filter(pl.col("careunit").is_not_null())
        .sort("intime")
        .group_by("hadm_id")
        .agg(pl.col("careunit").last().alias("last_unit"))
    )
    stays = admissions.join(first_unit, on="hadm_id", how="left", maintain_order="left").join(
        last_unit, on="hadm_id", how="left", maintain_order="left"
    )  # row order decides ties in time, and so each batch and its key: kept as in the file

    def place(unit: str | None) -> dict[str, Any]:
        return {"facility": FACILITY, "department": None, "unit": unit}

    events: list[tuple[datetime, int, EventBase]] = []
    seq = 0

    def add(when: datetime, event: EventBase) -> None:
        nonlocal seq
        events.append((when, seq, event))
        seq += 1

    for row in stays.iter_rows(named=True):
        hadm, subject = str(row["hadm_id"]), str(row["subject_id"])
        common: dict[str, Any] = {
            "received_time": received,
            "source": "feed",
            "encounter_id": hadm,
            "patient_id": subject,
            "patient_class": "observation" if row["admission_type"] in OBSERVATION_TYPES else "inpatient",
        }
        admit = _utc(row["admittime"])
        add(
            admit,
            EncounterEvent(
                type="encounter.admit",
                event_time=admit,
                source_id=f"mimic:adm:{hadm}",
                admit_time=admit,
                **common,
                **place(row["careunit"]),
            ),
        )
        if row["dischtime"] is None:  # still in hospital when the extract was taken
            continue
        discharge = _utc(row["dischtime"])
        disposition = DISPOSITIONS.get(row["discharge_location"] or "")  # blank: not known
        if row["deathtime"] is not None:
            disposition = "20"
        add(
            discharge,
            EncounterEvent(
                type="encounter.discharge",
                event_time=discharge,
                source_id=f"mimic:dis:{hadm}",
                discharge_time=discharge,
                disposition=disposition,
                **common,
                **place(row["last_unit"]),
            ),
        )
    for row in transfers.filter(pl.col("eventtype").is_in(["transfer", "ED"])).iter_rows(named=True):
        when = _utc(row["intime"])
        kind = "encounter.transfer" if row["eventtype"] == "transfer" else "encounter.register"
        add(
            when,
            EncounterEvent(
                type=kind,  # type: ignore[arg-type]
                event_time=when,
                received_time=received,
                source="feed",
                source_id=f"mimic:tr:{row['transfer_id']}",
                encounter_id=str(row["hadm_id"]),
                patient_id=str(row["subject_id"]),
                patient_class=None if kind == "encounter.transfer" else "emergency",
                **place(row["careunit"]),
            ),
        )
    for row in labs.select(
        "labevent_id", "subject_id", "hadm_id", "itemid", "charttime", "storetime", "priority"
    ).iter_rows(named=True):
        order = str(row["labevent_id"])
        common = {
            "received_time": received,
            "source": "feed",
            "order_id": order,
            "patient_id": str(row["subject_id"]),
            "encounter_id": str(row["hadm_id"]) if row["hadm_id"] is not None else None,
            "priority": PRIORITIES.get(row["priority"] or ""),
            "test_code": str(row["itemid"]),
            **place(None),
        }
        collected = _utc(row["charttime"])
        # MIMIC keeps no order time: the order is taken as placed at collection
        add(
            collected,
            LabEvent(type="lab.order", event_time=collected, source_id=f"mimic:lo:{order}", **common),
        )
        add(
            collected,
            LabEvent(type="lab.collect", event_time=collected, source_id=f"mimic:lc:{order}", **common),
        )
        if row["storetime"] is not None:
            stored = _utc(row["storetime"])
            add(
                stored,
                LabEvent(
                    type="lab.result",
                    event_time=stored,
                    source_id=f"mimic:lr:{order}",
                    result_status="final",
                    **common,
                ),
            )
    # at the same minute a discharge comes before an admission: the patient leaves, then returns
    events.sort(key=lambda e: (e[0], e[2].type != "encounter.discharge", e[1]))
    for _, _, event in events:
        yield event
