"""Windows in site time: days start at the site's midnight, months on its 1st, DST-safe.

Written from the calendar, not from the engine: in America/New_York, 2026-03-08 (the clocks go
forward at 02:00) runs from 05:00 UTC to 04:00 UTC the next day, 23 hours; 2026-11-01 (back at
02:00) runs from 04:00 UTC to 05:00 UTC the next day, 25 hours; March 2026 runs from March 1
05:00 UTC (EST) to April 1 04:00 UTC (EDT). NHSN counts a month's CLABSIs and central-line days
by the calendar month of the location; a midnight census counts the site's midnights; CMS
counts 30 days after discharge in calendar days. Inputs go through the real connectors: HL7 v2
text through the parser and mapper, quality rows through the feed schema and mapper, times
without an offset read in the site's zone.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.feeds.mapping import FeedMapper
from connectors.feeds.schemas import FEEDS
from connectors.hl7v2.mapping import MapContext, map_message
from connectors.hl7v2.parser import parse
from engine.checkpoint import catalogue_fingerprint
from engine.config import REPO_ROOT, Settings
from engine.core import Engine
from engine.definitions import Catalogue, KpiDefinition, load_catalogue
from engine.definitions.window import WindowSpec
from engine.eventframe import frame_from_records
from engine.events import EventBase, dump_event
from engine.places import Places
from engine.reports import Reporter
from engine.windows import CalendarClock, FixedClock, PaneClock

NY = ZoneInfo("America/New_York")
HOUR = 3600.0

PLACES = Places.model_validate(
    {
        "default_facility": "NYH",
        "facilities": [
            {
                "id": "NYH",
                "departments": [
                    {"id": "medicine", "units": [{"id": "4W", "type": "med_surg", "beds": 20}]},
                    {"id": "critical_care", "units": [{"id": "MICU", "type": "icu", "beds": 10}]},
                ],
            }
        ],
    }
)
SHIPPED = load_catalogue(REPO_ROOT / "kpi_defs")


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def local(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=NY)


def clock(window: dict[str, Any], zone: Any = NY) -> PaneClock:
    return PaneClock.of(WindowSpec.model_validate(window), zone)


def span_of(c: PaneClock, moment: datetime) -> tuple[datetime, datetime]:
    i = c.index(moment.timestamp())
    return datetime.fromtimestamp(c.start(i), UTC), datetime.fromtimestamp(c.start(i + 1), UTC)


# -- the clock ---------------------------------------------------------------------------------
def test_a_new_york_day_starts_at_local_midnight_and_is_23_or_25_hours_when_the_clocks_change() -> None:
    day = clock({"kind": "tumbling", "size": "1d"})
    assert span_of(day, utc("2026-03-07T12:00")) == (utc("2026-03-07T05:00"), utc("2026-03-08T05:00"))
    # the spring-forward day: midnight EST to midnight EDT, 23 hours
    start, end = span_of(day, utc("2026-03-08T12:00"))
    assert (start, end) == (utc("2026-03-08T05:00"), utc("2026-03-09T04:00"))
    assert end - start == timedelta(hours=23)
    assert span_of(day, utc("2026-03-09T03:59:59")) == (start, end)  # 23:59:59 EDT: still March 8
    assert span_of(day, utc("2026-03-09T04:00"))[0] == utc("2026-03-09T04:00")
    # the fall-back day: 25 hours
    start, end = span_of(day, utc("2026-11-01T12:00"))
    assert (start, end) == (utc("2026-11-01T04:00"), utc("2026-11-02T05:00"))


def test_a_calendar_month_runs_from_the_first_at_local_midnight() -> None:
    month = clock({"kind": "tumbling", "size": "1mo"})
    march = (utc("2026-03-01T05:00"), utc("2026-04-01T04:00"))  # EST to EDT
    assert span_of(month, local("2026-03-01T00:00")) == march
    assert span_of(month, local("2026-03-31T23:59:59")) == march
    assert span_of(month, local("2026-02-28T23:59:59"))[1] == march[0]
    assert span_of(month, local("2026-04-01T00:00"))[0] == march[1]
    quarter = clock({"kind": "tumbling", "size": "3mo"})  # panes of 3 months from January
    assert span_of(quarter, local("2026-05-15T12:00")) == (utc("2026-04-01T04:00"), utc("2026-07-01T04:00"))


def test_a_midnight_the_clocks_skip_starts_the_day_at_its_first_instant() -> None:
    """America/Santiago 2026-09-06: at 00:00 (-04) the clocks go to 01:00 (-03)."""
    day = clock({"kind": "tumbling", "size": "1d"}, ZoneInfo("America/Santiago"))
    start, end = span_of(day, utc("2026-09-06T12:00"))
    assert start == utc("2026-09-06T04:00")  # 01:00 -03, the day's first instant
    assert end - start == timedelta(hours=23)
    assert span_of(day, utc("2026-09-06T03:59:59"))[1] == start


def test_utc_days_and_sub_day_windows_keep_the_fixed_arithmetic() -> None:
    """The hot path: panes of hours (any zone) and days in UTC are ts // pane."""
    assert isinstance(clock({"kind": "tumbling", "size": "1d"}, UTC), FixedClock)
    assert isinstance(clock({"kind": "tumbling", "size": "1d"}, ZoneInfo("UTC")), FixedClock)
    assert isinstance(clock({"kind": "sliding", "size": "7d", "step": "1h"}), FixedClock)
    assert isinstance(clock({"kind": "tumbling", "size": "1d"}), CalendarClock)
    assert isinstance(clock({"kind": "tumbling", "size": "1mo"}, UTC), CalendarClock)
    ts = utc("2026-03-08T12:34").timestamp()
    c = clock({"kind": "sliding", "size": "30d", "step": "1d"}, UTC)
    assert c.index(ts) == int(ts // 86400) and c.start(c.index(ts)) == int(ts // 86400) * 86400


ZONES = [
    "America/New_York",
    "Europe/Berlin",
    "Asia/Kolkata",
    "Australia/Lord_Howe",
    "America/Santiago",
    "UTC",
]


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(ZONES),
    st.sampled_from(["1d", "2d", "7d", "1mo", "3mo", "12mo"]),
    st.floats(946_684_800, 2_208_988_800, allow_nan=False),  # 2000 .. 2040
)
def test_panes_tile_time_and_start_at_local_midnight(zone_name: str, hop: str, ts: float) -> None:
    zone = ZoneInfo(zone_name)
    c = clock({"kind": "tumbling", "size": hop}, zone)
    i = c.index(ts)
    assert c.start(i) <= ts < c.start(i + 1)
    assert c.index(c.start(i)) == i and c.index(c.start(i + 1)) == i + 1
    begin = datetime.fromtimestamp(c.start(i), zone)
    before = datetime.fromtimestamp(c.start(i) - 1, zone)
    assert before.date() < begin.date()  # a new local date begins there ...
    assert (begin.hour, begin.minute) == (0, 0) or begin.hour < 2  # ... at midnight (or as the clocks allow)
    if hop.endswith("mo"):
        assert begin.day == 1


