"""Operator semantics beyond the skeleton: ratios, levels, cohorts, windows, watermarks."""

from __future__ import annotations

import gc
from datetime import UTC, datetime
from typing import Any

import pytest

from engine.config import REPO_ROOT
from engine.core import Engine
from engine.definitions import Catalogue, KpiDefinition, load_catalogue
from engine.events import EVENT_TYPES, EventBase
from engine.places import Places
from tests.helpers import T0, UNITS, at, enc, lab, ts

DAY = 24 * 60


@pytest.fixture(scope="module")
def shipped() -> Catalogue:
    return load_catalogue(REPO_ROOT / "kpi_defs")


@pytest.fixture
def engine(shipped: Catalogue, places: Places) -> Engine:
    return Engine(shipped, places)


def ev(kind: str, minutes: float, unit: str | None = "4W", **fields: Any) -> EventBase:
    return EVENT_TYPES[kind].model_validate(
        {
            "type": kind,
            "event_time": at(minutes),
            "received_time": fields.pop("received", at(minutes)),
            "source": fields.pop("source", "feed"),
            "source_id": f"x{minutes}{kind}{sorted(fields.items())}",
            "facility": "DEMO",
            "department": UNITS.get(unit or ""),
            "unit": unit,
            **fields,
        }
    )


def live_of(engine: Engine, kpi: str, minutes: float, unit: str | None = "4W") -> Any:
    for s in engine.live(ts(minutes)):
        if s.kpi == kpi and s.group.unit == unit and (unit is not None or s.group.department is None):
            return s
    return None


def test_kpis_that_share_a_measure_share_one_operator(engine: Engine) -> None:
    op = engine.by_kpi["lab_tat_stat"]
    assert engine.by_kpi["lab_tat_stat_median"] is op
    assert engine.by_kpi["lab_tat_stat_within_target"] is op
    assert len(engine.operators) < len(engine.catalogue)


def test_ed_arrival_to_departure_counts_admitted_patients_only(engine: Engine) -> None:
    """CMS ED-1: arrival to ED departure for patients admitted as inpatients; a move out of
    the ED as a non-inpatient is no admission (and the move already left the ED)."""
    engine.process(enc("encounter.register", 0, "E1", unit="ED", patient_class="emergency"))
    engine.process(enc("encounter.admit", 200, "E1", unit="ICU", patient_class="inpatient"))
    engine.process(enc("encounter.register", 10, "E2", unit="ED", patient_class="emergency"))
    engine.process(enc("encounter.admit", 30, "E2", unit="4W", patient_class="emergency"))  # not an admission
    engine.process(enc("encounter.discharge", 40, "E2", unit="4W", patient_class="emergency"))
    sample = live_of(engine, "ed_los_admitted", 9 * 60, unit="ED")
    assert (sample.n, sample.value) == (1, 200.0)
    # E1's admission was sent at its departure: the decision to admit is not seen, no boarding time
    boarding = live_of(engine, "ed_boarding", 9 * 60, unit="ED")
    assert boarding is None or boarding.n == 0


