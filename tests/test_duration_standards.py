"""Duration KPIs as their standards define them, fed through the real connectors.

Every expected value below is worked out by hand from the definition it cites, not from
the code, and every input goes through the real mapping: HL7 v2 text through
connectors.hl7v2 (IHE PCD ACM ORU^R40 nurse calls, ORM/ORU lab orders and results) and FHIR
resources through the FHIR ingest. The definitions:

- Nurse call response (IHE PCD ACM, kpi_defs/nurse_call_response_p90.yaml): from the alarm
  start (call placed) to the first of: acknowledgement (inactivation state acknowledged),
  staff presence in the room, alarm end (the call ended at the bedside). An ACM "end" is a
  response, not a cancellation; the earliest in *event* time wins, whatever order the
  messages arrive in.
- STAT "% resulted within 60 minutes" (CAP Q-Probes order-to-report, Novis 2004 60-minute
  limit): an order never resulted is a miss, not a gap (survivorship).
- In-lab turnaround (CAP Q-Probes intralaboratory TAT; Hawkins 2007 "sample registration to
  result reporting"): specimen receipt in the laboratory to the result, for STAT specimens,
  counted for the ordering unit.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from connectors.deadletters import DeadLetterStore
from connectors.fhir.ingest import FHIRIngest
from connectors.hl7v2 import messages as m
from connectors.hl7v2.mapping import MapContext, map_message
from connectors.hl7v2.parser import parse
from engine.bus import Published
from engine.config import REPO_ROOT
from engine.core import Engine
from engine.definitions import Catalogue, load_catalogue
from engine.eventframe import frame_from_records
from engine.events import EventBase, LabEvent, dump_event
from engine.places import Places
from engine.reports import Reporter
from engine.samples import Sample

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)  # 08:00, on a 5-minute pane boundary
W4 = ("DEMO", "medicine", "4W")
ICU = ("DEMO", "critical_care", "ICU")
PATIENT = m.Patient("MRN77", "Doe", "Jane", "19500101", "F")


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def visit(unit: str = "4W") -> m.Visit:
    return m.Visit(PATIENT, "I", m.Location(unit, "12", "1", "DEMO"), "V77", "DEMO")


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return load_catalogue(REPO_ROOT / "kpi_defs")


class Hospital:
    """An engine fed through the real HL7 v2 / FHIR mapping, keeping what it was sent."""

    def __init__(self, catalogue: Catalogue, places: Places):
        self.places = places
        self.engine = Engine(catalogue, places)
        self.ctx = MapContext(places)
        self.events: list[EventBase] = []
        self.closed: list[Sample] = []

    def hl7(self, text: str, arrives: float) -> list[EventBase]:
        """One message, received at minute `arrives` (its events keep their own times)."""
        mapped = map_message(parse(text), self.ctx.at(at(arrives)))
        for event in mapped:
            self.engine.process(event)
        self.events += mapped
        return mapped

    def take(self, events: list[EventBase]) -> None:
        for event in events:
            self.engine.process(event)
        self.events += events

    def advance(self, minutes: float) -> None:
        self.closed += self.engine.windows(self.engine.advance(at(minutes).timestamp()))

    def live(self, kpi: str, minutes: float, key: tuple[str, str, str]) -> Sample:
        return next(
            s for s in self.engine.live(at(minutes).timestamp()) if s.kpi == kpi and s.group.key == key
        )

    def window(self, kpi: str, start: float, end: float, key: tuple[str, str, str]) -> Sample:
        return next(
            s
            for s in self.closed
            if s.kpi == kpi and s.group.key == key and s.window.start == at(start) and s.window.end == at(end)
        )

    def report(self, kpi: Any, start: float, end: float, key: tuple[str, str, str]) -> Any:
        frame = frame_from_records([orjson.loads(dump_event(e)) for e in self.events])
        rows = Reporter(frame, self.places).report(kpi, at(start), at(end), "unit")
        return next(r for r in rows if r.group.key == key)


# -- nurse calls (IHE PCD ACM ORU^R40) ---------------------------------------------------------


def call(call_id: str, phase: str, minutes: float, state: str = "") -> str:
    return m.nurse_call(at(minutes), visit(), call_id, phase, state=state)


def presence(call_id: str, minutes: float) -> str:
    """Staff presence registered in the room, as presence-badge nurse call systems send it in
    the alert's ORU^R40 (an OBX naming staff presence; not an ACM-defined observation)."""
    segs = [
        m.msh("ORU^R40^ORU_R40", at(minutes), facility="DEMO", app="NURSECALL"),
        visit().pid(),
        visit().pv1(),
        m.segment(
            "OBR",
            {1: "1", 3: f"{call_id}^NURSECALL", 4: "196616^MDC_EVT_ALARM^MDC", 7: m.format_dtm(at(minutes))},
        ),
        m.segment("OBX", {1: "1", 2: "ST", 3: "STAFF_PRESENCE^Staff presence^L", 5: "present", 11: "F"}),
    ]
    return "\r".join(segs) + "\r"


