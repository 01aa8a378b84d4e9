"""Workforce and finance KPIs against their published definitions.

Every input goes through the real connectors: HR, staffing, finance and quality rows through the
feed schemas and mapper, ADT and DFT^P03 messages as HL7 v2 text (written by hand) through the
parser and map_message. Each expected value is worked out by hand in the comments from the
definition the KPI cites (kpi_defs/<id>.yaml `standard:`), never from engine code, and is checked
twice: in the stream's closed window and in the polars period report for the same period.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from connectors.feeds.mapping import FeedMapper, RowError
from connectors.feeds.schemas import FEEDS
from connectors.hl7v2.mapping import MapContext, map_message
from connectors.hl7v2.parser import parse
from engine.config import REPO_ROOT
from engine.core import Engine
from engine.definitions import Catalogue, load_catalogue
from engine.eventframe import frame_from_records
from engine.events import EventBase, ProcedureEvent, dump_event
from engine.places import Places
from engine.reports import Reporter

T0 = datetime(2026, 3, 2, tzinfo=UTC)  # a UTC midnight: day windows start on it
END = T0 + timedelta(days=400)  # when everything has been received

PLACES = Places.model_validate(
    {
        "default_facility": "LK",
        "facilities": [
            {
                "id": "LK",
                "departments": [
                    {
                        "id": "medicine",
                        "units": [
                            {"id": "4W", "type": "med_surg", "beds": 20},
                            {"id": "5E", "type": "med_surg", "beds": 20},
                        ],
                    },
                    {"id": "critical_care", "units": [{"id": "ICU", "type": "icu", "beds": 10}]},
                    {"id": "surgery", "units": [{"id": "OR", "type": "or", "beds": 4}]},
                    {"id": "emergency", "units": [{"id": "ED", "type": "ed", "beds": 10}]},
                ],
            }
        ],
    }
)
DEPARTMENT = {"4W": "medicine", "5E": "medicine", "ICU": "critical_care", "OR": "surgery", "ED": "emergency"}


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return load_catalogue(REPO_ROOT / "kpi_defs")


def day(d: float, hour: float = 0.0) -> datetime:
    return T0 + timedelta(days=d, hours=hour)


def iso(d: float, hour: float = 0.0) -> str:
    return day(d, hour).isoformat()


def hl7(d: float, hour: float = 0.0) -> str:
    return day(d, hour).strftime("%Y%m%d%H%M%S") + "+0000"


def rows(feed: str, *records: dict[str, Any]) -> list[EventBase]:
    """Feed rows as a file would bring them: validated by the schema, mapped to events."""
    mapper = FeedMapper(PLACES.index(), UTC, END)
    out: list[EventBase] = []
    for record in records:
        out.extend(mapper.events(FEEDS[feed].model_validate(record)))
    return out


def messages(*texts: str) -> list[EventBase]:
    ctx = MapContext(places=PLACES, received=END)
    return [e for text in texts for e in map_message(parse(text), ctx)]


class Run:
    """One engine fed with the events (in event-time order, as a replayed log), and the
    report over the same events."""

    def __init__(self, catalogue: Catalogue, events: Iterable[EventBase], span: float = 90):
        self.events = sorted(events, key=lambda e: e.ts)
        self.span = span
        self.engine = Engine(catalogue, PLACES)
        for event in self.events:
            self.engine.process(event)
        # the feed then goes quiet: the watermark follows the wall clock until every window of
        # the last event's year (and its grace) has closed
        last = self.events[-1].event_time
        quiet = (last - T0) + timedelta(days=self.span + 8)
        self.closed = self.engine.windows(self.engine.advance((END + quiet).timestamp()))
        frame = frame_from_records([orjson.loads(dump_event(e)) for e in self.events])
        self.reporter = Reporter(frame, PLACES)
        self.catalogue = catalogue

    def window(self, kpi: str, start: float, end: float, unit: str | None = None) -> Any:
        """The stream's closed sample for [day start, day end), at a unit or the facility."""
        group = {"facility": "LK", "department": DEPARTMENT[unit] if unit else None, "unit": unit}
        for s in self.closed:
            if (
                s.kpi == kpi
                and s.group.model_dump() == group
                and s.window.start == day(start)
                and s.window.end == day(end)
            ):
                return s
        return None

    def report(self, kpi: str, start: float, end: float, unit: str | None = None) -> Any:
        by = "unit" if unit else "facility"
        for row in self.reporter.report(self.catalogue[kpi], day(start), day(end), by):
            if row.group.unit == unit:
                return row
        return None

    def check(
        self,
        kpi: str,
        start: float,
        end: float,
        unit: str | None,
        value: float | None,
        numerator: float | None = None,
        denominator: float | None = None,
    ) -> None:
        for where, got in (
            ("stream", self.window(kpi, start, end, unit)),
            ("report", self.report(kpi, start, end, unit)),
        ):
            assert got is not None, f"{kpi} {unit or 'facility'} [{start}, {end}) {where}: no value"
            assert got.value == pytest.approx(value), f"{kpi} {unit or 'facility'} {where}: {got}"
            if numerator is not None:
                assert got.numerator == pytest.approx(numerator), f"{kpi} {unit} {where}: {got}"
            if denominator is not None:
                assert got.denominator == pytest.approx(denominator), f"{kpi} {unit} {where}: {got}"