def test_thirty_day_readmissions_count_for_the_discharging_unit(engine: Engine) -> None:
    # p1: discharged from 4W, back 10 days later (a readmission); p2: died (not an index discharge)
    # p3: discharged, back after 40 days (not within 30); p4: transferred out (not an index)
    script = [
        ("encounter.admit", 0, "a1", "p1", "4W", None),
        ("encounter.discharge", 2 * DAY, "a1", "p1", "4W", "01"),
        ("encounter.admit", 12 * DAY, "a2", "p1", "ICU", None),
        ("encounter.admit", 0, "b1", "p2", "3E", None),
        ("encounter.discharge", 3 * DAY, "b1", "p2", "3E", "20"),
        ("encounter.admit", 5 * DAY, "b2", "p2", "3E", None),
        ("encounter.admit", 0, "c1", "p3", "4W", None),
        ("encounter.discharge", 1 * DAY, "c1", "p3", "4W", "01"),
        ("encounter.admit", 41 * DAY, "c2", "p3", "4W", None),
        ("encounter.admit", 0, "d1", "p4", "4W", None),
        ("encounter.discharge", 4 * DAY, "d1", "p4", "4W", "02"),
        ("encounter.admit", 6 * DAY, "d2", "p4", "4W", None),
    ]

    def play(until: float) -> None:
        while script and script[0][1] <= until:
            kind, minute, visit, patient, unit, disposition = script.pop(0)
            engine.process(
                enc(
                    kind,
                    minute,
                    visit,
                    unit,
                    patient_id=patient,
                    patient_class="inpatient",
                    disposition=disposition,
                )
            )

    script.sort(key=lambda s: s[1])
    play(13 * DAY)
    four_west = live_of(engine, "readmission_30d_rate", 13 * DAY)
    assert (four_west.numerator, four_west.denominator) == (1.0, 2.0)  # a1 readmitted; c1 not (yet)
    assert four_west.value == pytest.approx(50.0)
    assert four_west.status == "no_data"  # 2 index discharges < min_samples 20
    icu = live_of(engine, "readmission_30d_rate", 13 * DAY, "ICU")
    assert icu is None or icu.numerator == 0  # counted for the unit that discharged, not ICU
    three_east = live_of(engine, "readmission_30d_rate", 13 * DAY, "3E")
    assert three_east is None or three_east.denominator == 0  # a death is not an index discharge
    play(50 * DAY)
    assert engine.by_kpi["readmission_30d_rate"].readmissions == 1  # type: ignore[attr-defined]


def test_rates_per_patient_days_use_the_census_integral(engine: Engine) -> None:
    # 10 patients on 4W for 30 days = 300 patient-days; 3 complaints -> 10 per 1,000
    for i in range(10):
        engine.process(enc("encounter.admit", 0, f"v{i}", "4W", patient_class="inpatient"))
    for day in (5, 10, 20):
        engine.process(ev("experience.complaint", day * DAY))
    engine.process(ev("experience.complaint", 21 * DAY, unit=None))  # facility-level complaint
    s = live_of(engine, "complaints_per_1000_patient_days", 30 * DAY)
    assert s.numerator == 3
    assert s.denominator == pytest.approx(300, rel=0.04)  # the live window runs to the watermark
    assert s.value == pytest.approx(3 / s.denominator * 1000)
    hospital = live_of(engine, "complaints_per_1000_patient_days", 30 * DAY, None)
    assert hospital.numerator == 4  # roll-ups add numerators and denominators


def test_overtime_share_is_a_ratio_of_sums(engine: Engine) -> None:
    engine.process(
        ev("staffing.hours", 0, staff_id="a", role="rn", licensed=True, worked_hours=40, overtime_hours=4)
    )
    engine.process(
        ev("staffing.hours", 60, staff_id="b", role="rn", licensed=True, worked_hours=60, overtime_hours=2)
    )
    engine.process(
        ev("staffing.hours", 90, staff_id="c", role="cna", licensed=False, worked_hours=40, overtime_hours=20)
    )
    s = live_of(engine, "nurse_overtime_pct", 120)
    assert (s.numerator, s.denominator) == (6.0, 100.0)
    assert s.value == pytest.approx(6.0)
    hours = live_of(engine, "nurse_overtime_hours", 120)
    assert hours.value == 6.0


def test_turnover_is_annualised_over_average_headcount(engine: Engine) -> None:
    engine.process(ev("hr.headcount", 0, headcount=100))
    for i in range(5):
        engine.process(ev("hr.separation", (i + 1) * 10 * DAY, staff_id=f"s{i}", role="rn"))
    # 90-day window ending at day 90: headcount 100 falling by one every 10 days
    s = live_of(engine, "staff_turnover_rate", 90 * DAY)
    assert s.numerator == 5
    average = (100 * 10 + 99 * 10 + 98 * 10 + 97 * 10 + 96 * 10 + 95 * 40) / 90
    assert s.denominator == pytest.approx(average, rel=0.02)
    assert s.value == pytest.approx(5 / s.denominator * 100 * 365 / 90, rel=0.02)