def test_a_call_answered_at_the_bedside_counts_at_its_end(catalogue: Catalogue, places: Places) -> None:
    """Placed 08:00, ended in the room 08:04, never acknowledged on a device. ACM's alarm end
    is the call being over in the room: a response. Response = 08:04 - 08:00 = 4 minutes
    (before, the end was mapped to a cancel and this call, slow or not, vanished)."""
    h = Hospital(catalogue, places)
    h.hl7(call("C1", "start", 0), 0)
    (ended,) = h.hl7(call("C1", "end", 4), 4)
    assert ended.type == "nursecall.ended"
    p90 = h.live("nurse_call_response_p90", 5, W4)
    assert (p90.n, p90.value) == (1, pytest.approx(4.0))  # the p90 of one value is that value
    assert p90.status == "no_data"  # 1 call < the 20 a p90 needs: shown, never a breach
    within = h.live("nurse_call_within_target", 5, W4)
    assert (within.n, within.value) == (1, 0.0)  # 4 min > 3 min: a miss, not a gap


def test_a_call_acknowledged_then_ended_counts_at_the_acknowledgement(
    catalogue: Catalogue, places: Places
) -> None:
    """Placed 08:00, acknowledged 08:02 (inactivation state acknowledged), ended 08:07.
    Response = first of the ends = 08:02 - 08:00 = 2 minutes; the later end changes nothing."""
    h = Hospital(catalogue, places)
    h.hl7(call("C2", "start", 0), 0)
    h.hl7(call("C2", "continue", 2, state="acknowledged"), 2)
    h.hl7(call("C2", "end", 7), 7)
    p90 = h.live("nurse_call_response_p90", 8, W4)
    assert (p90.n, p90.value) == (1, pytest.approx(2.0))
    within = h.live("nurse_call_within_target", 8, W4)
    assert (within.n, within.value) == (1, 100.0)  # 2 min <= 3 min


def test_staff_arriving_before_the_acknowledgement_counts_at_arrival(
    catalogue: Catalogue, places: Places
) -> None:
    """Placed 08:00, staff presence in the room 08:01:30, acknowledged 08:03, ended 08:06.
    Response = first of the three = 1.5 minutes; placed -> staff in the room = 1.5 minutes."""
    h = Hospital(catalogue, places)
    h.hl7(call("C3", "start", 0), 0)
    (arrived,) = h.hl7(presence("C3", 1.5), 1.5)
    assert arrived.type == "nursecall.arrived"
    h.hl7(call("C3", "continue", 3, state="acknowledged"), 3)
    h.hl7(call("C3", "end", 6), 6)
    assert h.live("nurse_call_response_p90", 7, W4).value == pytest.approx(1.5)
    in_room = h.live("nurse_call_presence_p90", 7, W4)
    assert (in_room.n, in_room.value) == (1, pytest.approx(1.5))