def test_window_lengths_in_months() -> None:
    spec = WindowSpec.model_validate({"kind": "sliding", "size": "3mo", "step": "1mo", "grace": "7d"})
    assert (spec.hop, spec.panes, spec.model_dump(mode="json")["size"]) == ("1mo", 3, "3mo")
    for bad, message in (
        ({"kind": "sliding", "size": "3mo", "step": "1d"}, "both be calendar months"),
        ({"kind": "sliding", "size": "3mo", "step": "2mo"}, "whole multiple"),
        ({"kind": "tumbling", "size": "0mo"}, "at least '1mo'"),
        ({"kind": "tumbling", "size": "5x"}, "is not a duration"),
    ):
        with pytest.raises(ValueError, match=message):
            WindowSpec.model_validate(bad)


# -- KPIs, through the connectors ------------------------------------------------------------------
def hl7_adt(trigger: str, when: datetime, visit: str, unit: str, mrn: str, disposition: str = "") -> str:
    """An ADT message with times in the site's local time and no offset (read in the zone)."""
    stamp = when.astimezone(NY).strftime("%Y%m%d%H%M%S")
    pv1 = ["PV1", "1", "I", f"{unit}^1^1^NYH"] + [""] * 15 + [f"{visit}^^^NYH^VN"] + [""] * 17
    if disposition:
        pv1[36] = disposition
    return "\r".join(
        [
            f"MSH|^~\\&|EMR|NYH|CARESCORE|NYH|{stamp}||ADT^{trigger}^ADT_A01|{visit}-{trigger}-{stamp}|P|2.5.1",
            f"EVN|{trigger}|{stamp}",
            f"PID|1||{mrn}^^^NYH^MR||Doe^Jane",
            "|".join(pv1).rstrip("|"),
        ]
    )