def hr(event: str, d: float, unit: str, **fields: Any) -> dict[str, Any]:
    return {"event": event, "time": iso(d), "unit": unit, **fields}


# -- turnover: separations of people leaving the organisation / average headcount (NSI) --------
def test_turnover_counts_leavers_not_internal_transfers_over_an_hr_baseline(catalogue: Catalogue) -> None:
    """NSI: turnover = employees who left the organisation / average headcount, annualised;
    moves between units are not separations.

    4W has a baseline of 10 RNs and ICU of 6 (hr.headcount, role rn) on day 0.
      day 10  E900 leaves (separation, not known by id: one of 4W's baseline RNs)   4W 10 -> 9
      day 20  E901 separated from 4W ...                                              4W  9 -> 8
      day 22  ... and hired on ICU two days later: an internal transfer               ICU 6 -> 7
      day 30  E902 moves 4W -> ICU (a transfer row)                                  4W 8 -> 7, ICU 7 -> 8
      day 40  E999 separates from 5E: never hired through the feed, 5E has no baseline:
              no headcount can go below zero (5E stays 0), the record is counted as unmatched
    Window [day 0, day 90), 90 days:
      4W  average headcount (10x10 + 9x10 + 8x10 + 7x60) / 90 = 690/90; leavers 1 (E900)
          turnover = 1 / (690/90) x 100 x 365/90 = 36,500 / 690 = 52.899 %/year
      ICU average (6x22 + 7x8 + 8x60) / 90 = 668/90; leavers 0 -> 0
      facility average (690 + 668)/90 = 1358/90; leavers 2 (E900, E999)
          turnover = 2 x 90/1358 x 100 x 365/90 = 73,000 / 1358 = 53.756 %/year
    """
    events = rows(
        "hr",
        hr("headcount", 0, "4W", role="rn", headcount=10),
        hr("headcount", 0, "ICU", role="RN", headcount=6),
        hr("separation", 10, "4W", staff_id="E900", role="rn", hire_date="2019-06-01"),
        hr("separation", 20, "4W", staff_id="E901", role="rn", hire_date="2018-02-01"),
        hr("hire", 22, "ICU", staff_id="E901", role="rn"),
        hr("transfer", 30, "ICU", staff_id="E902", role="rn", from_unit="4W"),
        hr("separation", 40, "5E", staff_id="E999", role="cna"),
    )
    run = Run(catalogue, events)
    run.check("staff_turnover_rate", 0, 90, "4W", 36_500 / 690, numerator=1, denominator=690 / 90)
    run.check("staff_turnover_rate", 0, 90, "ICU", 0.0, numerator=0, denominator=668 / 90)
    run.check("staff_turnover_rate", 0, 90, None, 73_000 / 1358, numerator=2, denominator=1358 / 90)
    # 5E: a leaver and no headcount: no rate, and its headcount never went below zero
    five_east = run.window("staff_turnover_rate", 0, 90, "5E")
    assert five_east.value is None and five_east.numerator == 1 and five_east.denominator == 0
    assert run.engine.roster.unmatched["separation"] == 1
    assert all(v >= 0 for v in run.engine.roster.emitted.values())


