"""Proof on real data: MIMIC-IV demo replayed through carescore (tabular import into the
event log, then the engine) gives the same length of stay, 30-day readmission count and lab
turnaround (median and p90 by priority) as an independent polars computation over the CSVs.
MIMIC shifts dates per patient, so only per-patient quantities are compared."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml

from connectors.feeds.mimic import mimic_events
from engine.config import REPO_ROOT, Settings
from engine.runtime.embedded import EmbeddedRuntime
from tests.conftest import needs_testdata

WINDOW = {"kind": "cumulative", "step": "1d", "grace": "1d"}


def kpi(kid: str, measure: dict[str, Any], aggregate: str) -> dict[str, Any]:
    return {
        "id": kid,
        "name": kid,
        "perspective": "internal_process",
        "description": "MIMIC proof",
        "definition": "see tests/test_mimic_proof.py",
        "unit": "u",
        "direction": "lower_is_better",
        "measure": measure,
        "aggregate": aggregate,
        "window": WINDOW,
    }


def lab_tat(priority: str) -> dict[str, Any]:
    return {
        "kind": "duration",
        "start": {"event": "lab.collect", "where": {"priority": priority}},
        "end": {"event": "lab.result", "where": {"result_status": "final"}},
        "key": "order_id",
        "unit": "minutes",
        "expire_after": "36500d",
    }


@pytest.fixture(scope="module")
def mimic_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = needs_testdata("mimic-iv-demo")
    defs = tmp_path_factory.mktemp("kpi_defs")
    kpis = [
        kpi(
            "mimic_alos",
            {
                "kind": "duration",
                "start": {"event": "encounter.admit"},
                "end": {"event": "encounter.discharge"},
                "key": "encounter_id",
                "attribute_to": "end",
                "unit": "days",
                "expire_after": "36500d",
            },
            "mean",
        ),
        kpi("mimic_readmissions", {"kind": "readmission", "within": "30d"}, "ratio"),
    ]
    for prio in ("stat", "routine"):
        kpis += [
            kpi(f"mimic_tat_{prio}_median", lab_tat(prio), "median"),
            kpi(f"mimic_tat_{prio}_p90", lab_tat(prio), "p90"),
        ]
    (defs / "mimic.yaml").write_text(yaml.safe_dump({"kpis": kpis}, sort_keys=False))
    settings = Settings.model_validate(
        {"data_dir": tmp_path_factory.mktemp("data"), "kpi_defs": defs, "engine": {"fsync": False}}
    )
    runtime = EmbeddedRuntime(settings)
    batch: list[Any] = []
    for event in mimic_events(folder):
        batch.append(event)
        if len(batch) == 5000:
            runtime.ingest_now(batch[0].source_id, batch)
            batch = []
    runtime.ingest_now(batch[0].source_id, batch)
    now = datetime(2300, 1, 1, tzinfo=UTC).timestamp()
    live = {s.kpi: s for s in runtime.engine.live(now) if s.group.unit is None and s.group.department is None}
    return {"folder": folder, "live": live, "runtime": runtime}


def csv(folder: Path, name: str) -> pl.DataFrame:
    return pl.read_csv(folder / "hosp" / f"{name}.csv.gz", try_parse_dates=True, infer_schema_length=200_000)


def test_average_length_of_stay_equals_polars(mimic_run: dict[str, Any]) -> None:
    adm = csv(mimic_run["folder"], "admissions")
    los = adm.select(((pl.col("dischtime") - pl.col("admittime")).dt.total_seconds() / 86400).alias("d"))
    sample = mimic_run["live"]["mimic_alos"]
    assert sample.n == adm.height == 275
    assert sample.value == pytest.approx(los["d"].mean(), rel=1e-12)


def test_thirty_day_readmission_count_equals_polars(mimic_run: dict[str, Any]) -> None:
    adm = csv(mimic_run["folder"], "admissions").sort("subject_id", "admittime")
    index = adm.filter(~pl.col("discharge_location").fill_null("").is_in(["DIED", "ACUTE HOSPITAL"]))
    # for each admission: the latest index discharge of the same patient before it
    readmitted = (
        adm.select("subject_id", "hadm_id", "admittime")
        .sort("admittime")
        .join_asof(
            index.select("subject_id", pl.col("hadm_id").alias("index_hadm"), "dischtime").sort("dischtime"),
            left_on="admittime",
            right_on="dischtime",
            by="subject_id",
            strategy="backward",
            check_sortedness=False,
        )
        .filter(
            pl.col("dischtime").is_not_null()
            & (pl.col("hadm_id") != pl.col("index_hadm"))
            & ((pl.col("admittime") - pl.col("dischtime")).dt.total_seconds() <= 30 * 86400)
        )
    )
    sample = mimic_run["live"]["mimic_readmissions"]
    assert readmitted.height > 0
    assert sample.numerator == readmitted.height
    assert sample.denominator == index.height


@pytest.mark.parametrize("priority", ["STAT", "ROUTINE"])
def test_lab_turnaround_by_priority_equals_polars(mimic_run: dict[str, Any], priority: str) -> None:
    labs = csv(mimic_run["folder"], "labevents").filter(
        (pl.col("priority") == priority) & pl.col("storetime").is_not_null()
    )
    minutes = labs.select(((pl.col("storetime") - pl.col("charttime")).dt.total_seconds() / 60).alias("m"))[
        "m"
    ]
    live = mimic_run["live"]
    median = live[f"mimic_tat_{priority.lower()}_median"]
    p90 = live[f"mimic_tat_{priority.lower()}_p90"]
    assert median.n == p90.n == labs.height
    assert median.value == pytest.approx(minutes.median(), rel=1e-12)
    assert p90.value == pytest.approx(minutes.quantile(0.9, interpolation="linear"), rel=1e-12)


def test_the_replay_went_through_the_event_log(mimic_run: dict[str, Any]) -> None:
    runtime = mimic_run["runtime"]
    assert runtime.log.appended_events == runtime.engine.events_processed > 200_000
    assert REPO_ROOT.exists()
