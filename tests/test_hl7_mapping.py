from __future__ import annotations

from datetime import UTC, datetime

import pytest

from connectors.hl7v2 import messages as m
from connectors.hl7v2.ack import build_ack
from connectors.hl7v2.mapping import MapContext, MappingError, map_message, message_key
from connectors.hl7v2.parser import parse
from engine.events import EncounterEvent, LabEvent
from engine.places import Places

T = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
PATIENT = m.Patient("MRN7", "Doe", "Jane", "19700101", "F")


def visit(unit: str, room: str = "", bed: str = "", cls: str = "I", number: str = "V1") -> m.Visit:
    return m.Visit(PATIENT, cls, m.Location(unit, room, bed, "DEMO"), number, "DEMO")


def ctx(places: Places) -> MapContext:
    return MapContext(places=places)


def test_admit_maps_place_through_the_places_config(places: Places) -> None:
    text = m.adt("A01", T, visit("4WEST", "401", "B"), admit=T)
    (event,) = map_message(parse(text), ctx(places))
    assert isinstance(event, EncounterEvent)
    assert event.type == "encounter.admit"
    assert (event.facility, event.department, event.unit, event.bed) == (
        "DEMO",
        "medicine",
        "4W",
        "401-B",
    )
    assert event.encounter_id == "V1" and event.patient_id == "MRN7"
    assert event.patient_class == "inpatient"
    assert event.event_time == T and event.admit_time == T
    assert event.source == "hl7v2" and event.source_id.endswith("#0")


def test_transfer_and_discharge(places: Places) -> None:
    transfer = m.adt("A02", T, visit("ICU", "1", "1"), prior=m.Location("4W", "401", "B", "DEMO"))
    (event,) = map_message(parse(transfer), ctx(places))
    assert event.type == "encounter.transfer"
    assert isinstance(event, EncounterEvent)
    assert event.unit == "ICU" and event.prior_unit == "4W"
    discharge = m.adt("A03", T, visit("ICU", "1", "1"), discharge=T, disposition="01")
    (event,) = map_message(parse(discharge), ctx(places))
    assert isinstance(event, EncounterEvent)
    assert event.type == "encounter.discharge" and event.disposition == "01" and event.discharge_time == T


def test_order_and_result_pair_on_the_placer_number(places: Places) -> None:
    ed = visit("ED", "", "3", cls="E", number="V2")
    order = m.lab_order(T, ed, "ORD1", ("6598-7", "Troponin T"), "S")
    (ordered,) = map_message(parse(order), ctx(places))
    assert isinstance(ordered, LabEvent)
    assert ordered.type == "lab.order" and ordered.order_id == "ORD1" and ordered.priority == "stat"
    assert ordered.unit == "ED" and ordered.department == "emergency"
    result = m.lab_result(
        T.replace(hour=10),
        ed,
        "ORD1",
        ("6598-7", "Troponin T"),
        "S",
        ordered=T,
        collected=T.replace(minute=10),
        received=T.replace(minute=20),
        value="12",
        units="ng/L",
    )
    events = map_message(parse(result), ctx(places))
    assert [e.type for e in events] == ["lab.collect", "lab.receive", "lab.result"]
    final = events[-1]
    assert isinstance(final, LabEvent)
    assert (
        final.order_id == "ORD1" and final.result_status == "final" and final.event_time == T.replace(hour=10)
    )
    assert [e.event_time.minute for e in events[:2]] == [10, 20]


@pytest.mark.parametrize(
    ("change", "ack", "code", "segment", "field"),
    [
        (lambda t: t.replace("ADT^A01^ADT_A01", "SIU^S12"), "AR", 200, "MSH", 9),
        (lambda t: t.replace("ADT^A01^ADT_A01", "ADT^A31"), "AR", 201, "MSH", 9),
        (lambda t: t.replace("|2.5.1", "|2.2"), "AR", 203, "MSH", 12),
        (lambda t: t.replace("V1^^^DEMO^VN", ""), "AE", 101, "PV1", 19),
        (
            lambda t: "\r".join(s for s in t.split("\r") if not s.startswith("PV1")),
            "AE",
            100,
            "PV1",
            None,
        ),
        (
            lambda t: t.replace("EVN|A01|20260301090000+0000", "EVN|A01|2026-13-45"),
            "AE",
            102,
            "EVN",
            2,
        ),
    ],
)
def test_bad_messages_say_what_and_where(places: Places, change, ack, code, segment, field) -> None:  # type: ignore[no-untyped-def]
    text = change(m.adt("A01", T, visit("4W", "1", "1")))
    with pytest.raises(MappingError) as err:
        map_message(parse(text), ctx(places))
    assert (err.value.ack, err.value.code, err.value.segment, err.value.field) == (
        ack,
        code,
        segment,
        field,
    )


def test_message_key_separates_reused_control_ids() -> None:
    a = parse(m.adt("A01", T, visit("4W")).replace("DEMO-EMR-", "X-"))
    text_b = m.adt("A01", T, visit("3E"))
    b = parse(text_b.replace(text_b.split("|")[9], a.control_id))
    assert a.control_id == b.control_id
    assert message_key(a) != message_key(b)
    assert message_key(a) == message_key(parse(a.raw))


def test_ack_swaps_sender_and_echoes_control_id(places: Places) -> None:
    msg = parse(m.adt("A01", T, visit("4W")))
    ack = parse(build_ack(msg, "AA"))
    assert ack.msh.get(3) == "CARESCORE" and ack.msh.get(5) == "DEMO-EMR"
    msa = ack.first("MSA")
    assert msa is not None and msa.get(1) == "AA" and msa.get(2) == msg.control_id
    nak = parse(build_ack(msg, "AE", text="PV1-19 missing", error_code=101, segment="PV1", field=19))
    err = nak.first("ERR")
    assert err is not None
    assert err.get(2, 1) == "PV1" and err.get(2, 3) == "19"
    assert err.get(3, 1) == "101" and err.get(4) == "E"
    assert err.get(8) == "PV1-19 missing"