# -- certified nurses: certified direct-care RNs / direct-care RNs (NDNQI, Magnet) ------------
def test_certified_share_needs_a_known_rn_and_lasts_until_the_last_certification_expires(
    catalogue: Catalogue,
) -> None:
    """4W: baseline of 10 direct-care RNs (day 0).
      day 1  E950 (rn, 4W) certified CCRN: one of the 10 baseline RNs, now certified     1/10
      day 1  E951 (cna, 4W) certified: not a direct-care RN, ignored
      day 1  E952 (rn, 5E) certified: 5E has no RN on the books, ignored (a certification
             never creates an RN: 5E's headcount stays 0)
      day 2  E950 also PCCN;  day 3  CCRN expires: still certified (PCCN)
    Day [5, 6): 4W 1 / 10 x 100 = 10 %.
      day 7  PCCN expires: no certification left
    Day [8, 9): 4W 0 / 10 = 0 %.
    """
    events = rows(
        "hr",
        hr("headcount", 0, "4W", role="rn", headcount=10),
        hr("certification_granted", 1, "4W", staff_id="E950", role="rn", certification="CCRN"),
        hr("certification_granted", 1, "4W", staff_id="E951", role="cna", certification="CNA-C"),
        hr("certification_granted", 1, "5E", staff_id="E952", role="rn", certification="CMSRN"),
        hr("certification_granted", 2, "4W", staff_id="E950", role="rn", certification="PCCN"),
        hr("certification_expired", 3, "4W", staff_id="E950", role="rn", certification="CCRN"),
        hr("certification_expired", 7, "4W", staff_id="E950", role="rn", certification="PCCN"),
    )
    run = Run(catalogue, events)
    run.check("certified_nurses_pct", 5, 6, "4W", 10.0)
    run.check("certified_nurses_pct", 8, 9, "4W", 0.0)
    assert run.window("certified_nurses_pct", 5, 6, "5E") is None  # no RN there: nothing to report
    assert run.engine.roster.unmatched["certification"] == 2
    assert run.engine.roster.emitted.get(("staff", ("LK", "medicine", "5E")), 0.0) == 0.0


def test_a_certified_nurse_who_moves_takes_the_certification_to_the_new_unit(catalogue: Catalogue) -> None:
    """Certified direct-care RNs / direct-care RNs, per unit (NDNQI, Magnet).
    Day 0: baselines of 4 RNs on 4W and 5 on 5E; E960 hired as an RN on 4W (5 on 4W).
      day 1  E960 certified CCRN                                4W 1/5 = 20 %;  5E 0/5 = 0 %
      day 4  E960 transferred to 5E                              4W 0/4 = 0 %;   5E 1/6 = 16.67 %
      day 7  E960 hired again, onto 4W (a move, nobody new)      4W 1/5 = 20 %;  5E 0/5 = 0 %
    The same engine snapshotted and restored between day 1 and day 4 gives the same windows
    and, at the end, the same roster levels as the engine that ran through (4W's 6 budgeted
    RN positions among them): the roster's people and rows by unit come back with it."""
    events = rows(
        "hr",
        hr("headcount", 0, "4W", role="rn", headcount=4),
        hr("positions", 0, "4W", role="rn", positions=6),
        hr("headcount", 0, "5E", role="rn", headcount=5),
        hr("hire", 0, "4W", staff_id="E960", role="rn"),
        hr("certification_granted", 1, "4W", staff_id="E960", role="rn", certification="CCRN"),
        hr("transfer", 4, "5E", staff_id="E960", role="rn"),
        hr("hire", 7, "4W", staff_id="E960", role="rn"),
    )
    run = Run(catalogue, events)
    for start, share_4w, share_5e in ((2, 20.0, 0.0), (5, 0.0, 100 / 6), (8, 20.0, 0.0)):
        run.check("certified_nurses_pct", start, start + 1, "4W", share_4w)
        run.check("certified_nurses_pct", start, start + 1, "5E", share_5e)

    restored = Engine(catalogue, PLACES)
    later = [e for e in run.events if e.ts >= day(4).timestamp()]
    first = Engine(catalogue, PLACES)
    for event in run.events[: len(run.events) - len(later)]:
        first.process(event)
    restored.restore(orjson.loads(orjson.dumps(first.snapshot())))
    for event in later:
        restored.process(event)
    quiet = END + (run.events[-1].event_time - T0) + timedelta(days=run.span + 8)
    again = {
        (s.group.unit, s.window.start): s.value
        for s in restored.windows(restored.advance(quiet.timestamp()))
        if s.kpi == "certified_nurses_pct" and s.group.unit
    }
    for start, share_4w, share_5e in ((5, 0.0, 100 / 6), (8, 20.0, 0.0)):
        assert again[("4W", day(start))] == pytest.approx(share_4w)
        assert again[("5E", day(start))] == pytest.approx(share_5e)
    assert restored.roster.emitted == run.engine.roster.emitted
    # after day 7: 4W 5 RNs on 6 positions, 1 vacant
    assert restored.roster.emitted[("rn_vacancies", ("LK", "medicine", "4W"))] == 1.0