def test_the_earliest_end_wins_whatever_order_the_messages_arrive_in(
    catalogue: Catalogue, places: Places
) -> None:
    """Placed 08:00; the end (08:08) reaches carescore first, at 08:08; the acknowledgement,
    which happened at 08:05, comes in at 08:09 (a delayed interface), inside the 2-minute
    grace of the window that holds it. Response = 08:05 - 08:00 = 5 minutes, in the live
    value, in the closed window and in the period report; the end is not counted as well."""
    h = Hospital(catalogue, places)
    h.hl7(call("C4", "start", 0), 0)
    h.hl7(call("C4", "end", 8), 8)
    assert h.live("nurse_call_response_p90", 8.5, W4).value == pytest.approx(8.0)  # known so far
    h.hl7(call("C4", "continue", 5, state="acknowledged"), 9)
    assert h.live("nurse_call_response_p90", 9.5, W4).value == pytest.approx(5.0)
    h.advance(20)
    # the value lands in the pane of its end time (08:05-08:10); the window 07:10-08:10 holds it
    closed = h.window("nurse_call_response_p90", -50, 10, W4)
    assert (closed.n, closed.value) == (1, pytest.approx(5.0))
    row = h.report(catalogue["nurse_call_response_p90"], -50, 10, W4)
    assert (row.n, row.value) == (1, pytest.approx(5.0))


def test_a_call_explicitly_cancelled_before_an_answer_is_left_out(
    catalogue: Catalogue, places: Places
) -> None:
    """Placed 08:00, withdrawn 08:01 (a sender's explicit 'cancelled' phase; ACM has none),
    then an end 08:02 as the call is cleared: the cancel came before any answer, so the
    call is neither a response nor overdue."""
    h = Hospital(catalogue, places)
    h.hl7(call("C5", "start", 0), 0)
    (cancelled,) = h.hl7(call("C5", "cancelled", 1), 1)
    assert cancelled.type == "nursecall.cancelled"
    h.hl7(call("C5", "end", 2), 2)
    assert h.live("nurse_call_response_p90", 30, W4).n == 0


def test_an_unanswered_call_is_in_the_closed_windows_too(catalogue: Catalogue, places: Places) -> None:
    """Placed 08:00, never answered. At the end of the window 07:20-08:20 it has been open
    20 minutes (past the 10-minute timeout): it counts at 20 minutes, a miss for "% within 3
    minutes". Given up after 4 hours (12:00), it counts once more, at 240 minutes, in the
    windows that hold 12:00."""
    h = Hospital(catalogue, places)
    h.hl7(call("C6", "start", 0), 0)
    h.advance(5 * 60)
    closed = h.window("nurse_call_response_p90", -40, 20, W4)
    assert (closed.n, closed.value, closed.overdue) == (1, pytest.approx(20.0), 1)
    assert h.window("nurse_call_within_target", -40, 20, W4).value == 0.0
    row = h.report(catalogue["nurse_call_response_p90"], -40, 20, W4)
    assert (row.n, row.value) == (1, pytest.approx(20.0))
    expired = h.window("nurse_call_response_p90", 4 * 60 - 55, 4 * 60 + 5, W4)
    assert (expired.n, expired.value, expired.overdue) == (1, pytest.approx(240.0), 0)


# -- lab: STAT orders never resulted (CAP order-to-report, 60-minute limit) -------------------


TROPONIN = ("10839-9", "Troponin I")


def order(order_id: str, minutes: float) -> str:
    return m.lab_order(at(minutes), visit("ICU"), order_id, TROPONIN, "S")


def result(order_id: str, ordered: float, minutes: float) -> str:
    return m.lab_result(
        at(minutes),
        visit("ICU"),
        order_id,
        TROPONIN,
        "S",
        ordered=at(ordered),
        collected=at(ordered + 5),
        received=at(ordered + 10),
        value="0.01",
        units="ng/mL",
    )


