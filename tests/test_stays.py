"""Lengths of stay and ED intervals from HL7 ADT, held to their published definitions.

Messages are HL7 v2 text built field by field (tests/test_census_and_ratio.adt) through the
real parser and mapping. Times: minutes after 2026-03-01 08:00 UTC.

- ALOS (OECD / AHA): inpatient days / discharges, inpatient days by the midnight census (a
  same-day stay counts one), days on leave of absence not counted; admission and discharge at
  the times the message says they happened (PV1-44 / PV1-45), not when they were recorded.
- CMS ED-1 / OP-18: ED arrival to ED departure, for admitted / discharged ED patients;
  CMS ED-2 / TJC LD.04.03.11: decision to admit to ED departure (boarding), 4-hour limit.
"""

from __future__ import annotations

import gc
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from connectors.hl7v2.mapping import MapContext, map_message
from connectors.hl7v2.parser import parse
from engine.core import Engine
from engine.eventframe import frame_from_records
from engine.events import EventBase, dump_event
from engine.places import Places
from engine.reports import Reporter
from engine.samples import Sample
from tests.test_census_and_ratio import CATALOGUE, adt, at, pick

H = 60
D = 24 * H


def clock(day: int, hour: float) -> float:
    """Minutes after 03-01 08:00 for 2026-03-<day> <hour>:00 UTC."""
    return (datetime(2026, 3, day, tzinfo=UTC) - at(0)).total_seconds() / 60 + hour * H


class Feed:
    def __init__(self, places: Places):
        self.places = places
        self.engine = Engine(CATALOGUE, places)
        self.log: list[EventBase] = []
        self.closed: list[Sample] = []

    def __call__(self, text: str, received: float) -> None:
        for event in map_message(parse(text), MapContext(self.places, received=at(received))):
            self.engine.process(event)
            self.log.append(event)

    def report_equals_stream(self, kpi: str, start: datetime, end: datetime, until: float) -> None:
        """The period report over a window the stream closed gives the stream's value."""
        self.closed += self.engine.windows(self.engine.advance(at(until).timestamp()))
        closed = [s for s in self.closed if s.kpi == kpi]
        streamed = {s.group.key: s for s in closed if s.window.start == start and s.window.end == end}
        assert streamed, f"the stream closed no {kpi} window {start}..{end}"
        reporter = Reporter(frame_from_records([orjson.loads(dump_event(e)) for e in self.log]), self.places)
        for row in reporter.report(CATALOGUE[kpi], start, end, "unit"):
            live = streamed[row.group.key]
            assert (row.value, row.n) == (pytest.approx(live.value), live.n), row.group

    def live(self, kpi: str, minutes: float, unit: str) -> Sample:
        return pick(self.engine.live(at(minutes).timestamp()), kpi, unit)


def test_length_of_stay_counts_midnights_of_the_inpatient_stay(places: Places) -> None:
    send = Feed(places)
    # V1: admitted 03-01 07:30 (PV1-44; recorded 08:00), discharged 03-04 10:00 -> 3 midnights
    send(adt("A01", clock(1, 8), "V1", "4W", pv1={44: "202603010730"}), clock(1, 8))
    send(adt("A03", clock(4, 10), "V1", "4W", disposition="01"), clock(4, 10))
    # V2: in and out on 03-02 -> 0 midnights, counts 1 day
    send(adt("A01", clock(2, 9), "V2", "4W"), clock(2, 9))
    send(adt("A03", clock(2, 17), "V2", "4W", disposition="01"), clock(2, 17))
    # V3: 03-01 20:00 .. 03-05 12:00 with leave 03-02 10:00 .. 03-03 10:00: present over the
    # midnights of 03-02 (1) and 03-04, 03-05 (2); the 03-03 midnight was spent on leave -> 3
    send(adt("A01", clock(1, 20), "V3", "4W"), clock(1, 20))
    send(adt("A21", clock(2, 10), "V3", "4W"), clock(2, 10))
    send(adt("A22", clock(3, 10), "V3", "4W"), clock(3, 10))
    send(adt("A03", clock(5, 12), "V3", "4W", disposition="01"), clock(5, 12))
    # V4: discharged in error 03-02 08:00, A13, really discharged 03-06 08:00 -> 5 midnights
    send(adt("A01", clock(1, 8), "V4", "4W"), clock(1, 8))
    send(adt("A03", clock(2, 8), "V4", "4W", disposition="01"), clock(2, 8))
    send(adt("A13", clock(2, 9), "V4", "4W"), clock(2, 9))
    send(adt("A03", clock(6, 8), "V4", "4W", disposition="01"), clock(6, 8))
    # V5: admitted in error (A11): no stay
    send(adt("A01", clock(1, 8), "V5", "4W"), clock(1, 8))
    send(adt("A11", clock(1, 9), "V5", "4W"), clock(1, 9))
    # V6: ED 03-03 06:00, admitted (A06) 09:00 while in the ED, to 4W 11:00, out 03-05 11:00:
    # the inpatient stay starts at the admission -> midnights of 03-04, 03-05 = 2
    send(adt("A04", clock(3, 6), "V6", "ED", pclass="E"), clock(3, 6))
    send(adt("A06", clock(3, 9), "V6", "ED"), clock(3, 9))
    send(adt("A02", clock(3, 11), "V6", "4W"), clock(3, 11))
    send(adt("A03", clock(5, 11), "V6", "4W", disposition="01"), clock(5, 11))
    # stays 3, 1, 3, 5, 2: mean 14 / 5 = 2.8, median 3
    mean = send.live("average_length_of_stay", clock(6, 12), "4W")
    assert (mean.value, mean.n) == (pytest.approx(2.8), 5)
    assert send.live("average_length_of_stay_median", clock(6, 12), "4W").value == pytest.approx(3.0)
    week = (datetime(2026, 2, 28, 12, tzinfo=UTC), datetime(2026, 3, 7, 12, tzinfo=UTC))
    send.report_equals_stream("average_length_of_stay", *week, until=clock(8, 0))