# -- training hours per nurse: hours of RNs / RNs, the same roles on both sides ---------------
def test_training_hours_and_headcount_cover_the_same_rn_roles(catalogue: Catalogue) -> None:
    """4W baseline (day 0): 10 RNs, 1 charge RN, 4 nursing assistants.
    Training in [day 0, day 30): RN 4 h, "registered_nurse" 3 h (an RN under another name),
    charge nurse 2 h, nursing assistant 8 h (not an RN: left out of both sides).
    Hours of RNs = 4 + 3 + 2 = 9; RN headcount = 10 + 1 = 11 all month -> 9 / 11 h per nurse.
    """
    events = rows(
        "hr",
        hr("headcount", 0, "4W", role="rn", headcount=10),
        hr("headcount", 0, "4W", role="Charge RN", headcount=1),
        hr("headcount", 0, "4W", role="cna", headcount=4),
        hr("training", 5, "4W", staff_id="E1", role="rn", hours=4),
        hr("training", 6, "4W", staff_id="E2", role="registered_nurse", hours=3),
        hr("training", 7, "4W", staff_id="E3", role="charge_nurse", hours=2),
        hr("training", 8, "4W", staff_id="E4", role="cna", hours=8),
    )
    run = Run(catalogue, events)
    run.check("training_hours_per_nurse", 0, 30, "4W", 9 / 11, numerator=9, denominator=11)


# -- RN vacancy rate: vacant budgeted RN positions / budgeted RN positions (NSI) --------------
def test_rn_vacancy_is_budget_minus_filled_per_unit_never_negative(catalogue: Catalogue) -> None:
    """Day 0: 4W 12 budgeted RN positions, 10 RNs; ICU 5 budgeted, 6 RNs (over budget: no
    vacancy, not -1). Day [0, 1): 4W 2/12 = 16.667 %, ICU 0/5 = 0 %, facility 2/17 = 11.765 %.
    Day 1: E960 hired as RN on 4W -> 4W 11 RNs. Day [2, 3): 4W 1/12 = 8.333 %, facility 1/17.
    """
    events = rows(
        "hr",
        hr("headcount", 0, "4W", role="rn", headcount=10),
        hr("positions", 0, "4W", role="rn", positions=12),
        hr("headcount", 0, "ICU", role="rn", headcount=6),
        hr("positions", 0, "ICU", role="rn", positions=5),
        hr("hire", 1, "4W", staff_id="E960", role="rn"),
    )
    run = Run(catalogue, events)
    run.check("rn_vacancy_rate", 0, 1, "4W", 200 / 12)
    run.check("rn_vacancy_rate", 0, 1, "ICU", 0.0)
    run.check("rn_vacancy_rate", 0, 1, None, 200 / 17)
    run.check("rn_vacancy_rate", 2, 3, "4W", 100 / 12)
    run.check("rn_vacancy_rate", 2, 3, None, 100 / 17)


