"""The three walking-skeleton KPIs, computed by the engine from canonical events."""

from __future__ import annotations

import orjson
import pytest

from engine.aggregates import quantile
from engine.config import REPO_ROOT
from engine.core import Engine
from engine.definitions import load_catalogue
from engine.places import Places
from tests.helpers import enc, lab, ts


@pytest.fixture
def engine(places: Places) -> Engine:
    return Engine(load_catalogue(REPO_ROOT / "kpi_defs"), places)


def live(engine: Engine, kpi: str, now: float, unit: str | None = None, department: str | None = None):  # type: ignore[no-untyped-def]
    for s in engine.live(now):
        if s.kpi == kpi and s.group.unit == unit and (department is None or s.group.department == department):
            return s
    return None


def test_stat_tat_p90_over_the_last_hour_per_unit(engine: Engine) -> None:
    tats = [20 + 2 * i for i in range(17)] + [62, 70, 90]  # 20 values: a p90 needs 20
    for i, tat in enumerate(tats):
        engine.process(lab("lab.order", 100 + i - tat, f"o{i}", priority="stat"))
        engine.process(lab("lab.result", 100 + i, f"o{i}", result_status="final"))
    # routine orders and preliminary results do not count
    engine.process(lab("lab.order", 0, "r1", priority="routine"))
    engine.process(lab("lab.result", 100, "r1", result_status="final"))
    engine.process(lab("lab.result", 95, "o7", result_status="preliminary"))
    sample = live(engine, "lab_tat_stat", ts(120), "ICU")
    assert sample is not None
    assert sample.n == 20
    assert sample.value == pytest.approx(quantile([float(t) for t in tats], 0.9))
    assert sample.value == pytest.approx(62.8)  # rank 17.1 of 0..19: 62 + 0.1 x (70 - 62)
    assert sample.status == "warning"  # warning at 60, critical at 75


def test_stat_tat_window_slides_and_min_samples_means_no_data(engine: Engine) -> None:
    for i in range(20):
        engine.process(lab("lab.order", i, f"o{i}", priority="stat"))
        engine.process(lab("lab.result", i + 30, f"o{i}", result_status="final"))
    assert live(engine, "lab_tat_stat", ts(55), "ICU").status == "ok"
    # two hours later the results are out of the 60-minute window
    sample = live(engine, "lab_tat_stat", ts(160), "ICU")
    assert sample.n == 0 and sample.value is None and sample.status == "no_data"
    engine.process(lab("lab.order", 170, "x", priority="stat"))
    engine.process(lab("lab.result", 180, "x", result_status="final"))
    sample = live(engine, "lab_tat_stat", ts(181), "ICU")
    assert sample.n == 1 and sample.status == "no_data"  # below min_samples (20): not a breach


def test_an_overdue_stat_order_is_a_breach_not_a_gap(engine: Engine) -> None:
    for i in range(20):
        engine.process(lab("lab.order", i / 2, f"o{i}", priority="stat"))
    # no results: before the 60-minute timeout there is simply no data yet
    sample = live(engine, "lab_tat_stat", ts(55), "ICU")
    assert sample.overdue == 0 and sample.n == 0 and sample.status == "no_data"
    # past it, each open order counts at its age; with the feed quiet, event time runs on
    # with the wall clock less the 60 s idle timeout, so at 100 min the watermark is 99
    sample = live(engine, "lab_tat_stat", ts(100), "ICU")
    assert sample.overdue == 20 and sample.n == 20
    assert sample.value == pytest.approx(quantile([99.0 - i / 2 for i in range(20)], 0.9))
    assert sample.status == "critical"
    # a result closes it; after expire_after (12 h) an abandoned order is given up
    engine.process(lab("lab.result", 101, "o0", result_status="final"))
    assert live(engine, "lab_tat_stat", ts(102), "ICU").overdue == 19
    assert live(engine, "lab_tat_stat", ts(13 * 60), "ICU").overdue == 0


def test_results_before_orders_still_pair(engine: Engine) -> None:
    for i in range(3):
        engine.process(lab("lab.result", 40 + i, f"o{i}", result_status="final"))
        engine.process(lab("lab.order", i, f"o{i}", priority="stat"))
    sample = live(engine, "lab_tat_stat", ts(50), "ICU")
    assert sample.n == 3 and sample.value == pytest.approx(40.0)


def test_roll_ups_pool_values_rather_than_averaging_units(engine: Engine) -> None:
    for i, (unit, tat) in enumerate(
        [("ICU", 10), ("ICU", 20), ("ED", 30), ("ED", 40), ("ED", 50), ("ED", 60)]
    ):
        engine.process(lab("lab.order", i, f"o{i}", unit=unit, priority="stat"))
        engine.process(lab("lab.result", i + tat, f"o{i}", unit=unit, result_status="final"))
    now = ts(70)
    facility = live(engine, "lab_tat_stat", now, None, None)
    assert facility is not None and facility.group.department is None
    assert facility.n == 6
    assert facility.value == pytest.approx(quantile([10, 20, 30, 40, 50, 60], 0.9))