def test_certified_nurse_share_follows_hires_certifications_and_leavers(engine: Engine) -> None:
    for i in range(4):
        engine.process(ev("hr.hire", i, staff_id=f"n{i}", role="rn"))
    engine.process(ev("hr.hire", 5, staff_id="aide", role="cna"))
    engine.process(ev("hr.certification_granted", 10, staff_id="n0"))
    engine.process(ev("hr.certification_granted", 11, staff_id="n1"))
    engine.process(ev("hr.certification_granted", 12, staff_id="aide"))  # not a nurse: ignored
    assert live_of(engine, "certified_nurses_pct", 20).value == pytest.approx(50.0)
    engine.process(ev("hr.certification_expired", 30, staff_id="n1"))
    engine.process(ev("hr.separation", 31, staff_id="n3"))
    s = live_of(engine, "certified_nurses_pct", 40)
    assert (s.numerator, s.denominator) == (1.0, 3.0)


def test_nurse_ratio_is_held_against_the_unit_types_legal_limit(engine: Engine) -> None:
    def admit(unit: str, n: int) -> None:
        for i in range(n):
            engine.process(enc("encounter.admit", 0, f"{unit}{i}", unit, patient_class="inpatient"))

    admit("ICU", 3)
    admit("4W", 5)
    for unit in ("ICU", "4W"):
        engine.process(ev("staffing.shift_start", 1, unit, staff_id=f"rn-{unit}", role="rn", licensed=True))
    engine.process(ev("staffing.shift_start", 1, "4W", staff_id="aide", role="cna", licensed=False))
    icu = live_of(engine, "patient_to_nurse_ratio", 5, "ICU")
    ward = live_of(engine, "patient_to_nurse_ratio", 5, "4W")
    assert icu.value == 3 and icu.status == "critical"  # ICU legal maximum 1:2
    assert ward.value == 5 and ward.status == "warning"  # med-surg at its 1:5 maximum
    engine.process(ev("staffing.shift_start", 6, "ICU", staff_id="rn2", role="rn", licensed=True))
    assert live_of(engine, "patient_to_nurse_ratio", 7, "ICU").status == "ok"  # 3/2 = 1.5


def kpi(window: dict[str, Any], aggregate: str = "count", **measure: Any) -> Catalogue:
    definition = KpiDefinition.model_validate(
        {
            "id": "k",
            "name": "k",
            "perspective": "patient",
            "description": "d",
            "definition": "d",
            "unit": "n",
            "direction": "lower_is_better",
            "aggregate": aggregate,
            "window": window,
            "measure": measure or {"kind": "count", "event": "experience.complaint"},
        }
    )
    return Catalogue(kpis={"k": definition}, files={})


def closed(engine: Engine, now_minutes: float) -> list[tuple[float, float, float | None]]:
    out = []
    for s in engine.windows(engine.advance(ts(now_minutes))):
        if s.group.unit == "4W":
            start = (s.window.start - T0).total_seconds() / 60
            end = (s.window.end - T0).total_seconds() / 60
            out.append((start, end, s.value))
    return out


@pytest.mark.parametrize(
    ("window", "expected"),
    [
        ({"kind": "tumbling", "size": "1h", "grace": "0s"}, [(0, 60, 2.0), (60, 120, 1.0)]),
        (
            {"kind": "hopping", "size": "1h", "step": "30m", "grace": "0s"},
            [(-30, 30, 1.0), (0, 60, 2.0), (30, 90, 1.0), (60, 120, 1.0), (90, 150, 1.0)],
        ),
        ({"kind": "cumulative", "step": "1h", "grace": "0s"}, [(0, 60, 2.0), (0, 120, 3.0)]),
    ],
)
def test_window_kinds_close_on_their_boundaries(
    places: Places, window: dict[str, Any], expected: Any
) -> None:
    engine = Engine(kpi(window), places)
    for minute in (10, 50, 100):
        engine.process(ev("experience.complaint", minute))
    engine.process(ev("experience.complaint", 200, unit="3E"))  # moves the watermark on
    got = closed(engine, 200)
    assert got[: len(expected)] == expected