# -- first-year RN turnover: RNs leaving within a year of hire / RNs hired (NSI) ---------------
def test_first_year_rn_turnover(catalogue: Catalogue) -> None:
    """Hires in [day 0, day 365): N1 (RN, 4W, day 10), N2 (RN, 4W, day 20), N3 (RN, ICU, day 30),
    N4 (LPN: not an RN), N5 ("RN", ICU, day 50).
    Separations: N1 on day 200 (hired day 10: within a year); E800 on day 300 (hired 2019: not
    first-year); N2 separated on day 100 and hired on ICU on day 103: an internal transfer,
    neither a leaver nor a new hire (N2's own hire on day 20 still counts).
    Facility: 1 first-year leaver / 4 RN hires (N1, N2, N3, N5) = 25 %.
    4W: 1 / 2 (N1, N2) = 50 %; ICU: 0 / 2 (N3, N5) = 0 %.
    """
    events = rows(
        "hr",
        hr("headcount", 0, "4W", role="rn", headcount=10),
        hr("hire", 10, "4W", staff_id="N1", role="rn"),
        hr("hire", 20, "4W", staff_id="N2", role="rn"),
        hr("hire", 30, "ICU", staff_id="N3", role="rn"),
        hr("hire", 40, "4W", staff_id="N4", role="lpn"),
        hr("hire", 50, "ICU", staff_id="N5", role="RN"),
        hr("separation", 100, "4W", staff_id="N2", role="rn", hire_date=day(20).date().isoformat()),
        hr("hire", 103, "ICU", staff_id="N2", role="rn"),
        hr("separation", 200, "4W", staff_id="N1", role="rn", hire_date=day(10).date().isoformat()),
        hr("separation", 300, "4W", staff_id="E800", role="rn", hire_date="2019-09-01"),
    )
    run = Run(catalogue, events, span=365)
    run.check("first_year_rn_turnover", 0, 365, None, 25.0, numerator=1, denominator=4)
    run.check("first_year_rn_turnover", 0, 365, "4W", 50.0, numerator=1, denominator=2)
    run.check("first_year_rn_turnover", 0, 365, "ICU", 0.0, numerator=0, denominator=2)


def test_a_separation_says_first_year_from_its_hire_date() -> None:
    sep = rows("hr", hr("separation", 0, "4W", staff_id="A", role="rn", hire_date="2025-03-02"))[0]
    assert sep.first_year is False  # 2025-03-02 -> 2026-03-02: one full year
    sep = rows("hr", hr("separation", 0, "4W", staff_id="B", role="rn", hire_date="2025-03-03"))[0]
    assert sep.first_year is True
    with pytest.raises(RowError):
        rows("hr", hr("separation", 0, "4W", staff_id="C", role="rn", hire_date="2026-04-01"))


# -- ADT for the patient-day scenarios ---------------------------------------------------------
def adt(trigger: str, d: float, visit: str, unit: str, cls: str = "I", control: str = "") -> str:
    return (
        f"MSH|^~\\&|ADT|LK|CARESCORE|LK|{hl7(d)}||ADT^{trigger}^ADT_A01|{control or visit + trigger}|P|2.5\r"
        f"EVN|{trigger}|{hl7(d)}\r"
        f"PID|1||MRN{visit}^^^LK^MR||Doe^Pat\r"
        f"PV1|1|{cls}|{unit}^1^1^LK||||||||||||||||{visit}^^^LK^VN\r"
    )