def through_hl7(*messages: tuple[str, datetime]) -> list[EventBase]:
    out: list[EventBase] = []
    for text, received in messages:
        out.extend(map_message(parse(text), MapContext(PLACES, NY, received + timedelta(minutes=1))))
    return out


def quality_rows(received: datetime, *records: dict[str, Any]) -> list[EventBase]:
    """Rows as the quality feed brings them: times without an offset are the site's."""
    mapper = FeedMapper(PLACES.index(), NY, received)
    return [e for r in records for e in mapper.events(FEEDS["quality"].model_validate(r))]


class Run:
    """One engine in New York time over the events (event-time order), its watermarks then
    moved to `until` (the sources go quiet and follow the wall clock); and the period report
    over the same events."""

    def __init__(self, catalogue: Catalogue, events: list[EventBase], until: datetime):
        self.events = sorted(events, key=lambda e: e.ts)
        self.engine = Engine(catalogue, PLACES, timezone="America/New_York")
        for event in self.events:
            self.engine.process(event)
        self.closed = self.engine.windows(self.engine.advance(self.wall_clock(until)))
        self.catalogue = catalogue
        frame = frame_from_records([orjson.loads(dump_event(e)) for e in self.events])
        self.reporter = Reporter(frame, PLACES, "America/New_York")

    def wall_clock(self, watermark: datetime) -> float:
        """The wall-clock time at which every source's watermark has reached `watermark`."""
        wm = self.engine.watermarks
        target = watermark.timestamp()
        return max(target - wm.max_ts[s] + wm.arrival[s].timestamp() + wm.idle_timeout for s in wm.max_ts)

    def live(self, kpi: str, unit: str, at: datetime) -> Any:
        (found,) = [s for s in self.engine.live(self.wall_clock(at)) if s.kpi == kpi and s.group.unit == unit]
        return found

    def window(self, kpi: str, unit: str | None, start: datetime) -> Any:
        found = [s for s in self.closed if s.kpi == kpi and s.group.unit == unit and s.window.start == start]
        assert len(found) == 1, (kpi, unit, start, found)
        return found[0]

    def report(self, kpi: str, unit: str | None, start: datetime, end: datetime) -> Any:
        rows = self.reporter.report(self.catalogue[kpi], start, end, "unit" if unit else "facility")
        (row,) = [r for r in rows if r.group.unit == unit]
        return row


def census_kpi() -> Catalogue:
    """The mean census per local day (a gauge with no denominator level: patient-seconds over
    the day's seconds), and patient-hours per day."""
    base = {
        "perspective": "internal_process",
        "description": "t",
        "definition": "t",
        "unit": "u",
        "direction": "lower_is_better",
        "window": {"kind": "tumbling", "size": "1d", "grace": "1h"},
    }
    kpis = [
        {**base, "id": "mean_census", "name": "mean census", "aggregate": "ratio"}
        | {"measure": {"kind": "gauge", "level": "patients", "per": None}},
        {**base, "id": "patient_hours", "name": "patient hours", "aggregate": "ratio"}
        | {
            "measure": {
                "kind": "ratio",
                "numerator": {"kind": "level", "level": "patients", "as": "hours"},
                "denominator": {"kind": "count", "event": "encounter.admit"},
            }
        },
    ]
    parsed = [KpiDefinition.model_validate(k) for k in kpis]
    return Catalogue(kpis={k.id: k for k in parsed}, files={})