def test_a_stat_order_never_resulted_is_a_miss_in_the_closed_window(
    catalogue: Catalogue, places: Places
) -> None:
    """ICU STAT orders (ORM^O01, ORC-7.6 = S) and results (ORU^R01, OBR-22, OBR-25 = F):

        A ordered 08:00, resulted 08:30 -> 30 min
        B ordered 08:10, resulted 08:50 -> 40 min
        C ordered 08:20, resulted 09:10 -> 50 min
        D ordered 08:00, resulted 09:10 -> 70 min (late)
        E ordered 07:50, never resulted
        F ordered 08:05, cancelled 08:20 (ORC-1 = CA): not an order to measure

    Window 08:15-09:15 (sliding 60 min): resulted in it A, B, C, D; open at 09:15 and older
    than the 60-minute limit: E (85 min). Within 60 min: A, B, C = 3 of 5 -> 60 %, below the
    70 % critical threshold. Counting completed orders only would give 3 of 4 = 75 %.
    E stays a miss in every window while it is open (at 12:00 it is the window's only order:
    0 %), and once it is given up after 12 hours (19:50) it counts once, at 720 minutes."""
    h = Hospital(catalogue, places)
    h.hl7(order("E", -10), -10)
    h.hl7(order("A", 0), 0)
    h.hl7(order("D", 0), 0)
    h.hl7(order("F", 5), 5)
    h.hl7(order("B", 10), 10)
    h.hl7(order("C", 20), 20)
    h.hl7(order("F", 20).replace("ORC|NW|", "ORC|CA|"), 20)
    h.hl7(result("A", 0, 30), 30)
    h.hl7(result("B", 10, 50), 50)
    h.hl7(result("C", 20, 70), 70)
    h.hl7(result("D", 0, 70), 70)
    h.advance(12 * 60 + 30)
    kpi = "lab_tat_stat_within_target"
    window = h.window(kpi, 15, 75, ICU)
    assert (window.n, window.numerator, window.value) == (5, 3.0, pytest.approx(60.0))
    assert window.status == "critical"
    row = h.report(catalogue[kpi], 15, 75, ICU)
    assert (row.n, row.numerator, row.value) == (5, 3.0, pytest.approx(60.0))
    noon = h.window(kpi, 3 * 60, 4 * 60, ICU)
    assert (noon.n, noon.value) == (1, 0.0)
    given_up = h.window(kpi, 10 * 60 + 55, 11 * 60 + 55, ICU)  # 18:55-19:55 holds 19:50
    assert (given_up.n, given_up.value) == (1, 0.0)
    p90 = h.window("lab_tat_stat", 10 * 60 + 55, 11 * 60 + 55, ICU)
    assert p90.value == pytest.approx(720.0)


def test_an_hl7_receipt_without_a_priority_takes_its_orders(catalogue: Catalogue, places: Places) -> None:
    """The STAT order states its priority (ORC-7.6 = S); the specimen status message (ORC-1 =
    SC, OBR-14 received 08:12) and the result (OBR-22 08:30) do not. In-lab = receipt to
    result = 08:30 - 08:12 = 18 minutes, STAT, for the ICU (before, the SC message defaulted
    to routine and the receipt left the STAT in-lab KPI)."""
    h = Hospital(catalogue, places)
    h.hl7(order("G", 0), 0)
    status = "\r".join(
        [
            m.msh("ORM^O01^ORM_O01", at(12), facility="DEMO"),
            visit("ICU").pid(),
            visit("ICU").pv1(),
            m.segment("ORC", {1: "SC", 2: "G^DEMO-EMR", 5: "IP"}),
            m.segment("OBR", {1: "1", 2: "G^DEMO-EMR", 4: "10839-9^Troponin I^LN", 14: m.format_dtm(at(12))}),
        ]
    )
    (received,) = h.hl7(status + "\r", 12)
    assert isinstance(received, LabEvent) and (received.type, received.priority) == ("lab.receive", "stat")
    with_priority = m.lab_result(
        at(30),
        visit("ICU"),
        "G",
        TROPONIN,
        "S",
        ordered=at(0),
        collected=at(5),
        received=at(12),
        value="0.01",
        units="ng/mL",
    )
    plain = with_priority.replace("^^^^^S", "").replace("^LN|S|", "^LN||")  # no TQ1, ORC-7, OBR-5
    obr = next(seg for seg in plain.split("\r") if seg.startswith("OBR|"))
    assert obr.split("|")[5] == ""  # the result message states no priority
    (_, _, done) = h.hl7(plain, 30)
    assert isinstance(done, LabEvent) and done.type == "lab.result" and done.priority == "stat"
    in_lab = h.live("lab_tat_inlab_stat", 31, ICU)
    assert (in_lab.n, in_lab.value) == (1, pytest.approx(18.0))