def two_patients_for_ten_days() -> list[EventBase]:
    """4W: two inpatients from day 0 to day 10 = 20 patient-days; an ED registration (not in
    the inpatient census, the ED is not an inpatient unit)."""
    return messages(
        adt("A01", 0, "V1", "4W"),
        adt("A01", 0, "V2", "4W"),
        adt("A04", 1, "V3", "ED", cls="E"),
        adt("A03", 1.25, "V3", "ED", cls="E"),
        adt("A03", 10, "V1", "4W"),
        adt("A03", 10, "V2", "4W"),
    )


def shift(staff: str, role: str, unit: str, d: float, hours: float) -> dict[str, Any]:
    return {
        "staff_id": staff,
        "role": role,
        "unit": unit,
        "shift_start": iso(d, 7),
        "shift_end": iso(d, 7 + hours),
    }


# -- nursing hours per patient day (NQF #0205) -------------------------------------------------
def test_nursing_hours_per_patient_day(catalogue: Catalogue) -> None:
    """NQF #0205: productive hours of nursing staff with direct care (RN, LPN/LVN, UAP) /
    patient days, for the calendar month. 4W over March ([day -1, day 30): T0 is March 2): 20
    patient-days (two inpatients, days 0-10).
    Hours: RN 10 shifts x 12 h = 120; nursing assistant 5 x 8 h = 40; charge nurse 5 x 12 h and
    a clerk's 8 h are not direct-care nursing hours -> 160 h. 4W = 160 / 20 = 8.0 h per
    patient-day. The ED's 3 x 12 h have no inpatient day to divide: they stay out of the
    facility value, which is 160 / 20 = 8.0.
    """
    staffing = [shift(f"R{i}", "rn", "4W", i, 12) for i in range(10)]
    staffing += [shift(f"A{i}", "nursing assistant", "4W", i, 8) for i in range(5)]
    staffing += [shift(f"C{i}", "charge_nurse", "4W", i, 12) for i in range(5)]
    staffing += [shift("K1", "clerk", "4W", 1, 8)]
    staffing += [shift(f"E{i}", "rn", "ED", i, 12) for i in range(3)]
    run = Run(catalogue, two_patients_for_ten_days() + rows("staffing", *staffing))
    run.check("nursing_hours_per_patient_day", -1, 30, "4W", 8.0, numerator=160, denominator=20)
    run.check("nursing_hours_per_patient_day", -1, 30, None, 8.0, numerator=160, denominator=20)


# -- falls of every injury level per 1,000 patient days (NDNQI, NQF #0141) ----------------------
def test_falls_of_all_severities_and_falls_with_injury(catalogue: Catalogue) -> None:
    """4W, 20 patient-days in March ([day -1, day 30), the KPIs' calendar month). Falls: injury
    none (day 2), minor (day 3), an older-style fall_injury row (day 4), one not yet assessed
    (day 5).
    All falls: 4 / 20 x 1,000 = 200 per 1,000 patient-days.
    Falls with injury (minor or worse): the minor one and the fall_injury row = 2 -> 100.
    """
    falls = rows(
        "quality",
        {"event": "fall", "time": iso(2, 3), "unit": "4W", "injury": "none", "record_id": "F1"},
        {"event": "fall", "time": iso(3, 3), "unit": "4W", "injury": "minor", "record_id": "F2"},
        {"event": "fall_injury", "time": iso(4, 3), "unit": "4W", "record_id": "F3"},
        {"event": "fall", "time": iso(5, 3), "unit": "4W", "record_id": "F4"},
    )
    run = Run(catalogue, two_patients_for_ten_days() + falls)
    run.check("falls_per_1000_patient_days", -1, 30, "4W", 200.0, numerator=4, denominator=20)
    run.check("falls_with_injury_per_1000_patient_days", -1, 30, "4W", 100.0, numerator=2, denominator=20)