def test_bed_occupancy_follows_admissions_transfers_and_discharges(engine: Engine) -> None:
    # 4W has 30 staffed beds, ICU 12
    for i in range(6):
        engine.process(enc("encounter.admit", i, f"v{i}", "4W", patient_class="inpatient"))
    engine.process(enc("encounter.transfer", 10, "v0", "ICU"))
    engine.process(enc("encounter.discharge", 20, "v1", "4W"))
    now = ts(30)
    assert live(engine, "bed_occupancy", now, "4W").value == pytest.approx(4 / 30 * 100)
    assert live(engine, "bed_occupancy", now, "ICU").value == pytest.approx(1 / 12 * 100)
    dept = live(engine, "bed_occupancy", now, None, "medicine")
    assert dept.value == pytest.approx(4 / 50 * 100)  # 4W + 3E beds
    hospital = live(engine, "bed_occupancy", now, None, None)
    # inpatient occupancy leaves the ED's 16 trolleys out (AHA, NHS KH03): 78 - 16 = 62 beds
    assert hospital.value == pytest.approx(5 / 62 * 100)
    # cancelling the discharge puts the patient back; cancelling an admission removes it
    engine.process(enc("encounter.cancel_discharge", 25, "v1", "4W"))
    engine.process(enc("encounter.cancel_admit", 26, "v2", "4W"))
    assert live(engine, "bed_occupancy", ts(30), "4W").value == pytest.approx(4 / 30 * 100)


def test_closed_occupancy_window_is_bed_time_weighted(engine: Engine) -> None:
    # one patient for the first half hour of 08:00-09:00, two for the second half
    engine.process(enc("encounter.admit", 0, "a", "4W", patient_class="inpatient"))
    engine.process(enc("encounter.admit", 30, "b", "4W", patient_class="inpatient"))
    engine.process(enc("encounter.admit", 75, "c", "4W", patient_class="inpatient"))
    closed = [
        s
        for s in engine.windows(engine.advance(ts(200)))
        if s.kpi == "bed_occupancy" and s.group.unit == "4W"
    ]
    first = next(s for s in closed if s.window.start.hour == 8)
    assert first.final
    assert first.numerator == pytest.approx((1 * 30 + 2 * 30) * 60)
    assert first.denominator == pytest.approx(30 * 3600)
    assert first.value == pytest.approx(1.5 / 30 * 100)


def test_length_of_stay_counts_inpatients_for_the_discharging_unit(engine: Engine) -> None:
    days = 24 * 60
    stays = [(0, 2 * days, "4W"), (60, 60 + 3 * days, "4W"), (120, 120 + 4 * days, "3E")]
    for i, (start, end, unit) in enumerate(stays):
        engine.process(enc("encounter.admit", start, f"v{i}", "ICU", patient_class="inpatient"))
        engine.process(enc("encounter.discharge", end, f"v{i}", unit))
    engine.process(enc("encounter.register", 0, "ed1", "ED", patient_class="emergency"))
    engine.process(enc("encounter.discharge", 300, "ed1", "ED"))
    now = ts(5 * days)
    four_west = live(engine, "average_length_of_stay", now, "4W")
    assert four_west.n == 2 and four_west.value == pytest.approx(2.5)
    assert (
        live(engine, "average_length_of_stay", now, "ED") is None
        or live(engine, "average_length_of_stay", now, "ED").n == 0
    )
    hospital = live(engine, "average_length_of_stay", now, None, None)
    assert hospital.n == 3 and hospital.value == pytest.approx(3.0)


def test_snapshot_restores_identical_state(engine: Engine, places: Places) -> None:
    for i in range(5):
        engine.process(lab("lab.order", i, f"o{i}", priority="stat"))
        if i < 4:
            engine.process(lab("lab.result", i + 20 + i, f"o{i}", result_status="final"))
        engine.process(enc("encounter.admit", i, f"v{i}", "4W", patient_class="inpatient"))
    engine.advance(ts(30))
    snap = orjson.loads(orjson.dumps(engine.snapshot()))
    other = Engine(load_catalogue(REPO_ROOT / "kpi_defs"), places)
    other.restore(snap)
    now = ts(40)
    assert [s.model_dump() for s in other.live(now)] == [s.model_dump() for s in engine.live(now)]
    engine.process(lab("lab.result", 35, "o4", result_status="final"))
    other.process(lab("lab.result", 35, "o4", result_status="final"))
    assert [s.model_dump() for s in other.advance(ts(200))] == [
        s.model_dump() for s in engine.advance(ts(200))
    ]