def test_the_spring_forward_day_is_a_23_hour_window_from_local_midnight() -> None:
    """One inpatient on 4W from 2026-03-07 20:00 EST, still there: on March 8 the census is 1
    for all of the day, which is 23 hours long. Mean census = 23 h x 1 / 23 h = 1.0;
    patient-hours = 23 (not 24); March 7 holds 4 patient-hours of a 24-hour day."""
    admitted = local("2026-03-07T20:00")
    events = through_hl7((hl7_adt("A01", admitted, "V1", "4W", "M1"), admitted))
    run = Run(census_kpi(), events, utc("2026-03-10T12:00"))
    march_8 = utc("2026-03-08T05:00")
    sample = run.window("mean_census", "4W", march_8)
    assert sample.window.end == utc("2026-03-09T04:00")
    assert (sample.value, sample.numerator, sample.denominator) == (1.0, 23 * HOUR, 23 * HOUR)
    hours = run.window("patient_hours", "4W", march_8)
    assert hours.numerator == pytest.approx(23.0)
    march_7 = run.window("patient_hours", "4W", utc("2026-03-07T05:00"))
    assert (march_7.window.end, march_7.numerator, march_7.value) == (march_8, pytest.approx(4.0), 4.0)
    mean_7 = run.window("mean_census", "4W", utc("2026-03-07T05:00"))
    assert mean_7.value == pytest.approx(4 / 24)
    # the report for the same day, asked in local time, equals the stream
    row = run.report("mean_census", "4W", local("2026-03-08T00:00"), local("2026-03-09T00:00"))
    assert (row.value, row.numerator, row.denominator) == (1.0, 23 * HOUR, 23 * HOUR)
    # live, mid-morning on March 9 (a run that has got that far: watermarks never go back):
    # the open window started at local midnight (04:00 UTC)
    live = Run(census_kpi(), events, utc("2026-03-09T14:00")).live(
        "patient_hours", "4W", utc("2026-03-09T14:00")
    )
    assert live.window.start == utc("2026-03-09T04:00")
    assert live.numerator == pytest.approx(10.0)  # 10 patient-hours so far


def line_days(first: date, days: int, unit: str, count: float) -> list[dict[str, Any]]:
    return [
        {
            "event": "central_line_days",
            "time": (first + timedelta(days=d)).isoformat(),
            "unit": unit,
            "days": count,
        }
        for d in range(days)
    ]