# -- average cost per procedure: each procedure once, on the performing cost centre ------------
def dft(control: str, sent: float, ft1_type: str, amount: str, *, ft1_16: str = "", pr1: str = "") -> str:
    """A DFT^P03 for patient V10 (bed on 4W): one FT1 (the charge) and its PR1."""
    ft1 = ["FT1", "1", "", "", hl7(3, 9), "", ft1_type, "44970", "", "", "1", amount, "", "", "", "", ft1_16]
    ft1 += [""] * 8 + ["44970^Laparoscopic appendectomy^CPT"]  # FT1-17..24 empty, FT1-25 procedure
    return (
        f"MSH|^~\\&|BILLING|LK|CARESCORE|LK|{hl7(sent)}||DFT^P03^DFT_P03|{control}|P|2.5.1\r"
        f"EVN|P03|{hl7(sent)}\r"
        "PID|1||MRNV10^^^LK^MR||Doe^Pat\r"
        "PV1|1|I|4W^401^1^LK||||||||||||||||V10^^^LK^VN\r" + "|".join(ft1) + "\r" + pr1
    )


def pr1(code: str, when: str, more: dict[int, str] | None = None) -> str:
    fields = ["PR1", "1", "", code, "", when] + [""] * 20
    for n, value in (more or {}).items():
        fields[n] = value
    return "|".join(fields).rstrip("|") + "\r"


def test_a_procedure_counts_once_at_the_cost_centre_that_performed_it(catalogue: Catalogue) -> None:
    """Patient V10 lies on 4W; the appendectomy is done in the OR on day 3 at 09:00.
    Billing sends the DFT^P03 (FT1-16 = OR), sends it again the next day (new control id), and
    then a credit DFT (FT1-6 CD) for the same procedure: one procedure, in the OR, not on 4W.
    A second procedure (a bedside one on 4W, PR1-19 identifier P-2001) is sent twice, the
    second time with its time corrected by a minute: one procedure, at the earlier time.
    Procedure cost lines (finance feed): OR 3,000; 4W 450.
    Average cost per procedure over March ([day -1, day 30)): OR 3,000 / 1 = 3,000; 4W 450 / 1 = 450;
    facility 3,450 / 2 = 1,725.
    """
    appendectomy = pr1("44970^Laparoscopic appendectomy^CPT", hl7(3, 9))
    line = "36556^Insert central venous catheter^CPT"
    texts = [
        dft("BILL001", 3.5, "CG", "8200.00^USD", ft1_16="OR^^^LK", pr1=appendectomy),
        dft("BILL002", 4.5, "CG", "8200.00^USD", ft1_16="OR^^^LK", pr1=appendectomy),
        dft("BILL003", 5.5, "CD", "8200.00^USD", ft1_16="OR^^^LK", pr1=appendectomy),
        dft("BILL004", 4.5, "CG", "900.00^USD", pr1=pr1(line, hl7(4, 2), {19: "P-2001^EPIC"})),
        dft("BILL005", 5.0, "CG", "900.00^USD", pr1=pr1(line, hl7(4, 2 + 1 / 60), {19: "P-2001^EPIC"})),
    ]
    events = messages(*texts)
    procedures = [e for e in events if isinstance(e, ProcedureEvent)]
    assert [p.unit for p in procedures] == ["OR", "OR", "4W", "4W"]  # none from the credit DFT
    assert len({p.procedure_id for p in procedures}) == 2
    costs = rows(
        "finance",
        {"time": iso(3), "unit": "OR", "category": "procedure", "amount": 3000, "procedure_code": "44970"},
        {"time": iso(4), "unit": "4W", "category": "procedure", "amount": 450, "procedure_code": "36556"},
    )
    run = Run(catalogue, messages(adt("A01", 0, "V10", "4W")) + events + costs)
    run.check("average_cost_per_procedure", -1, 30, "OR", 3000.0, numerator=3000, denominator=1)
    run.check("average_cost_per_procedure", -1, 30, "4W", 450.0, numerator=450, denominator=1)
    run.check("average_cost_per_procedure", -1, 30, None, 1725.0, numerator=3450, denominator=2)


def test_a_pr1_marked_deleted_adds_no_procedure() -> None:
    deleted = pr1("44970^Laparoscopic appendectomy^CPT", hl7(3, 9), {20: "D"})
    events = messages(dft("BILL010", 3.5, "CG", "8200.00^USD", ft1_16="OR^^^LK", pr1=deleted))
    assert not [e for e in events if isinstance(e, ProcedureEvent)]
    assert [e.type for e in events] == ["finance.charge"]


