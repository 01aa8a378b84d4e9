"""Property: for any window the stream closed, the polars period report over the logged
events gives the same value, numerator, denominator, n and status, for every operator kind
and every window kind, with events arriving out of order within the grace period.

Windows of whole days and calendar months are the site's (engine timezone): the scenarios
run in several zones, over a local midnight where the clocks change (a 23-, 24.5- or 25-hour
day, a midnight that does not exist) or a month's end; the report is asked for exactly the
window the stream closed, so it must agree however long that day or month was."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.core import Engine
from engine.definitions import Catalogue, KpiDefinition
from engine.eventframe import frame_from_records
from engine.events import EVENT_TYPES, EventBase, dump_event
from engine.places import Places
from engine.reports import Reporter

T0 = datetime(2026, 4, 1, 6, 0, tzinfo=UTC)
UNITS = [("F", "med", "4W"), ("F", "med", "3E"), ("F", "crit", "ICU")]
PLACES = Places.model_validate(
    {
        "facilities": [
            {
                "id": "F",
                "departments": [
                    {"id": "med", "units": [{"id": "4W", "beds": 6}, {"id": "3E", "beds": 4}]},
                    {"id": "crit", "units": [{"id": "ICU", "type": "icu", "beds": 3}]},
                ],
            }
        ]
    }
)

WINDOWS = {
    "tumbling": {"kind": "tumbling", "size": "1h", "grace": "10m"},
    "sliding": {"kind": "sliding", "size": "1h", "step": "20m", "grace": "10m"},
    "hopping": {"kind": "hopping", "size": "2h", "step": "1h", "grace": "10m"},
    "cumulative": {"kind": "cumulative", "step": "1h", "grace": "10m"},
    # in the site's time zone: local days, calendar months
    "daily": {"kind": "tumbling", "size": "1d", "grace": "10m"},
    "days": {"kind": "sliding", "size": "2d", "step": "1d", "grace": "10m"},
    "monthly": {"kind": "tumbling", "size": "1mo", "grace": "10m"},
    "months": {"kind": "sliding", "size": "2mo", "step": "1mo", "grace": "10m"},
}
CALENDAR_WINDOWS = {"daily", "days", "monthly", "months"}


def _local(zone: str, text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone)).astimezone(UTC)


# (zone, first event, the watermark at the end if later than two days on): six hours of
# events from a local evening
ANCHORS: list[tuple[str, datetime, datetime | None]] = [
    ("UTC", T0, None),
    # 2026-03-08: the clocks go forward at 02:00; the day is 23 h (05:00 UTC to 04:00 UTC)
    ("America/New_York", _local("America/New_York", "2026-03-07T22:00"), None),
    # October ends at 04:00 UTC; 2026-11-01 is 25 h (the clocks go back at 02:00 EDT)
    ("America/New_York", _local("America/New_York", "2026-10-31T21:00"), None),
    # 2026-03-29 is 23 h; March (with it) closes on April 1, 00:00 CEST
    (
        "Europe/Berlin",
        _local("Europe/Berlin", "2026-03-28T22:00"),
        _local("Europe/Berlin", "2026-04-02T00:00"),
    ),
    # UTC+05:30: April ends at 18:30 UTC
    ("Asia/Kolkata", _local("Asia/Kolkata", "2026-04-30T21:00"), None),
    # 2026-04-05 is 24.5 h (the clocks go back 30 minutes at 02:00)
    ("Australia/Lord_Howe", _local("Australia/Lord_Howe", "2026-04-04T22:00"), None),
    # 2026-09-06 has no midnight (00:00 -04 is 01:00 -03): it starts at 04:00 UTC, 23 h long
    ("America/Santiago", _local("America/Santiago", "2026-09-05T21:00"), None),
]

MEASURES: dict[str, tuple[dict[str, Any], list[str]]] = {
    "tat": (
        {
            "kind": "duration",
            "start": {"event": "lab.order", "where": {"priority": "stat"}},
            "end": {"event": "lab.result", "where": {"result_status": "final"}},
            "key": "order_id",
            "timeout": "30m",
        },
        ["p90", "median", "mean", "max", "count", "pct_within"],
    ),
    "tat_end": (
        {
            "kind": "duration",
            "start": {"event": "lab.order"},
            "end": {"event": "lab.result"},
            "key": "order_id",
            "attribute_to": "end",
            "unit": "hours",
        },
        ["min", "sum"],
    ),
    "call": (  # any of three ends, the earliest in event time; a cancel; survivorship
        {
            "kind": "duration",
            "start": {"event": "nursecall.placed"},
            "end": [
                {"event": "nursecall.acknowledged"},
                {"event": "nursecall.arrived"},
                {"event": "nursecall.ended"},
            ],
            "key": "call_id",
            "cancel": {"event": "nursecall.cancelled"},
            "timeout": "15m",
            "expire_after": "2h",
            "count_open": True,
        },
        ["p90", "pct_within", "count", "max"],
    ),
    "tat_open": (  # never-resulted orders are misses, not gaps
        {
            "kind": "duration",
            "start": {"event": "lab.order", "where": {"priority": "stat"}},
            "end": {"event": "lab.result", "where": {"result_status": "final"}},
            "key": "order_id",
            "cancel": {"event": "lab.cancel"},
            "timeout": "20m",
            "expire_after": "3h",
            "count_open": True,
        },
        ["pct_within", "mean"],
    ),
    "complaints": ({"kind": "count", "event": "experience.complaint"}, ["count"]),
    "cost": (
        {"kind": "sum", "event": "finance.cost", "field": "amount", "where": {"category": "supplies"}},
        ["sum"],
    ),
    "score": ({"kind": "values", "event": "experience.survey", "field": "score"}, ["mean", "p50"]),
    "per_days": (
        {
            "kind": "ratio",
            "numerator": {"kind": "count", "event": "experience.complaint"},
            "denominator": {"kind": "level", "level": "patients", "as": "days"},
            "scale": 1000,
        },
        ["ratio"],
    ),
    "overtime": (
        {
            "kind": "ratio",
            "numerator": {"kind": "sum", "event": "staffing.hours", "field": "overtime_hours"},
            "denominator": {"kind": "sum", "event": "staffing.hours", "field": "worked_hours"},
            "scale": 100,
        },
        ["ratio"],
    ),
    "top_box": (
        {
            "kind": "ratio",
            "numerator": {"kind": "count", "event": "experience.survey", "where": {"top_box": True}},
            "denominator": {"kind": "count", "event": "experience.survey"},
            "scale": 100,
        },
        ["ratio"],
    ),
    "hcahps": (  # mean of domains, each the mean of its items' top-box shares; n = surveys
        {"kind": "top_box", "domains": ["nurse_communication", "overall_rating", "recommend"]},
        ["top_box"],
    ),
    "turnover": (
        {
            "kind": "ratio",
            "numerator": {"kind": "count", "event": "hr.separation"},
            "denominator": {"kind": "level", "level": "staff", "as": "average"},
            "scale": 100,
            "annualise": True,
        },
        ["ratio"],
    ),
    "occupancy": ({"kind": "gauge", "level": "patients", "per": "beds", "scale": 100}, ["ratio"]),
    "per_nurse": ({"kind": "gauge", "level": "patients", "per": "licensed_staff"}, ["ratio"]),
    "readmit": ({"kind": "readmission", "within": "3h", "scale": 100}, ["ratio"]),
    "per_procedure": (  # each procedure once (its earliest report), wherever it is reported
        {
            "kind": "ratio",
            "numerator": {"kind": "sum", "event": "finance.cost", "field": "amount"},
            "denominator": {"kind": "count", "event": "procedure.performed", "distinct": "procedure_id"},
        },
        ["ratio"],
    ),
    "leavers": (  # a separation with a hire of the same person close by is a transfer
        {
            "kind": "ratio",
            "numerator": {
                "kind": "count",
                "event": "hr.separation",
                "unless": {"event": "hr.hire", "key": "staff_id", "within": "4m"},
            },
            "denominator": {"kind": "level", "level": "registered_nurses", "as": "average"},
            "scale": 100,
        },
        ["ratio"],
    ),
    "margin": (
        {
            "kind": "ratio",
            "numerator": {
                "kind": "sum",
                "event": "finance.revenue",
                "field": "amount",
                "where": {"category": ["net_patient_service", "other_operating"]},
            },
            "minus": {"kind": "sum", "event": "finance.cost", "field": "amount"},
            "denominator": {
                "kind": "sum",
                "event": "finance.revenue",
                "field": "amount",
                "where": {"category": ["net_patient_service", "other_operating"]},
            },
            "scale": 100,
        },
        ["ratio"],
    ),
    "adjusted_days": (
        {
            "kind": "ratio",
            "numerator": {"kind": "sum", "event": "finance.cost", "field": "amount"},
            "denominator": {"kind": "level", "level": "patients", "as": "days"},
            "adjust": {
                "numerator": {
                    "kind": "sum",
                    "event": "finance.revenue",
                    "field": "amount",
                    "where": {"category": ["gross_inpatient", "gross_outpatient"]},
                },
                "denominator": {
                    "kind": "sum",
                    "event": "finance.revenue",
                    "field": "amount",
                    "where": {"category": "gross_inpatient"},
                },
            },
        },
        ["ratio"],
    ),
    "hours_per_day": (  # units without patient-days stay out of the roll-ups
        {
            "kind": "ratio",
            "numerator": {"kind": "sum", "event": "staffing.hours", "field": "worked_hours"},
            "denominator": {"kind": "level", "level": "patients", "as": "days"},
            "roll_up": "with_denominator",
        },
        ["ratio"],
    ),
    "vacancy": (
        {"kind": "gauge", "level": "rn_vacancies", "per": "budgeted_rn_positions", "scale": 100},
        ["ratio"],
    ),
    "certified": (
        {"kind": "gauge", "level": "certified_nurses", "per": "direct_care_rns", "scale": 100},
        ["ratio"],
    ),
}
LEVEL_MEASURES = {
    "per_days",
    "turnover",
    "occupancy",
    "per_nurse",
    "leavers",
    "adjusted_days",
    "hours_per_day",
    "vacancy",
    "certified",
}


WINDOW_OF: dict[str, str] = {}


def catalogue() -> Catalogue:
    kpis: dict[str, KpiDefinition] = {}
    for mname, (measure, aggregates) in MEASURES.items():
        for wname, window in WINDOWS.items():
            if wname == "cumulative" and mname in LEVEL_MEASURES:
                continue
            for agg in aggregates:
                kid = f"{mname}_{wname}_{agg}"
                WINDOW_OF[kid] = wname
                kpis[kid] = KpiDefinition.model_validate(
                    {
                        "id": kid,
                        "name": kid,
                        "perspective": "internal_process",
                        "description": "t",
                        "definition": "t",
                        "unit": "u",
                        "direction": "lower_is_better",
                        "measure": measure,
                        "aggregate": agg,
                        "within": 20 if agg == "pct_within" else None,
                        # a readmission counts at its index discharge: the window waits for the follow-up
                        "window": {**window, "grace": "190m"} if measure["kind"] == "readmission" else window,
                        "thresholds": {"warning": 25, "critical": 50},
                        "min_samples": 2,
                        "by_unit_type": {"icu": {"thresholds": {"warning": 10, "critical": 20}}},
                    }
                )
    return Catalogue(kpis=kpis, files={})


CATALOGUE = catalogue()


def _event(kind: str, minute: float, unit: tuple[str, str, str] | None, **fields: Any) -> dict[str, Any]:
    place = {"facility": unit[0], "department": unit[1], "unit": unit[2]} if unit else {"facility": "F"}
    source = "hl7v2" if kind.split(".")[0] in ("lab", "encounter") else "feed"
    return {"type": kind, "minute": minute, "source": source, **place, **fields}


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[dict[str, Any]], int]:
    unit = st.sampled_from(UNITS)
    minute = st.floats(0, 360, allow_nan=False).map(lambda m: round(m, 3))
    events: list[dict[str, Any]] = []
    for i in range(draw(st.integers(0, 14))):
        start = draw(minute)
        u = draw(unit)
        priority = draw(st.sampled_from(["stat", "stat", "routine"]))
        events.append(_event("lab.order", start, u, order_id=f"o{i}", priority=priority))
        if draw(st.booleans()):  # a resent order message: same order, same time
            events.append(_event("lab.order", start, u, order_id=f"o{i}", priority=priority))
        end = None
        if draw(st.integers(0, 4)):
            end = start + draw(st.floats(0, 90, allow_nan=False))
            status = draw(st.sampled_from(["final", "final", "preliminary"]))
            events.append(_event("lab.result", end, draw(unit), order_id=f"o{i}", result_status=status))
        if draw(st.integers(0, 5)) == 0:  # cancelled, well before or after the result (never reordered)
            offset = draw(st.floats(6, 60))
            before = end is not None and end - offset > start and draw(st.booleans())
            when = end - offset if before else (end or start) + offset  # type: ignore[operator]
            events.append(_event("lab.cancel", when, u, order_id=f"o{i}", priority=priority))
    for i in range(draw(st.integers(0, 10))):  # nurse calls: several ends, in any order
        start = draw(minute)
        u = draw(unit)
        events.append(_event("nursecall.placed", start, u, call_id=f"c{i}"))
        if draw(st.integers(0, 4)) == 0:  # the same call sent again
            events.append(_event("nursecall.placed", start, u, call_id=f"c{i}"))
        for kind in ("nursecall.acknowledged", "nursecall.arrived", "nursecall.ended"):
            if draw(st.booleans()):  # ends minutes apart arrive out of order (5 min jitter)
                offset = draw(st.floats(-2, 150, allow_nan=False))
                events.append(_event(kind, start + offset, draw(unit), call_id=f"c{i}"))
        if draw(st.integers(0, 5)) == 0:
            events.append(_event("nursecall.cancelled", start + draw(st.floats(0, 150)), u, call_id=f"c{i}"))
    patients = [f"p{k}" for k in range(4)]
    for i in range(draw(st.integers(0, 8))):
        t = draw(minute)
        pid = draw(st.sampled_from(patients))
        cls = draw(st.sampled_from(["inpatient", "inpatient", "emergency"]))
        u = draw(unit)
        events.append(
            _event("encounter.admit", t, u, encounter_id=f"v{i}", patient_id=pid, patient_class=cls)
        )
        if draw(st.booleans()):
            t += draw(st.floats(1, 120))
            u = draw(unit)
            events.append(_event("encounter.transfer", t, u, encounter_id=f"v{i}", patient_id=pid))
        if draw(st.integers(0, 3)):
            t += draw(st.floats(1, 200))
            events.append(
                _event(
                    "encounter.discharge",
                    t,
                    u,
                    encounter_id=f"v{i}",
                    patient_id=pid,
                    patient_class=cls,
                    disposition=draw(st.sampled_from(["01", "01", "02", "20"])),
                )
            )
    for i in range(draw(st.integers(0, 4))):
        t = draw(minute)
        u = draw(unit)
        events.append(
            _event("staffing.shift_start", t, u, staff_id=f"n{i}", role="rn", licensed=draw(st.booleans()))
        )
        if draw(st.booleans()):
            events.append(
                _event("staffing.shift_end", t + draw(st.floats(10, 300)), u, staff_id=f"n{i}", role="rn")
            )
        events.append(
            _event(
                "staffing.hours",
                t,
                u,
                staff_id=f"n{i}",
                role="rn",
                licensed=True,
                worked_hours=draw(st.floats(0, 12)),
                overtime_hours=draw(st.floats(0, 3)),
            )
        )
    for kind, extra in (
        ("experience.complaint", {}),
        ("finance.cost", {"category": "supplies", "amount": 100.0}),
        ("experience.survey", {"question": "q"}),
    ):
        for _ in range(draw(st.integers(0, 5))):
            fields = dict(extra)
            if kind == "experience.survey":
                fields["top_box"] = draw(st.booleans())
                fields["score"] = draw(st.one_of(st.none(), st.floats(0, 10)))
            if kind == "finance.cost":
                fields["amount"] = draw(st.floats(0, 1000))
            events.append(_event(kind, draw(minute), draw(st.one_of(st.none(), unit)), **fields))
    for _ in range(draw(st.integers(0, 8))):  # HCAHPS answers: a survey's answers on several
        # units or none, screeners (no top box), answers that do not apply, answers without a survey
        items = ["nurse_courtesy", "nurse_listen", "overall_rating", "needed_toilet_help"]
        item = draw(st.sampled_from(items))
        events.append(
            _event(
                "experience.survey",
                draw(minute),
                draw(st.one_of(st.none(), unit)),
                survey_id=draw(st.sampled_from(["s1", "s2", "s3", None])),
                item=item,
                top_box=None if item == "needed_toilet_help" else draw(st.one_of(st.none(), st.booleans())),
            )
        )
    for i in range(draw(st.integers(0, 4))):
        u = draw(unit)
        t = draw(minute)
        if draw(st.booleans()):
            events.append(_event("hr.headcount", t, u, headcount=float(draw(st.integers(1, 20)))))
        events.append(_event("hr.hire", t + 1, u, staff_id=f"s{i}", role="rn"))
        if draw(st.booleans()):
            events.append(
                _event("hr.separation", t + draw(st.floats(2, 200)), u, staff_id=f"s{i}", role="rn")
            )
    events += draw(workforce_and_finance(unit, minute))
    return events, draw(st.integers(0, 2**31))


@st.composite
def workforce_and_finance(
    draw: st.DrawFn, unit: st.SearchStrategy[Any], minute: st.SearchStrategy[float]
) -> list[dict[str, Any]]:
    """Procedures reported several times (same identity, other times and places, or none),
    separations with and without a hire of the same person close by, RN baselines, budgets
    and certifications, revenue and gross charges."""
    events: list[dict[str, Any]] = []
    for ident in ("p1", "p2", "p3", None):
        # billing resends a procedure within minutes (its time corrected now and then); the
        # engine remembers an identity while its window is kept, not for ever
        base = draw(minute)
        for _ in range(draw(st.integers(0, 3))):
            t = round(base + draw(st.floats(-3, 3)), 3) if ident else draw(minute)
            events.append(_event("procedure.performed", t, draw(unit), procedure_id=ident))
    for i in range(draw(st.integers(0, 5))):
        u, t = draw(unit), draw(minute)
        events.append(_event("hr.separation", t, u, staff_id=f"x{i}", role="rn"))
        if draw(st.booleans()):  # the same person hired again within minutes: an internal transfer
            events.append(
                _event(
                    "hr.hire",
                    round(t + draw(st.floats(-3.5, 3.5)), 3),
                    draw(unit),
                    staff_id=f"x{i}",
                    role="rn",
                )
            )
    for _ in range(draw(st.integers(0, 3))):
        u, t = draw(unit), draw(minute)
        events.append(_event("hr.headcount", t, u, role="rn", headcount=float(draw(st.integers(0, 8)))))
        events.append(_event("hr.positions", t + 1, u, role="rn", positions=float(draw(st.integers(0, 9)))))
    for i in range(draw(st.integers(0, 4))):
        u, t = draw(unit), draw(minute)
        staff = draw(st.sampled_from(["s0", "s1", f"c{i}"]))
        events.append(
            _event("hr.certification_granted", t, u, staff_id=staff, role="rn", certification="CCRN")
        )
        if draw(st.booleans()):
            events.append(
                _event(
                    "hr.certification_expired",
                    round(t + draw(st.floats(1, 100)), 3),
                    u,
                    staff_id=staff,
                    certification="CCRN",
                )
            )
    categories = [
        "net_patient_service",
        "other_operating",
        "non_operating",
        "gross_inpatient",
        "gross_outpatient",
    ]
    for _ in range(draw(st.integers(0, 8))):
        category = draw(st.sampled_from(categories))
        amount = draw(st.floats(0, 1000))
        events.append(_event("finance.revenue", draw(minute), draw(unit), category=category, amount=amount))
    return events


def materialise(raw: list[dict[str, Any]], seed: int, t0: datetime = T0) -> list[EventBase]:
    """Arrival order: time order, then non-ADT events shuffled by up to 5 minutes."""
    rng = random.Random(seed)
    keyed = []
    for i, spec in enumerate(sorted(raw, key=lambda e: e["minute"])):
        jitter = 0.0 if spec["type"].startswith("encounter.") else rng.uniform(0, 5)
        keyed.append((spec["minute"] + jitter, i, spec))
    events = []
    for arrival, i, spec in sorted(keyed, key=lambda k: (k[0], k[1])):
        fields = {k: v for k, v in spec.items() if k != "minute"}
        when = t0 + timedelta(minutes=spec["minute"])
        events.append(
            EVENT_TYPES[spec["type"]].model_validate(
                {
                    **fields,
                    "event_time": when,
                    "received_time": t0 + timedelta(minutes=arrival),
                    "source_id": f"e{i}",
                }
            )
        )
    return events


def key_of(sample: Any) -> tuple[str, str | None, str | None]:
    g = sample.group
    return (g.facility, g.department, g.unit)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(scenarios(), st.sampled_from(ANCHORS))
def test_period_report_equals_stream(
    scenario: tuple[list[dict[str, Any]], int], anchor: tuple[str, datetime, datetime | None]
) -> None:
    raw, seed = scenario
    zone, t0, until = anchor
    events = materialise(raw, seed, t0)
    engine = Engine(CATALOGUE, PLACES, idle_timeout=600, timezone=zone)
    closed = []
    for i, event in enumerate(events):
        engine.process(event)
        if i % 3 == 0:
            closed += engine.windows(engine.advance(event.received_time.timestamp()))
    closed += engine.windows(engine.advance((until or t0 + timedelta(days=2)).timestamp()))
    assert sum(engine.late_events().values()) == 0  # disorder stayed inside the grace period
    frame = frame_from_records([orjson.loads(dump_event(e)) for e in events])
    reporter = Reporter(frame, PLACES, zone)
    rng = random.Random(seed)
    by_window: dict[tuple[str, datetime, datetime, str], dict[Any, Any]] = {}
    for s in closed:
        by_window.setdefault((s.kpi, s.window.start, s.window.end, s.group.level), {})[key_of(s)] = s
    calendar = sorted((w for w in by_window if WINDOW_OF[w[0]] in CALENDAR_WINDOWS), key=str)
    others = sorted((w for w in by_window if WINDOW_OF[w[0]] not in CALENDAR_WINDOWS), key=str)
    chosen = rng.sample(others, min(len(others), 30)) + rng.sample(calendar, min(len(calendar), 20))
    for kpi_id, start, end, level in chosen:
        streamed = by_window[(kpi_id, start, end, level)]
        rows = {r.group.key: r for r in reporter.report(CATALOGUE[kpi_id], start, end, level)}  # type: ignore[arg-type]
        assert set(rows) == set(streamed), (kpi_id, start, end, level)
        for key, sample in streamed.items():
            row = rows[key]
            context = (kpi_id, start, end, key)
            assert row.n == sample.n, context
            assert row.status == sample.status, context
            for field in ("value", "numerator", "denominator"):
                want, got = getattr(sample, field), getattr(row, field)
                if want is None:
                    assert got is None, (context, field)
                else:
                    # level integrals are level x epoch seconds: float64 rounds them at ~1e-9
                    assert got == pytest.approx(want, rel=1e-8, abs=1e-7), (context, field)


def test_every_operator_kind_is_covered() -> None:
    kinds = {type(k.measure).__name__ + ":" + getattr(k.measure, "kind", "") for k in CATALOGUE}
    assert kinds >= {
        "DurationMeasure:duration",
        "EventMeasure:count",
        "EventMeasure:sum",
        "EventMeasure:values",
        "RatioMeasure:ratio",
        "LevelMeasure:gauge",
        "ReadmissionMeasure:readmission",
        "TopBoxMeasure:top_box",
    }
    windows = {k.window.kind for k in CATALOGUE}
    assert windows == {"tumbling", "sliding", "hopping", "cumulative"}
    hops = {str(k.window.hop) for k in CATALOGUE}
    assert {"86400.0", "1mo"} <= hops  # local days and calendar months


def test_shipped_kpis_report_from_a_real_log(tmp_path: Any) -> None:
    """The report path end to end on the shipped catalogue (definitions from kpi_defs/)."""
    from engine.config import REPO_ROOT
    from engine.definitions import load_catalogue
    from engine.eventframe import log_frame
    from engine.eventlog import EventLog

    shipped = load_catalogue(REPO_ROOT / "kpi_defs")
    places = Places.model_validate(
        yaml.safe_load((REPO_ROOT / "carescore/defaults.yaml").read_text())["places"]
    )
    log = EventLog(tmp_path / "events", fsync=False, segment_bytes=500)
    raw = [
        _event(
            "encounter.admit",
            0,
            ("DEMO", "medicine", "4W"),
            encounter_id="v1",
            patient_id="p1",
            patient_class="inpatient",
        ),
        _event("lab.order", 10, ("DEMO", "medicine", "4W"), order_id="o1", priority="stat"),
        _event("lab.result", 40, ("DEMO", "medicine", "4W"), order_id="o1", result_status="final"),
        _event("encounter.discharge", 600, ("DEMO", "medicine", "4W"), encounter_id="v1", patient_id="p1"),
    ]
    events = materialise(raw, 1)
    for e in events:
        log.append_now([e])
    log.wait_sealed()
    assert len(log.segments()) > 1  # small segments: some are rolled and sealed as Parquet
    assert any(p.with_suffix(".parquet").exists() for p in log.segment_paths())
    reporter = Reporter(log_frame(log.segment_paths()), places)
    (row,) = reporter.report(shipped["lab_tat_stat"], T0, T0 + timedelta(hours=1), "unit")
    assert row.value == pytest.approx(30.0) and row.n == 1 and row.status == "no_data"
    occupancy = {
        r.group.unit: r for r in reporter.report(shipped["bed_occupancy"], T0, T0 + timedelta(hours=1))
    }
    assert set(occupancy) == {"ICU", "4W", "3E", "ED"}  # every unit with beds, even empty ones
    assert occupancy["4W"].value == pytest.approx(100 / 30) and occupancy["ICU"].value == 0