# -- lab: FHIR specimen receipt for a STAT ServiceRequest -------------------------------------


class Sink:
    def __init__(self) -> None:
        self.events: list[EventBase] = []

    async def publish(self, message_key: str, events: list[EventBase]) -> Published:
        self.events += events
        return Published.accepted


def service_request(rid: str, minutes: float, unit: str = "ICU") -> dict[str, Any]:
    return {
        "resourceType": "ServiceRequest",
        "id": rid,
        "status": "active",
        "intent": "order",
        "priority": "stat",
        "category": [{"coding": [{"system": "http://snomed.info/sct", "code": "108252007"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "10839-9"}]},
        "subject": {"reference": "Patient/p1"},
        "authoredOn": at(minutes).isoformat(),
        "locationReference": [{"reference": f"Location/{unit}"}],
    }


def specimen(sid: str, request: str, collected: float, received: float) -> dict[str, Any]:
    return {
        "resourceType": "Specimen",
        "id": sid,
        "subject": {"reference": "Patient/p1"},
        "request": [{"reference": f"ServiceRequest/{request}"}],
        "receivedTime": at(received).isoformat(),
        "collection": {"collectedDateTime": at(collected).isoformat()},
    }


def report(did: str, request: str, issued: float) -> dict[str, Any]:
    return {
        "resourceType": "DiagnosticReport",
        "id": did,
        "status": "final",
        "category": [
            {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "LAB"}]}
        ],
        "code": {"coding": [{"system": "http://loinc.org", "code": "10839-9"}]},
        "basedOn": [{"reference": f"ServiceRequest/{request}"}],
        "subject": {"reference": "Patient/p1"},
        "issued": at(issued).isoformat(),
    }


@pytest.fixture
def fhir(places: Places, tmp_path: Path) -> tuple[FHIRIngest, Sink]:
    sink = Sink()
    return FHIRIngest(sink, DeadLetterStore(tmp_path / "letters.db"), places.index(), UTC), sink


async def post(ingest: FHIRIngest, resource: dict[str, Any]) -> dict[str, Any]:
    status, answer = await ingest.post(orjson.dumps(resource), resource["resourceType"])
    assert status < 300, answer
    return answer


async def test_a_fhir_specimen_receipt_lands_in_the_stat_in_lab_kpi_of_its_unit(
    fhir: tuple[FHIRIngest, Sink], catalogue: Catalogue, places: Places
) -> None:
    """ServiceRequest (priority stat, ICU) authored 08:00; Specimen collected 08:10, received
    in the laboratory 08:25; DiagnosticReport issued 08:47. Specimen and report carry no
    priority or unit of their own: they take the ServiceRequest's. In-lab (receipt -> result)
    = 08:47 - 08:25 = 22 minutes, STAT, ICU; order -> result = 47 minutes."""
    ingest, sink = fhir
    await post(ingest, service_request("sr-1", 0))
    await post(ingest, specimen("sp-1", "sr-1", 10, 25))
    await post(ingest, report("dr-1", "sr-1", 47))
    received = next(e for e in sink.events if e.type == "lab.receive")
    assert (received.priority, received.place) == ("stat", ICU)  # type: ignore[attr-defined]
    h = Hospital(catalogue, places)
    h.take(sink.events)
    in_lab = h.live("lab_tat_inlab_stat", 50, ICU)
    assert (in_lab.n, in_lab.value) == (1, pytest.approx(22.0))
    assert h.live("lab_tat_stat", 50, ICU).value == pytest.approx(47.0)
    routine = [s for s in h.engine.live(at(50).timestamp()) if s.kpi == "lab_tat_inlab_routine"]
    assert all(s.n == 0 for s in routine)  # not a routine specimen