def test_monthly_clabsi_counts_march_from_march_1_to_april_1_local() -> None:
    """NHSN: CLABSI rate = CLABSIs / central-line days x 1,000 for the calendar month.
    MICU, rows as the infection-prevention system sends them (local times, no offset):
      central-line days: 10 a day, February 28, every day of March (31 days = 310), April 1;
      CLABSIs: Feb 28 23:30 (February: it is already March 1 in UTC), March 1 00:30, March 31
      23:30 (March: April 1 in UTC), April 1 00:30 (April).
    March = 2 / 310 x 1,000 = 6.4516 per 1,000 line-days, over [March 1 05:00 UTC, April 1
    04:00 UTC). In UTC months, March would have held the Feb 28 one and lost the March 31 one,
    and its line days would have been counted from other days' rows.
    """
    received = local("2026-04-02T12:00")
    rows = line_days(date(2026, 2, 28), 1, "MICU", 10) + line_days(date(2026, 3, 1), 31, "MICU", 10)
    rows += line_days(date(2026, 4, 1), 1, "MICU", 10)
    rows += [
        {"event": "clabsi", "time": t, "unit": "MICU", "record_id": f"C{i}"}
        for i, t in enumerate(
            ["2026-02-28T23:30:00", "2026-03-01T00:30:00", "2026-03-31T23:30:00", "2026-04-01T00:30:00"]
        )
    ]
    events = quality_rows(received, *rows)
    kpi = "clabsi_per_1000_line_days"
    assert SHIPPED[kpi].window.hop == "1mo"
    # the month closes 14 days (its grace) after it ends
    run = Run(SHIPPED, events, local("2026-04-15T00:01"))
    march = run.window(kpi, "MICU", utc("2026-03-01T05:00"))
    assert march.window.end == utc("2026-04-01T04:00")
    assert (march.numerator, march.denominator) == (2, 310)
    assert march.value == pytest.approx(2 / 310 * 1000)
    assert march.status == "critical"  # 6.45 >= 1.5; 310 line-days >= min_samples 50
    february = run.window(kpi, "MICU", utc("2026-02-01T05:00"))
    assert (february.numerator, february.denominator) == (1, 10)
    row = run.report(kpi, "MICU", local("2026-03-01T00:00"), local("2026-04-01T00:00"))
    assert (row.numerator, row.denominator, row.value) == (march.numerator, march.denominator, march.value)
    # April is not closed yet: its live value is the month so far (1 CLABSI, 10 line-days)
    assert not [s for s in run.closed if s.kpi == kpi and s.window.start == utc("2026-04-01T04:00")]
    micu = run.live(kpi, "MICU", local("2026-04-15T00:01"))
    assert micu.window.start == utc("2026-04-01T04:00")
    assert (micu.numerator, micu.denominator, micu.status) == (1, 10, "no_data")  # < 50 line-days


def test_a_month_of_a_monthly_kpi_is_not_final_before_its_grace() -> None:
    events = quality_rows(
        local("2026-04-02T12:00"), {"event": "clabsi", "time": "2026-03-10T10:00:00", "unit": "MICU"}
    )
    early = Run(SHIPPED, events, local("2026-04-14T23:00"))
    assert not [s for s in early.closed if s.kpi == "clabsi_per_1000_line_days"]


def test_a_midnight_census_counts_the_sites_midnights() -> None:
    """Average length of stay, inpatient days by the midnight census: admitted March 10 10:00
    EDT, discharged March 11 21:00 EDT: one local midnight, 1 day (two UTC midnights: 14:00
    UTC to 01:00 UTC on the 12th)."""
    admitted, discharged = local("2026-03-10T10:00"), local("2026-03-11T21:00")
    events = through_hl7(
        (hl7_adt("A01", admitted, "V7", "4W", "M7"), admitted),
        (hl7_adt("A03", discharged, "V7", "4W", "M7", "01"), discharged),
    )
    run = Run(SHIPPED, events, local("2026-03-20T00:00"))
    row = run.report("average_length_of_stay", "4W", local("2026-03-11T00:00"), local("2026-03-12T00:00"))
    assert (row.value, row.n) == (1.0, 1)
    stream = [s for s in run.closed if s.kpi == "average_length_of_stay" and s.group.unit == "4W"]
    assert stream and all(s.value == 1.0 for s in stream if s.n)


def test_thirty_days_to_a_readmission_are_the_sites_calendar_days() -> None:
    """CMS: a readmission within 30 days of the index discharge, in calendar days. Discharged
    March 1 18:00 EST (23:00 UTC), readmitted March 31 22:00 EDT (April 1 02:00 UTC): 30 local
    days, a readmission (in UTC dates it would be 31)."""
    events = through_hl7(
        (hl7_adt("A01", local("2026-02-25T09:00"), "V1", "4W", "P1"), local("2026-02-25T09:00")),
        (hl7_adt("A03", local("2026-03-01T18:00"), "V1", "4W", "P1", "01"), local("2026-03-01T18:00")),
        (hl7_adt("A01", local("2026-03-31T22:00"), "V2", "4W", "P1"), local("2026-03-31T22:00")),
    )
    run = Run(SHIPPED, events, local("2026-04-01T12:00"))
    assert run.engine.by_kpi["readmission_30d_rate"].readmissions == 1  # type: ignore[attr-defined]
    row = run.report("readmission_30d_rate", "4W", local("2026-03-01T00:00"), local("2026-03-02T00:00"))
    assert (row.numerator, row.denominator, row.value) == (1, 1, 100.0)