def test_a_discharged_stays_length_is_kept_out_of_the_collectors_view(places: Places) -> None:
    """A stay's observations are kept as a tuple the collector stops tracking (an engine keeps
    thousands of discharged stays; every full collection would scan each one's list), and an
    A13 still takes the discharge back: V1 admitted 03-01 08:00, discharged 03-03 10:00 (2
    midnights), the discharge cancelled and sent again for 03-04 10:00 (3 midnights)."""
    send = Feed(places)
    send(adt("A01", clock(1, 8), "V1", "4W"), clock(1, 8))
    send(adt("A03", clock(3, 10), "V1", "4W", disposition="01"), clock(3, 10))
    op = send.engine.by_kpi["average_length_of_stay"]
    observed = op.tally.observed  # type: ignore[attr-defined]
    for _ in range(3):  # a tuple is let go once its items are (place, observation, the stay's)
        gc.collect()
    assert [v for _, _, v in observed["V1"]] == [2.0] and not gc.is_tracked(observed["V1"])
    send(adt("A13", clock(3, 11), "V1", "4W"), clock(3, 11))
    assert "V1" not in observed
    send(adt("A03", clock(4, 10), "V1", "4W", disposition="01"), clock(4, 10))
    assert send.live("average_length_of_stay", clock(4, 12), "4W").value == pytest.approx(3.0)