async def test_a_bundle_may_send_the_specimen_before_its_order(
    fhir: tuple[FHIRIngest, Sink], catalogue: Catalogue, places: Places
) -> None:
    """The same order in one collection Bundle with the Specimen first (received 09:05) and
    the report (09:20) before the ServiceRequest: in-lab = 09:20 - 09:05 = 15 min, ICU."""
    ingest, sink = fhir
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"resource": specimen("sp-2", "sr-2", 60, 65)},
            {"resource": report("dr-2", "sr-2", 80)},
            {"resource": service_request("sr-2", 55)},
        ],
    }
    status, _ = await ingest.post(orjson.dumps(bundle))
    assert status == 200
    h = Hospital(catalogue, places)
    h.take(sink.events)
    in_lab = h.live("lab_tat_inlab_stat", 81, ICU)
    assert (in_lab.n, in_lab.value) == (1, pytest.approx(15.0))


async def test_a_specimen_of_an_unseen_order_counts_in_no_in_lab_kpi(
    fhir: tuple[FHIRIngest, Sink], catalogue: Catalogue, places: Places
) -> None:
    """A Specimen naming a ServiceRequest carescore never received: its priority is unknown,
    so it counts neither as STAT nor as routine, and the outcome says why."""
    ingest, sink = fhir
    answer = await post(ingest, specimen("sp-3", "sr-unknown", 0, 10))
    assert any("sr-unknown has not been received" in i["diagnostics"] for i in answer["issue"])
    received = next(e for e in sink.events if e.type == "lab.receive")
    assert (received.priority, received.unit) == (None, None)  # type: ignore[attr-defined]


# -- FHIR nurse calls, mapped the same way -----------------------------------------------------


def task(
    tid: str, status: str, authored: float, modified: float, acted: float | None = None
) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Task",
        "id": tid,
        "status": status,
        "intent": "order",
        "code": {"coding": [{"code": "nurse-call"}]},
        "for": {"reference": "Patient/p1"},
        "location": {"reference": "Location/4W"},
        "authoredOn": at(authored).isoformat(),
        "lastModified": at(modified).isoformat(),
    }
    if acted is not None:
        resource["executionPeriod"] = {"start": at(acted).isoformat(), "end": at(modified).isoformat()}
    return resource


async def test_fhir_nurse_call_tasks_answer_like_acm_calls(
    fhir: tuple[FHIRIngest, Sink], catalogue: Catalogue, places: Places
) -> None:
    """Task T1 authored 08:00, completed 08:06 with no earlier action recorded: dealt with at
    the bedside, response 6 minutes. Task T2 authored 08:00, first action 08:02
    (executionPeriod.start), completed 08:09: response 2 minutes. Task T3 cancelled: left out.
    p90 of (2, 6) = 2 + 0.9 x 4 = 5.6 minutes (linear interpolation)."""
    ingest, sink = fhir
    await post(ingest, task("T1", "completed", 0, 6))
    await post(ingest, task("T2", "completed", 0, 9, acted=2))
    await post(ingest, task("T3", "cancelled", 0, 1))
    h = Hospital(catalogue, places)
    h.take(sink.events)
    p90 = h.live("nurse_call_response_p90", 10, W4)
    assert (p90.n, p90.value) == (2, pytest.approx(5.6))