def test_late_events_inside_grace_correct_the_window_and_later_ones_are_counted(places: Places) -> None:
    engine = Engine(kpi({"kind": "tumbling", "size": "1h", "grace": "10m"}), places)
    engine.process(ev("experience.complaint", 30))
    engine.process(ev("experience.complaint", 65))  # watermark 65 < 60 + 10: not closed yet
    engine.advance(ts(65))
    engine.process(ev("experience.complaint", 55))  # 10 minutes late, inside grace
    engine.process(ev("experience.complaint", 71))  # watermark 71: [0, 60) closes
    first = closed(engine, 71)
    assert first == [(0, 60, 2.0)]
    engine.process(ev("experience.complaint", 20))  # after the window closed
    assert engine.late_events() == {"k": 1}
    engine.process(ev("experience.complaint", 200))
    # not reopened: the late event is counted as late, the closed window keeps its value (a run
    # of equal windows that grows is handed out again from its first window, value unchanged)
    assert {w for w in closed(engine, 200) if w[0] == 0} <= {(0, 60, 2.0)}


def test_quiet_units_windows_close_on_the_idle_wall_clock(places: Places) -> None:
    engine = Engine(kpi({"kind": "tumbling", "size": "1h", "grace": "5m"}), places, idle_timeout=120)
    engine.process(ev("experience.complaint", 10))
    assert closed(engine, 30) == []
    # no event arrives any more; two hours of wall clock later the window has closed anyway
    assert closed(engine, 10 + 120) == [(0, 60, 1.0)]


def test_a_source_whose_events_no_kpi_reads_does_not_hold_a_watermark(places: Places) -> None:
    """A feed first sends only a type no KPI here reads (a lab order, to a catalogue of one
    complaint count in one-minute windows), then goes quiet for two hours of ticks. Its idle
    watermark feeds no window, so nothing may be held from it: when its complaints come,
    stamped 08:30 and 08:40, both count, and none is late (each in its own minute)."""
    engine = Engine(kpi({"kind": "tumbling", "size": "1m", "grace": "0s"}), places, idle_timeout=60)
    engine.process(ev("lab.order", 0, order_id="o1"))
    for minute in range(1, 120, 5):  # ticks while the feed is quiet
        engine.advance(ts(minute))
    engine.process(ev("experience.complaint", 30, received=at(120)))
    counted = closed(engine, 120)
    engine.process(ev("experience.complaint", 40, received=at(121)))
    counted += closed(engine, 123)  # idle again past 60 s: its watermark passes 08:41
    assert engine.late_events() == {"k": 0}
    assert (30, 31, 1.0) in counted and (40, 41, 1.0) in counted


def test_expired_windows_and_pairs_are_freed(engine: Engine) -> None:
    op = engine.by_kpi["lab_tat_stat"]
    for i in range(200):
        engine.process(lab("lab.order", i, f"o{i}", priority="stat"))
        if i % 2:
            engine.process(lab("lab.result", i + 30, f"o{i}", result_status="final"))
    assert len(op.open) == 100  # type: ignore[attr-defined]
    engine.process(lab("lab.order", 3 * DAY, "late-day", priority="stat"))
    engine.advance(ts(3 * DAY))
    assert len(op.open) == 1  # type: ignore[attr-defined]  # given up after expire_after (12 h)
    assert sum(len(p) for p in op.panes.values()) <= 61  # type: ignore[attr-defined]
    assert op.expired == 100  # type: ignore[attr-defined]


def test_intervals_at_rest_are_forgotten_wave_after_wave(engine: Engine) -> None:
    """Closing windows forgets an interval kept past expire_after (12 h for STAT lab
    turnaround) once no window can use it. The check runs for every window closed and stops
    at the oldest interval kept; a later wave must still be forgotten when its time comes."""
    op = engine.by_kpi["lab_tat_stat"]

    def wave(name: str, day: float, orders: int) -> None:
        for i in range(orders):
            engine.process(lab("lab.order", day + i, f"{name}{i}", priority="stat"))
            engine.process(lab("lab.result", day + i + 30, f"{name}{i}", result_status="final"))
        engine.advance(ts(day + orders + 60))

    wave("a", 0, 50)
    wave("b", 2 * DAY, 50)
    assert set(op.keys) == {f"b{i}" for i in range(50)}  # type: ignore[attr-defined]
    wave("c", 5 * DAY, 1)
    assert set(op.keys) == {"c0"}  # type: ignore[attr-defined]
    wave("d", 8 * DAY, 1)
    assert set(op.keys) == {"d0"}  # type: ignore[attr-defined]