# -- wiring --------------------------------------------------------------------------------------
def test_the_site_timezone_reaches_the_engine_and_the_snapshot_fingerprint(tmp_path: Any) -> None:
    from carescore.transports.kafka.worker import restore_partition

    settings = Settings.model_validate({"timezone": "America/New_York", "data_dir": tmp_path})
    part = restore_partition(None, SHIPPED, settings, "f")
    assert part.engine.zone == NY
    op = part.engine.by_kpi["clabsi_per_1000_line_days"]
    assert isinstance(op.clock, CalendarClock) and op.clock.zone == NY
    # a snapshot taken in one zone is not restored in another: its day panes are other instants
    assert catalogue_fingerprint(SHIPPED, "UTC") != catalogue_fingerprint(SHIPPED, "America/New_York")


async def test_a_running_carescore_in_new_york_counts_its_calendar_month(
    settings_for: Callable[..., Settings],
) -> None:
    """End to end: quality rows without an offset go to POST /api/v1/feeds/quality and are New
    York times; the live CLABSI rate is the month so far, from local midnight on the 1st; the
    period report for the same span gives the same numbers. Rows (ICU): central-line days
    today 10, yesterday 12, the day before 8; a CLABSI a minute ago; one at 23:30 on the last
    day of the previous month (already this month in UTC). Expected, by the calendar: the
    CLABSIs and line days whose New York date is in this month."""
    import asyncio

    import httpx

    from carescore.serve import Service

    now = datetime.now(NY).replace(microsecond=0)
    first = now.replace(day=1, hour=0, minute=0, second=0)
    days = {now.date(): 10, now.date() - timedelta(days=1): 12, now.date() - timedelta(days=2): 8}
    events = [now - timedelta(minutes=1), first - timedelta(minutes=30)]
    lines = ["event,time,unit,days,record_id"]
    lines += [f"central_line_days,{d.isoformat()},ICU,{n},LD-{d}" for d, n in days.items()]
    lines += [f"clabsi,{t.strftime('%Y-%m-%dT%H:%M:%S')},ICU,,EV-{i}" for i, t in enumerate(events)]
    in_month = (now.year, now.month)
    numerator = sum(1 for t in events if (t.year, t.month) == in_month)
    denominator = sum(n for d, n in days.items() if (d.year, d.month) == in_month)

    svc = Service(settings_for(timezone="America/New_York"))
    await svc.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{svc.api_port}") as client:
            answer = await client.post(
                "/api/v1/feeds/quality",
                content="\n".join(lines).encode(),
                headers={"Content-Type": "text/csv"},
            )
            assert answer.status_code == 200 and answer.json()["rejected"] == 0, answer.text
            live = None
            for _ in range(200):
                kpi = (await client.get("/api/v1/kpis/clabsi_per_1000_line_days")).json()
                live = next((v for v in kpi["values"] if v["group"]["unit"] == "ICU"), None)
                if live is not None and live["numerator"] == numerator and live["denominator"] == denominator:
                    break
                await asyncio.sleep(0.05)
            assert live is not None, "no live value for ICU"
            assert (live["numerator"], live["denominator"]) == (numerator, denominator), live
            assert datetime.fromisoformat(live["window"]["start"]) == first
            report = await client.get(
                "/api/v1/reports/clabsi_per_1000_line_days",
                # to: now (the live window ends at the watermark, the last row's time, and holds that row)
                params={
                    "from": first.isoformat(),
                    "to": (now + timedelta(minutes=1)).isoformat(),
                    "by": "unit",
                },
            )
            (row,) = [r for r in report.json()["rows"] if r["group"]["unit"] == "ICU"]
            assert (row["numerator"], row["denominator"], row["value"]) == (
                live["numerator"],
                live["denominator"],
                live["value"],
            )
    finally:
        await svc.stop()