# -- operating margin and cost per adjusted patient day ----------------------------------------
def test_operating_margin_and_cost_per_adjusted_patient_day(catalogue: Catalogue) -> None:
    """Ledger lines in March ([day -1, day 30): the accounting month; finance feed), 20
    inpatient days on 4W:
      expense   4W labour 40,000 + supplies 6,000; ED labour 30,000; OR procedure 4,000 = 80,000
      operating revenue  4W net patient service 52,000; ED net patient service 28,000 and
                         other operating 2,000 = 82,000 (4W's 5,000 investment income is
                         non-operating)
      gross patient revenue  inpatient (4W) 150,000; outpatient (ED) 100,000
    Operating margin = (operating revenue - operating expense) / operating revenue:
      facility (82,000 - 80,000) / 82,000 x 100 = 2.4390 %
      4W (52,000 - 46,000) / 52,000 x 100 = 11.538 %;  ED (30,000 - 30,000) / 30,000 = 0 %
    Adjusted patient days (AHA) = inpatient days x gross total / gross inpatient revenue
      = 20 x 250,000 / 150,000 = 33.333; cost per adjusted patient day = 80,000 / 33.333 = 2,400.
    Cost per patient day of the inpatient units: 4W 46,000 / 20 = 2,300; the facility value
    is the same (the ED's and OR's expense has no inpatient day).
    """
    ledger = [
        ("4W", "labour", 40_000),
        ("4W", "supplies", 6_000),
        ("ED", "labour", 30_000),
        ("OR", "procedure", 4_000),
        ("4W", "net_patient_service", 52_000),
        ("ED", "net_patient_service", 28_000),
        ("ED", "other_operating", 2_000),
        ("4W", "non_operating", 5_000),
        ("4W", "gross_inpatient", 150_000),
        ("ED", "gross_outpatient", 100_000),
    ]
    finance = rows(
        "finance",
        *({"time": iso(5 + i), "unit": u, "category": c, "amount": a} for i, (u, c, a) in enumerate(ledger)),
    )
    run = Run(catalogue, two_patients_for_ten_days() + finance)
    run.check("operating_margin", -1, 30, None, 2000 / 82_000 * 100, numerator=2000, denominator=82_000)
    run.check("operating_margin", -1, 30, "4W", 6000 / 52_000 * 100)
    run.check("operating_margin", -1, 30, "ED", 0.0)
    run.check("cost_per_adjusted_patient_day", -1, 30, None, 2400.0, numerator=80_000, denominator=100 / 3)
    run.check("cost_per_adjusted_patient_day", -1, 30, "4W", 2300.0, numerator=46_000, denominator=20)
    run.check("cost_per_patient_day", -1, 30, None, 2300.0, numerator=46_000, denominator=20)


def test_finance_rows_say_cost_or_revenue_consistently() -> None:
    with pytest.raises(ValueError, match="not a cost category"):
        FEEDS["finance"].model_validate(
            {"time": iso(1), "unit": "4W", "category": "gross_inpatient", "amount": 1, "kind": "cost"}
        )
    (event,) = rows("finance", {"time": iso(1), "unit": "4W", "category": "other_operating", "amount": 5})
    assert event.type == "finance.revenue"


def test_engagement_scores_on_another_scale_are_refused_not_mixed_in() -> None:
    """The engagement KPI and its thresholds are on a 1-5 scale (NHS Staff Survey to 2017):
    a 0-100 vendor score would always read "ok"; it is refused with the reason."""
    with pytest.raises(ValueError, match="outside the 1-5 scale"):
        FEEDS["hr"].model_validate(hr("engagement", 1, "4W", staff_id="S1", score=72))
    with pytest.raises(ValueError, match="not converted"):
        FEEDS["hr"].model_validate(hr("engagement", 1, "4W", staff_id="S1", score=4, scale_max=10))
    (event,) = rows("hr", hr("engagement", 1, "4W", staff_id="S1", score=4.2, scale_max=5))
    assert event.score == 4.2
