"""The HL7 v2 connector over real sockets: framing, ordering, TLS, allow-list, nurse call
(ORU^R40 -> ORA^R41), charges (DFT^P03), cancels, duplicates."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from carescore.serve import Service
from connectors.hl7v2 import messages as m
from connectors.hl7v2.client import MLLPClient, ack_code
from connectors.hl7v2.mapping import MapContext, MappingError, map_message
from connectors.hl7v2.parser import parse
from engine.config import Settings
from engine.events import FinanceEvent, NurseCallEvent
from engine.places import Places

PATIENT = m.Patient("MRN5", "Roe", "Ann", "19600101", "F")
NOW = datetime.now(UTC).replace(microsecond=0)


def visit(unit: str = "4W", number: str = "V1") -> m.Visit:
    return m.Visit(PATIENT, "I", m.Location(unit, "1", "1", "DEMO"), number, "DEMO")


def nurse_call(call: str, phase: str, when: datetime, state: str = "", unit: str = "4W") -> str:
    return m.nurse_call(when, visit(unit), call, phase, state=state)


def test_nurse_call_phases_map_to_placed_acknowledged_and_ended(places: Places) -> None:
    ctx = MapContext(places)
    (placed,) = map_message(parse(nurse_call("C1", "start", NOW)), ctx)
    (acked,) = map_message(parse(nurse_call("C1", "continue", NOW, state="acknowledged")), ctx)
    (ended,) = map_message(parse(nurse_call("C1", "end", NOW)), ctx)
    assert [e.type for e in (placed, acked, ended)] == [
        "nursecall.placed",
        "nursecall.acknowledged",
        "nursecall.ended",  # ended at the bedside: a response (IHE PCD ACM has no "cancelled")
    ]
    assert isinstance(placed, NurseCallEvent) and placed.call_id == "C1" and placed.unit == "4W"


def test_charges_map_amounts_credits_and_procedures(places: Places) -> None:
    segs = [
        m.msh("DFT^P03^DFT_P03", NOW, facility="DEMO", app="BILLING"),
        m.segment("EVN", {1: "P03", 2: m.format_dtm(NOW)}),
        visit().pid(),
        visit().pv1(),
        m.segment(
            "FT1",
            {1: "1", 4: m.format_dtm(NOW), 6: "CG", 7: "LAB1", 10: "2", 12: "45.50", 25: "80053^CMP^CPT"},
        ),
        m.segment("FT1", {1: "2", 4: m.format_dtm(NOW), 6: "CD", 7: "LAB1", 11: "45.50^USD"}),
    ]
    charge, credit = map_message(parse("\r".join(segs) + "\r"), MapContext(places))
    assert isinstance(charge, FinanceEvent) and isinstance(credit, FinanceEvent)
    assert (charge.type, charge.amount, charge.category, charge.procedure_code) == (
        "finance.charge",
        91.0,
        "procedure",
        "80053",
    )
    assert (credit.amount, credit.category, credit.unit) == (-45.5, "charge", "4W")


def dft(*charges: dict[int, str]) -> str:
    """A DFT^P03 for the visit, one FT1 charge (CG, LAB1, now) per dict of further fields."""
    ft1s = [
        m.segment("FT1", {1: str(i), 4: m.format_dtm(NOW), 6: "CG", 7: "LAB1", **fields})
        for i, fields in enumerate(charges, 1)
    ]
    segs = [
        m.msh("DFT^P03^DFT_P03", NOW, facility="DEMO", app="BILLING"),
        m.segment("EVN", {1: "P03", 2: m.format_dtm(NOW)}),
        visit().pid(),
        visit().pv1(),
        *ft1s,
    ]
    return "\r".join(segs) + "\r"


def test_a_charge_whose_unit_amount_times_quantity_overflows_is_refused(places: Places) -> None:
    """FT1-12 1e300 x FT1-10 1e10: each number finite, the amount inf (before: stored, and the
    event log wrote it as null)."""
    with pytest.raises(MappingError) as err:
        map_message(parse(dft({10: "1e10", 12: "1e300"})), MapContext(places))
    assert (err.value.ack, err.value.code, err.value.segment, err.value.field) == ("AE", 102, "FT1", 12)
    assert "not a finite amount" in err.value.reason


def test_a_charge_of_quantity_zero_is_no_amount(places: Places) -> None:
    """FT1-12 unit amount x FT1-10 quantity (HL7 v2.5 FT1): 45.50 x 0 is 0.00, not 45.50 (the
    quantity 0 was taken as 1); an empty FT1-10 is one unit: 45.50."""
    zero, one = map_message(parse(dft({10: "0", 12: "45.50"}, {12: "45.50"})), MapContext(places))
    assert isinstance(zero, FinanceEvent) and isinstance(one, FinanceEvent)
    assert (zero.amount, one.amount) == (0.0, 45.5)


def test_every_mapped_event_is_valid(places: Places) -> None:
    """Mapping builds events without validation for speed; here they must all re-validate."""
    texts = [
        m.adt("A01", NOW, visit(), admit=NOW),
        m.lab_order(NOW, visit(), "O1", ("1", "x"), "S"),
        m.lab_result(
            NOW,
            visit(),
            "O1",
            ("1", "x"),
            "S",
            ordered=NOW,
            collected=NOW,
            received=NOW,
            value="1",
            units="u",
        ),
        nurse_call("C9", "start", NOW),
    ]
    for text in texts:
        for event in map_message(parse(text), MapContext(places)):
            assert type(event).model_validate(event.model_dump()) == event


async def send_raw(port: int, payload: bytes, read: int = 1, timeout: float = 5) -> list[str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    await writer.drain()
    acks = []
    for _ in range(read):
        data = await asyncio.wait_for(reader.readuntil(b"\x1c\r"), timeout)
        acks.append(data[data.index(b"\x0b") + 1 : -2].decode())
    writer.close()
    return acks


def frame(text: str) -> bytes:
    return b"\x0b" + text.encode() + b"\x1c\r"


async def test_framing_junk_oversize_abandoned_and_unterminated(
    settings_for: Callable[..., Settings],
) -> None:
    svc = Service(settings_for(mllp={"port": 0, "max_message_bytes": 2048}))
    await svc.start()
    try:
        port = svc.mllp.port
        good = m.adt("A01", NOW, visit(), admit=NOW)
        # junk before a frame is skipped; the message still gets its AA
        (ack,) = await send_raw(port, b"GARBAGE\r\n" + frame(good))
        assert ack_code(ack) == "AA"
        # oversize: AR naming the limit, the connection stays usable
        huge = good + "NTE|1||" + "x" * 5000 + "\r"
        ack, after = await send_raw(port, frame(huge) + frame(good.replace("DEMO-EMR-", "Z-")), read=2)
        assert ack_code(ack) == "AR" and "2048 byte limit" in ack
        assert ack_code(after) == "AA"
        # a frame abandoned by a new start byte: kept, not acknowledged; the next one is
        (ack,) = await send_raw(
            port, b"\x0bMSH|^~\\&|half a message" + frame(good.replace("DEMO-EMR-", "Y-"))
        )
        assert ack_code(ack) == "AA"
        # a frame cut off by the connection closing: kept as a dead letter
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"\x0bMSH|^~\\&|never finished")
        await writer.drain()
        writer.close()
        await asyncio.sleep(0.3)
        reasons = [d.reason for d in svc.runtime.dead_letters.query(source="mllp")]
        assert any("2048 byte limit" in r for r in reasons)
        assert any("abandoned" in r for r in reasons)
        assert any("closed inside a frame" in r for r in reasons)
    finally:
        await svc.stop()


async def test_idle_connections_are_closed(settings_for: Callable[..., Settings]) -> None:
    svc = Service(settings_for(mllp={"port": 0, "idle_timeout": "300ms"}))
    await svc.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", svc.mllp.port)
        writer.write(b"\x0bMSH|^~\\&|stalled")
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the server
        reasons = [d.reason for d in svc.runtime.dead_letters.query(source="mllp")]
        assert any("idle" in r for r in reasons)
    finally:
        await svc.stop()


async def test_pipelined_messages_are_acknowledged_in_order_across_senders(service: Service) -> None:
    async def sender(n: int) -> list[str]:
        texts = [m.adt("A01", NOW, visit(number=f"S{n}-{i}"), admit=NOW) for i in range(50)]
        ids = [parse(t).control_id for t in texts]
        acks = await send_raw(service.mllp.port, b"".join(frame(t) for t in texts), read=50)
        assert [parse(a).first("MSA").get(2) for a in acks] == ids  # type: ignore[union-attr]
        return acks

    results = await asyncio.gather(*(sender(n) for n in range(8)))
    assert all(ack_code(a) == "AA" for acks in results for a in acks)
    assert service.runtime.engine.events_processed == 400


async def test_same_control_id_with_other_content_is_not_a_duplicate(service: Service) -> None:
    a = m.adt("A01", NOW, visit(number="VA"), admit=NOW, control_id="REUSED1")
    b = m.adt("A01", NOW, visit(number="VB"), admit=NOW, control_id="REUSED1")
    async with MLLPClient("127.0.0.1", service.mllp.port) as client:
        for text in (a, b, a):
            assert ack_code(await client.send(text)) == "AA"
    assert service.runtime.engine.events_processed == 2


async def test_nurse_call_gets_ora_r41(service: Service) -> None:
    async with MLLPClient("127.0.0.1", service.mllp.port) as client:
        reply = parse(await client.send(nurse_call("C7", "start", NOW)))
    assert (reply.message_type, reply.trigger) == ("ORA", "R41")
    assert reply.first("MSA").get(1) == "AA"  # type: ignore[union-attr]


async def test_allow_list_rejects_unknown_senders(settings_for: Callable[..., Settings]) -> None:
    svc = Service(settings_for(mllp={"port": 0, "allowed_facilities": ["DEMO"]}))
    await svc.start()
    try:
        async with MLLPClient("127.0.0.1", svc.mllp.port) as client:
            ok = await client.send(m.adt("A01", NOW, visit(), admit=NOW))
            stranger = m.adt("A01", NOW, visit(), admit=NOW).replace("|DEMO-EMR|DEMO|", "|X|OTHERHOSP|", 1)
            no = await client.send(stranger)
        assert ack_code(ok) == "AA"
        assert ack_code(no) == "AR" and "OTHERHOSP" in no
        err = parse(no).first("ERR")
        assert err is not None and err.get(2, 1) == "MSH" and err.get(2, 3) == "4"
    finally:
        await svc.stop()


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


async def test_tls_listener(settings_for: Callable[..., Settings], tls_files: tuple[Path, Path]) -> None:
    cert, key = tls_files
    svc = Service(settings_for(mllp={"port": 0, "tls": {"cert": cert, "key": key}}))
    await svc.start()
    try:
        context = ssl.create_default_context(cafile=str(cert))
        async with MLLPClient("127.0.0.1", svc.mllp.port, ssl_context=context) as client:
            assert ack_code(await client.send(m.adt("A01", NOW, visit(), admit=NOW))) == "AA"
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError, TimeoutError, OSError)):
            # plain TCP to a TLS port gets no ACK
            await send_raw(svc.mllp.port, frame(m.adt("A01", NOW, visit(number="P"), admit=NOW)), timeout=2)
    finally:
        await svc.stop()


async def test_cancelled_order_is_neither_counted_nor_overdue(service: Service) -> None:
    start = NOW - timedelta(hours=3)
    cancel = m.lab_order(start + timedelta(minutes=5), visit("ICU"), "ORDX", ("1", "Trop"), "S").replace(
        "ORC|NW|", "ORC|CA|"
    )
    async with MLLPClient("127.0.0.1", service.mllp.port) as client:
        assert (
            ack_code(await client.send(m.lab_order(start, visit("ICU"), "ORDX", ("1", "Trop"), "S"))) == "AA"
        )
        assert ack_code(await client.send(cancel)) == "AA"
    op: Any = service.runtime.engine.by_kpi["lab_tat_stat"]
    assert "ORDX" not in op.open and op.cancelled == 1