def test_ed_intervals_follow_ed1_op18_and_boarding(places: Places) -> None:
    send = Feed(places)
    # E1: arrives 10:00, decision (A06 in the ED) 11:00, leaves for 4W 13:30
    #     -> ED-1 210 min, boarding 150 min
    send(adt("A04", clock(2, 10), "E1", "ED", pclass="E", mrn="P1"), clock(2, 10))
    send(adt("A06", clock(2, 11), "E1", "ED", mrn="P1"), clock(2, 11))
    send(adt("A02", clock(2, 13.5), "E1", "4W", mrn="P1"), clock(2, 13.5))
    # E2: arrives 10:00, sent home 12:00 -> OP-18 120 min
    send(adt("A04", clock(2, 10), "E2", "ED", pclass="E", mrn="P2"), clock(2, 10))
    send(adt("A03", clock(2, 12), "E2", "ED", pclass="E", mrn="P2", disposition="01"), clock(2, 12))
    # E3: the inpatient stay has its own number (I3), opened 11:30 while the patient is in the
    #     ED; the ED visit is discharged at departure 12:30 -> ED-1 150 min, boarding 60 min
    send(adt("A04", clock(2, 10), "E3", "ED", pclass="E", mrn="P3"), clock(2, 10))
    send(adt("A01", clock(2, 11.5), "I3", "4W", mrn="P3"), clock(2, 11.5))
    send(adt("A03", clock(2, 12.5), "E3", "ED", pclass="E", mrn="P3", disposition="09"), clock(2, 12.5))
    # E4: discharged in error 10:30 (A13 10:40), decision 11:00, to ICU 12:00
    #     -> ED-1 120 min, boarding 60 min
    send(adt("A04", clock(2, 10), "E4", "ED", pclass="E", mrn="P4"), clock(2, 10))
    send(adt("A03", clock(2, 10.5), "E4", "ED", pclass="E", mrn="P4", disposition="01"), clock(2, 10.5))
    send(adt("A13", clock(2, 10 + 40 / 60), "E4", "ED", pclass="E", mrn="P4"), clock(2, 10 + 40 / 60))
    send(adt("A06", clock(2, 11), "E4", "ED", mrn="P4"), clock(2, 11))
    send(adt("A02", clock(2, 12), "E4", "ICU", mrn="P4"), clock(2, 12))
    now = clock(2, 14)
    # admitted: ED-1 median of 210, 150, 120 = 150; boarding median of 150, 60, 60 = 60,
    # all three within 4 h -> 100 %; discharged: OP-18 120 (E4's erroneous discharge is gone)
    assert send.live("ed_los_admitted", now, "ED").value == pytest.approx(150.0)
    assert send.live("ed_los_admitted", now, "ED").n == 3
    assert send.live("ed_boarding", now, "ED").value == pytest.approx(60.0)
    assert send.live("ed_boarding_within_4h", now, "ED").value == pytest.approx(100.0)
    discharged = send.live("ed_los_discharged", now, "ED")
    assert (discharged.value, discharged.n) == (pytest.approx(120.0), 1)
    day = (datetime(2026, 3, 2, tzinfo=UTC), datetime(2026, 3, 3, tzinfo=UTC))
    for kpi in ("ed_los_admitted", "ed_boarding", "ed_los_discharged"):
        send.report_equals_stream(kpi, *day, until=clock(4, 0))


def test_left_without_being_seen_follows_op22(places: Places) -> None:
    send = Feed(places)
    # 10 ED arrivals; one leaves before a provider sees her (the ED system sends PV1-36 LWOBS),
    # one is seen and leaves against advice (07: seen, so not OP-22), eight go home (01)
    # OP-22: left without being seen / ED patients = 1 / 10 = 10 %
    for i in range(10):
        visit, arrive = f"W{i}", clock(3, 8) + 20 * i
        send(adt("A04", arrive, visit, "ED", pclass="E"), arrive)
        disposition = "LWOBS" if i == 0 else "07" if i == 1 else "01"
        send(adt("A03", arrive + 90, visit, "ED", pclass="E", disposition=disposition), arrive + 90)
    rate = send.live("ed_lwbs_rate", clock(3, 14), "ED")
    assert (rate.value, rate.numerator, rate.denominator) == (pytest.approx(10.0), 1, 10)


def test_left_without_being_seen_takes_back_a_cancelled_registration(places: Places) -> None:
    send = Feed(places)
    # 4 ED visits (one LWBS) and a fifth registration cancelled as entered in error (A11) after
    # the engine restarted from its snapshot: a cancelled registration is no ED patient, so
    # OP-22 = 1 / 4 = 25 % (without the cancel: 1 / 5 = 20 %), live and in the period report
    for i in range(4):
        visit, arrive = f"C{i}", clock(3, 8) + 20 * i
        send(adt("A04", arrive, visit, "ED", pclass="E"), arrive)
        send(
            adt("A03", arrive + 60, visit, "ED", pclass="E", disposition="LWBS" if i == 0 else "01"),
            arrive + 60,
        )
    send(adt("A04", clock(3, 9), "C9", "ED", pclass="E"), clock(3, 9))
    send(adt("A03", clock(3, 11), "C9", "ED", pclass="E", disposition="01"), clock(3, 11))
    rate = send.live("ed_lwbs_rate", clock(3, 12), "ED")
    assert (rate.numerator, rate.denominator) == (1, 5)
    restarted = Engine(CATALOGUE, places)
    restarted.restore(orjson.loads(orjson.dumps(send.engine.snapshot())))
    send.engine = restarted
    send(adt("A11", clock(3, 11) + 5, "C9", "ED", pclass="E"), clock(3, 11) + 5)
    rate = send.live("ed_lwbs_rate", clock(3, 12), "ED")
    assert (rate.value, rate.numerator, rate.denominator) == (pytest.approx(25.0), 1, 4)
    end = datetime(2026, 3, 3, 12, tzinfo=UTC)
    send.report_equals_stream("ed_lwbs_rate", end - timedelta(days=7), end, clock(3, 14))