def test_a_key_whose_time_moves_earlier_is_forgotten_with_those_behind_it(engine: Engine) -> None:
    """A result that came before its order waits for it (kept by the result's time); its
    order, arriving later with an earlier time, moves what the key is kept by back. Once
    12 h (expire_after) of closed windows lie past it, it and the order behind it are
    forgotten, as they would be had the order come first."""
    op = engine.by_kpi["lab_tat_stat"]
    engine.process(lab("lab.result", 600, "k0", result_status="final"))
    engine.process(lab("lab.order", 1, "k1", priority="stat"))
    engine.process(lab("lab.result", 5, "k1", result_status="final"))
    engine.advance(ts(600))  # nothing is 12 h old yet: all kept
    assert set(op.keys) == {"k0", "k1"}  # type: ignore[attr-defined]
    engine.process(lab("lab.order", 0, "k0", priority="stat"))  # k0 now kept by minute 0
    engine.process(lab("lab.order", 1000, "z", priority="stat"))
    engine.advance(ts(1000))  # windows closed to about minute 1000: minutes 0 and 1 are past
    assert set(op.keys) == {"z"}  # type: ignore[attr-defined]


def test_windows_before_1970_close(engine: Engine) -> None:
    """Event times before 1970 (negative epoch seconds, negative pane indices) are accepted
    by default (engine.max_age: a lifetime of records) and close like any other: a STAT
    order at 1969-12-31 20:00 resulted at 20:20 is a 20-minute turnaround."""
    evening = (datetime(1969, 12, 31, 20, tzinfo=UTC) - T0).total_seconds() / 60
    engine.process(lab("lab.order", evening, "old", priority="stat"))
    engine.process(lab("lab.result", evening + 20, "old", result_status="final"))
    closed = [
        s
        for s in engine.windows(engine.advance(ts(evening + 120)))
        if s.kpi == "lab_tat_stat" and s.group.unit == "ICU" and s.value is not None
    ]
    assert closed and {s.value for s in closed} == {20.0}


def test_a_resent_order_after_its_result_does_not_open_a_second_interval(engine: Engine) -> None:
    engine.process(lab("lab.order", 0, "o1", priority="stat"))
    engine.process(lab("lab.result", 20, "o1", result_status="final"))
    engine.process(lab("lab.order", 0, "o1", priority="stat"))  # the same ORM, resent
    engine.process(lab("lab.result", 25, "o1", result_status="corrected"))  # a corrected result
    op = engine.by_kpi["lab_tat_stat"]
    assert not op.open and not op.early_ends  # type: ignore[attr-defined]
    s = live_of(engine, "lab_tat_stat", 30, "ICU")
    assert s.n == 1 and s.value == 20


def test_a_resulted_order_is_kept_out_of_the_collectors_view_until_a_correction_wakes_it(
    engine: Engine,
) -> None:
    """An ended interval is kept as a tuple the collector stops tracking (an engine keeps
    hundreds of thousands until expire_after, and every full collection would scan them).
    A later message still corrects it: a result that happened earlier ends the interval
    there (the measure's rule: the earliest end counts), so the STAT turnaround becomes
    12 - 0 = 12 minutes instead of 20."""
    engine.process(lab("lab.order", 0, "o1", priority="stat"))
    engine.process(lab("lab.result", 20, "o1", result_status="final"))
    op = engine.by_kpi["lab_tat_stat"]
    gc.collect()
    gc.collect()  # a tuple is let go once its items are: the first pass may reach it before them
    assert not gc.is_tracked(op.keys["o1"])  # type: ignore[attr-defined]
    assert live_of(engine, "lab_tat_stat", 30, "ICU").value == 20
    engine.process(lab("lab.result", 12, "o1", result_status="corrected"))
    s = live_of(engine, "lab_tat_stat", 30, "ICU")
    assert s.n == 1 and s.value == 12
    engine.process(lab("lab.order", 5, "o1", priority="stat"))  # a resent order, later: ignored
    engine.process(lab("lab.order", -3, "o1", priority="stat"))  # an earlier order time: counts
    s = live_of(engine, "lab_tat_stat", 30, "ICU")
    assert s.n == 1 and s.value == 15  # 12 - (-3)