def test_fhir_communication_nurse_call_counts_at_its_encounters_unit(places: Places) -> None:
    from connectors.fhir.mapping import FHIRMapper
    from engine.config import FHIRSettings

    fhir = FHIRMapper(places.index(), UTC, FHIRSettings())
    fhir.received = at(200)
    send = Feed(places)

    def post(resource: dict[str, object]) -> None:
        events, _ = fhir.map(resource)
        for event in events:
            send.engine.process(event)
            send.log.append(event)

    def iso(minutes: float) -> str:
        return at(minutes).isoformat()

    # Encounter e1: inpatient on 4W from +0, moved to the ICU at +60 (FHIR location history)
    post(
        {
            "resourceType": "Encounter",
            "id": "e1",
            "status": "in-progress",
            "class": {"code": "IMP"},
            "subject": {"reference": "Patient/p1"},
            "period": {"start": iso(0)},
            "location": [
                {"location": {"reference": "Location/4W"}, "period": {"start": iso(0), "end": iso(60)}},
                {"location": {"reference": "Location/ICU"}, "period": {"start": iso(60)}},
            ],
        }
    )

    def call(cid: str, sent: float, encounter: str) -> None:
        post(
            {
                "resourceType": "Communication",
                "id": cid,
                "status": "completed",
                "category": [{"coding": [{"code": "nurse-call"}]}],
                "subject": {"reference": "Patient/p1"},
                "encounter": {"reference": f"Encounter/{encounter}"},
                "sent": iso(sent),
                "received": iso(sent + 2),
            }
        )

    # c1 before the move: 4W; c2 after it: ICU; c3 names an encounter carescore never saw:
    # the facility only. Each answered in 2 minutes: 100 % within 3 minutes, n 1 on 4W and
    # ICU, n 3 at the facility (window: the 60 minutes up to +80)
    call("c1", 50, "e1")
    call("c2", 70, "e1")
    call("c3", 72, "e-unknown")
    assert {e.unit for e in send.log if e.type == "nursecall.placed"} == {None}  # FHIR: no unit
    live = send.engine.live(at(80).timestamp())
    assert [pick(live, "nurse_call_within_target", u).n for u in ("4W", "ICU")] == [1, 1]
    facility = [s for s in live if s.kpi == "nurse_call_within_target" and s.group.department is None]
    assert [s.n for s in facility] == [3]
    reporter = Reporter(frame_from_records([orjson.loads(dump_event(e)) for e in send.log]), places)
    rows = reporter.report(CATALOGUE["nurse_call_within_target"], at(20), at(80), "unit")
    assert sorted((r.group.unit, r.n) for r in rows if r.group.unit) == [("4W", 1), ("ICU", 1)]


def test_stays_the_census_forgets_leave_the_stay_kpis_too(places: Places) -> None:
    """A discharged stay is remembered 14 days (engine/stays.py DISCHARGED_RETENTION, for a
    late A13 cancel discharge), then forgotten by the census and by every stay KPI with it;
    each later forgotten stay too, wave after wave."""
    send = Feed(places)
    alos = send.engine.by_kpi["average_length_of_stay"]

    def kept() -> set[str]:
        return set(alos.tally.observed)  # type: ignore[attr-defined]

    def admit(visit: str, day: int) -> None:
        send(adt("A01", clock(day, 8), visit, "4W"), clock(day, 8))
        for hour in (9, 10):  # the next advance closes windows: the forgotten stays go then
            send.engine.advance(at(clock(day, hour)).timestamp())

    send(adt("A01", clock(1, 8), "V1", "4W"), clock(1, 8))
    send(adt("A03", clock(2, 8), "V1", "4W", disposition="01"), clock(2, 8))
    send(adt("A01", clock(15, 8), "V2", "4W"), clock(15, 8))
    send(adt("A03", clock(16, 8), "V2", "4W", disposition="01"), clock(16, 8))
    admit("V3", 25)  # 03-25: V1 (out 03-02) is 23 days gone, V2 (out 03-16) 9 days
    assert kept() == {"V2"}  # (a stay still in hospital is observed at its discharge)
    admit("V4", 31)  # 03-31: V2 is 15 days gone
    assert kept() == set()