def test_an_order_waiting_for_its_result_is_kept_out_of_the_collectors_view(engine: Engine) -> None:
    """lab_tat_routine_median counts no open orders, so an order waiting for its result is
    kept as a tuple the collector stops tracking: ends that never come (38,000 unanswered
    nurse-call presences in bench/engine_throughput.py) were each an object every full
    collection scanned. The result still ends it, 45 - 0 = 45 minutes; an order never
    resulted is given up 30 days (expire_after) after it was placed, and counted as expired."""
    op = engine.by_kpi["lab_tat_routine_median"]
    engine.process(lab("lab.order", 0, "r1", priority="routine"))
    engine.process(lab("lab.order", 10, "r2", priority="routine"))
    gc.collect()
    gc.collect()  # a tuple is let go once its items are: the first pass may reach it before them
    assert not gc.is_tracked(op.keys["r1"]) and not gc.is_tracked(op.keys["r2"])  # type: ignore[attr-defined]
    assert list(op.open) == ["r1", "r2"]  # type: ignore[attr-defined]
    engine.process(lab("lab.result", 45, "r1", result_status="final"))
    s = live_of(engine, "lab_tat_routine_median", 60, "ICU")
    assert s.n == 1 and s.value == 45
    assert list(op.open) == ["r2"] and op.expired == 0  # type: ignore[attr-defined]
    engine.process(lab("lab.order", 30 * DAY + 20, "r3", priority="routine"))  # the watermark moves
    engine.advance(ts(30 * DAY + 20))
    assert list(op.open) == ["r3"] and op.expired == 1  # type: ignore[attr-defined]


def test_no_data_below_min_samples_is_not_a_breach(engine: Engine) -> None:
    engine.process(lab("lab.order", 0, "o1", priority="stat"))
    engine.process(lab("lab.result", 200, "o1", result_status="final"))
    s = live_of(engine, "lab_tat_stat", 201, "ICU")
    assert s.value == 200 and s.n == 1 and s.status == "no_data"


def test_events_of_one_source_do_not_close_another_sources_windows(places: Places) -> None:
    engine = Engine(kpi({"kind": "tumbling", "size": "1h", "grace": "5m"}), places, idle_timeout=3600 * 24)
    engine.process(ev("experience.complaint", 10))  # source feed
    engine.process(lab("lab.order", 500, "o", priority="stat"))  # hl7v2 runs far ahead
    assert closed(engine, 10) == []  # the feed's own watermark has not passed the window


@pytest.mark.parametrize("split", [0.2, 0.5, 0.8])
def test_an_engine_restored_from_a_json_snapshot_continues_exactly(
    shipped: Catalogue, places: Places, split: float
) -> None:
    """What a restart (embedded) or a partition moving to another worker (Kafka) relies on."""
    import orjson

    from tests.kafka import _closed, hospital_events

    events = hospital_events(hours=4, facilities=("DEMO",))
    now = events[-1].received_time.timestamp()
    cut = int(len(events) * split)

    def run(restore_at: int | None) -> dict[Any, Any]:
        engine, out = Engine(shipped, places), []
        for i, event in enumerate(events):
            if i == restore_at:
                snapshot = orjson.loads(orjson.dumps(engine.snapshot()))
                engine = Engine(shipped, places)
                engine.restore(snapshot)
            engine.process(event)
            if i % 300 == 299:
                out += engine.windows(engine.advance(event.ts + 30))  # windows close as time passes
        out += engine.windows(engine.advance(now))
        return _closed(out) | {("live", s.kpi, s.group.key): s.value for s in engine.live(now)}

    assert run(cut) == run(None)
