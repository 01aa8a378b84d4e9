"""The HL7 v2 listener against hostile or broken peers, over real sockets to a running
carescore (issue 12): a message that meets a bug, a connection flood, a slow-drip sender, a
real feed's unused trigger events, and control characters smuggled into codes.

Every check reads what a peer or an operator sees: ACK bytes on the socket, the REST API,
/metrics over HTTP, the dead-letter store, the log."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import resource
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from carescore.serve import Service
from connectors.hl7v2 import mapping
from connectors.hl7v2 import messages as m
from connectors.hl7v2.client import MLLPClient, ack_code
from connectors.hl7v2.parser import Message, is_batch, parse, split_batch
from connectors.hl7v2.receiver import decode
from engine.config import Settings
from tests.test_e2e_embedded import api, stat_pair, value_of, wait_for
from tests.test_hl7_connector import frame
from tests.test_hl7_corpus import _acks, corpus

PATIENT = m.Patient("MRN5", "Roe", "Ann", "19600101", "F")
NOW = datetime.now(UTC).replace(microsecond=0)
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def visit(unit: str = "4W", number: str = "V1", facility: str = "DEMO") -> m.Visit:
    return m.Visit(PATIENT, "I", m.Location(unit, "1", "1", facility), number, "DEMO")


async def metric(svc: Service, name: str, **labels: str) -> float:
    """A sample of /metrics, read over HTTP as Prometheus would (0 when absent)."""
    text = await api(svc, "/metrics")
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


async def read_ack(reader: asyncio.StreamReader, timeout: float = 10) -> str:
    data = await asyncio.wait_for(reader.readuntil(b"\x1c\r"), timeout)
    return data[data.index(b"\x0b") + 1 : -2].decode()


def msa(ack: str) -> tuple[str, str]:
    seg = parse(ack).first("MSA")
    assert seg is not None, ack
    return seg.get(1), seg.get(2, unescaped=False)


def err(ack: str) -> tuple[str, str]:
    """(ERR-3.1 code, ERR-8 text)."""
    seg = parse(ack).first("ERR")
    assert seg is not None, ack
    return seg.get(3, 1), seg.get(8)


async def hung_up(reader: asyncio.StreamReader, timeout: float = 10) -> None:
    """Wait until the server closes the connection: EOF, or a reset when bytes the peer sent
    were still unread in the server's socket as it closed (the kernel answers those with RST)."""
    with contextlib.suppress(ConnectionResetError):
        assert await asyncio.wait_for(reader.read(), timeout) == b""


async def started(settings: Settings) -> Service:
    svc = Service(settings)
    await svc.start()
    return svc


# -- (a) a message that meets a bug --------------------------------------------------------------


async def test_a_bug_in_mapping_answers_ae_207_keeps_the_message_and_the_connection(
    settings_for: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """No real input makes the mapping raise (a 140,000-message fuzz of corpus and builder
    messages found none), so the fault is injected: DFT^P03's mapping raises RuntimeError
    inside the running server. Before the fix the connection closed with no ACK at all."""
    secret = "MRN-SECRET-42 Roe"

    def broken(mapper: Any) -> None:
        raise RuntimeError(f"a bug met on {secret}")

    svc = await started(settings_for())
    try:
        monkeypatch.setitem(mapping.MESSAGE_TYPES["DFT"], "P03", broken)
        before = await metric(svc, "carescore_hl7_internal_errors_total", stage="map")
        charge = m.procedure_charge(NOW, visit(), ("80053", "CMP"), 45.5)
        charge2 = charge.replace("BILLING-", "BILLING2-")
        admits = [m.adt("A01", NOW, visit(number=f"VA{i}"), admit=NOW) for i in range(2)]
        caplog.set_level(logging.ERROR, logger="connectors.hl7v2.receiver")
        reader, writer = await asyncio.open_connection("127.0.0.1", svc.mllp.port)
        # one at a time, as an interface engine sends: the AE, then the next message's AA
        writer.write(frame(charge))
        first = await read_ack(reader)
        writer.write(frame(admits[0]))
        second = await read_ack(reader)
        # pipelined on the same socket: the failing message does not stall the one after it
        writer.write(frame(charge2) + frame(admits[1]))
        third, fourth = await read_ack(reader), await read_ack(reader)
        writer.close()

        assert msa(first) == ("AE", parse(charge).control_id)
        code, text = err(first)
        assert code == "207" and "internal error" in text
        for leaked in ("MRN5", "Roe", "SECRET", "RuntimeError", "bug met"):
            assert leaked not in first, leaked  # neither the message nor the exception's text
        assert msa(second) == ("AA", parse(admits[0]).control_id)
        assert msa(third)[0] == "AE" and msa(fourth) == ("AA", parse(admits[1]).control_id)

        letters = [d for d in svc.runtime.dead_letters.query(source="hl7v2") if "internal error" in d.reason]
        assert sorted(d.raw.decode() for d in letters) == sorted([charge, charge2])
        assert all("RuntimeError" in d.reason and "AE 207" in d.reason for d in letters)
        logged = [r for r in caplog.records if r.levelno == logging.ERROR and r.exc_info]
        assert len(logged) == 2 and all(r.exc_info and r.exc_info[0] is RuntimeError for r in logged)
        assert await metric(svc, "carescore_hl7_internal_errors_total", stage="map") == before + 2
    finally:
        await svc.stop()


async def test_a_handler_that_raises_or_fails_later_is_answered_at_the_mllp_layer(
    settings_for: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    """The listener's own guard, under any handler: one that raises at once and one whose
    future ACK fails are each answered AE 207 and kept; the next frame is served normally."""
    svc = await started(settings_for())
    try:
        real = svc.mllp.handler

        def handler(raw: bytes) -> Any:
            if b"RAISE-NOW" in raw:
                raise ValueError("handler bug")
            if b"FAIL-LATER" in raw:
                failed: asyncio.Future[str] = asyncio.get_running_loop().create_future()
                failed.set_exception(KeyError("late bug"))
                return failed
            return real(raw)

        svc.mllp.handler = handler
        before = await metric(svc, "carescore_hl7_internal_errors_total", stage="mllp")
        now_, later, fine = (
            m.adt("A01", NOW, visit(number=v), admit=NOW, control_id=c)
            for v, c in (("V1", "RAISE-NOW"), ("V2", "FAIL-LATER"), ("V3", "FINE-1"))
        )
        caplog.set_level(logging.ERROR, logger="connectors.hl7v2.mllp")
        reader, writer = await asyncio.open_connection("127.0.0.1", svc.mllp.port)
        writer.write(frame(now_) + frame(later) + frame(fine))
        acks = [await read_ack(reader) for _ in range(3)]
        writer.close()
        assert [msa(a) for a in acks] == [("AE", "RAISE-NOW"), ("AE", "FAIL-LATER"), ("AA", "FINE-1")]
        assert all(err(a)[0] == "207" and "internal error" in err(a)[1] for a in acks[:2])
        kept = {d.raw.decode() for d in svc.runtime.dead_letters.query(source="mllp")}
        assert {now_, later} <= kept
        assert sum(1 for r in caplog.records if r.levelno == logging.ERROR and r.exc_info) == 2
        assert await metric(svc, "carescore_hl7_internal_errors_total", stage="mllp") == before + 2
    finally:
        await svc.stop()


# -- (b) a connection flood ----------------------------------------------------------------------


class Peer(asyncio.Protocol):
    """A bare client connection that only notices when the server hangs up."""

    def __init__(self) -> None:
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


async def connect(port: int) -> tuple[asyncio.Transport, Peer]:
    transport, peer = await asyncio.get_running_loop().create_connection(Peer, "127.0.0.1", port)
    return transport, peer  # type: ignore[return-value]


def refused_so_far() -> float:
    return REGISTRY.get_sample_value("carescore_mllp_connections_refused_total") or 0.0


def refusal_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == "connectors.hl7v2.mllp" and r.levelno == logging.WARNING and "refused" in r.getMessage()
    ]


async def until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    """Wait for a condition on this process's state (polled; no fixed sleep)."""

    async def check() -> bool:
        return condition()

    await wait_for(check, timeout)


async def test_connections_beyond_max_connections_are_refused_with_one_warning(
    settings_for: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    svc = await started(settings_for(mllp={"port": 0, "max_connections": 20}))
    caplog.set_level(logging.WARNING, logger="connectors.hl7v2.mllp")
    try:
        port = svc.mllp.port
        before = await metric(svc, "carescore_mllp_connections_refused_total")
        sender = MLLPClient("127.0.0.1", port)
        await sender.connect()  # a real sender, first in: within the limit
        peers = [await connect(port) for _ in range(199)]  # 200 sockets in all, held by the client
        await until(lambda: sum(p.closed.done() for _, p in peers) == 180)
        kept = [t for t, p in peers if not p.closed.done()]
        assert len(kept) == 19 and len(svc.mllp.connections) == 20
        assert await metric(svc, "carescore_mllp_connections_refused_total") == before + 180
        (warning,) = refusal_warnings(caplog)  # one line for the burst, not 180
        assert "max_connections" in warning.getMessage()
        # an allowed connection is still served, and the kept ones are still open
        assert ack_code(await sender.send(m.adt("A01", NOW, visit(number="VB"), admit=NOW))) == "AA"
        assert not any(t.is_closing() for t in kept) and len(svc.mllp.connections) == 20
        await sender.close()
        for t, _ in peers:
            t.close()
    finally:
        await svc.stop()


async def test_ten_thousand_connections_against_the_default_limit_do_not_break_the_process(
    settings_for: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    """10,000 connection attempts against the default max_connections (256): 256 are held
    open, the other 9,744 are refused and counted, one warning is logged, and a sender
    already connected is still answered. Attempts go in waves of 100 (the listen backlog),
    refused sockets are closed as they are refused, so the client side needs few descriptors."""
    settings = settings_for()
    limit = settings.mllp.max_connections
    assert limit == 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2 * limit + 1000:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 2 * limit + 1000), hard))
    svc = await started(settings)
    caplog.set_level(logging.WARNING)
    try:
        port = svc.mllp.port
        before = await metric(svc, "carescore_mllp_connections_refused_total")
        sender = MLLPClient("127.0.0.1", port)
        await sender.connect()  # a real sender, connected before the flood
        held: list[tuple[asyncio.Transport, Peer]] = []
        attempts = 1  # the sender's
        while attempts < 10_000:
            refused_before_wave = max(0, attempts - limit)
            wave = [await connect(port) for _ in range(min(100, 10_000 - attempts))]
            attempts += len(wave)
            refused_in_wave = max(0, attempts - limit) - refused_before_wave

            def wave_settled(n: int = refused_in_wave, w: list[tuple[Any, Peer]] = wave) -> bool:
                return sum(p.closed.done() for _, p in w) == n

            await until(wave_settled)
            for transport, peer in wave:
                if peer.closed.done():
                    transport.close()  # refused: release the client's descriptor
                else:
                    held.append((transport, peer))
        assert len(held) == limit - 1 and len(svc.mllp.connections) == limit
        assert refused_so_far() - before == 10_000 - limit
        assert await metric(svc, "carescore_mllp_connections_refused_total") == before + 10_000 - limit
        assert len(refusal_warnings(caplog)) == 1
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # no accept() failure
        # the process still works: the sender connected before the flood is answered ...
        assert ack_code(await sender.send(m.adt("A01", NOW, visit(number="VF"), admit=NOW))) == "AA"
        await sender.close()
        # ... and once connections close, new ones are accepted again
        for transport, _ in held:
            transport.close()
        await until(lambda: not svc.mllp.connections)
        async with MLLPClient("127.0.0.1", port) as client:
            assert ack_code(await client.send(m.adt("A01", NOW, visit(number="VG"), admit=NOW))) == "AA"
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{svc.api_port}") as http:
            assert (await http.get("/healthz")).status_code == 200
    finally:
        await svc.stop()


# -- (c) a slow drip -----------------------------------------------------------------------------


async def test_a_frame_dripped_a_byte_at_a_time_is_cut_off_at_frame_timeout(
    settings_for: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    svc = await started(settings_for(mllp={"port": 0, "frame_timeout": "1s"}))
    caplog.set_level(logging.WARNING, logger="connectors.hl7v2.mllp")
    try:
        port = svc.mllp.port
        assert svc.mllp.idle_timeout == 300  # the idle timer alone would never fire here
        before = await metric(svc, "carescore_mllp_framing_errors_total", kind="frame_timeout")
        payload = frame(m.adt("A01", NOW, visit(number="VD"), admit=NOW))
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        loop = asyncio.get_running_loop()
        sent: list[float] = []

        async def drip() -> None:  # one byte every 0.2 s: the whole frame would take a minute
            for byte in payload:
                writer.write(bytes([byte]))
                await writer.drain()
                sent.append(loop.time())
                await asyncio.sleep(0.2)

        dripping = asyncio.create_task(drip())
        await hung_up(reader)
        closed = loop.time()
        dripping.cancel()
        assert 1.0 <= closed - sent[0] < 5.0, sent
        # bytes were still coming: the last one less than frame_timeout before the hang-up,
        # so no timer that restarts on every byte (idle_timeout) could have fired
        assert len(sent) >= 3 and closed - sent[-1] < 1.0, (closed, sent)
        letters = [d for d in svc.runtime.dead_letters.query(source="mllp") if "frame_timeout" in d.reason]
        (letter,) = letters  # the partial frame: every byte that came before the cut
        assert len(letter.raw) >= 4 and payload[1:].startswith(letter.raw)
        assert any("frame_timeout" in r.getMessage() for r in caplog.records)
        assert await metric(svc, "carescore_mllp_framing_errors_total", kind="frame_timeout") == before + 1

        # the deadline is per frame: a frame completed in 0.6 s is taken, a pause between
        # frames longer than frame_timeout is no reason to hang up (idle_timeout governs that)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        slow = frame(m.adt("A01", NOW, visit(number="VE"), admit=NOW))
        for part in (slow[:50], slow[50:100], slow[100:]):
            writer.write(part)
            await asyncio.sleep(0.2)
        assert ack_code(await read_ack(reader)) == "AA"
        await asyncio.sleep(1.5)
        writer.write(frame(m.adt("A01", NOW, visit(number="VE2"), admit=NOW)))
        assert ack_code(await read_ack(reader)) == "AA"
        writer.close()
    finally:
        await svc.stop()


# -- (d) a real feed's unused trigger events ------------------------------------------------------

FAMILIES = ("ADT", "ORM", "OML", "ORU", "DFT")
CORPUS_UNUSED = {f"A{n:02d}" for n in (9, 10, 14, 15, 16, 25, 26, 27, 28, 29, 31, 41, 45, 47, 60)}
"""The trigger events the fhir-converter ADT corpus sends that were answered AR 201 (issue 12)."""


def corpus_messages() -> list[str]:
    texts: list[str] = []
    for path in corpus():
        text = decode(path.read_bytes())
        texts += split_batch(text) if is_batch(text) else [text]
    return texts


def header(text: str) -> Message | None:
    try:
        return parse(text)
    except Exception:
        return None


def unused_of(texts: list[str]) -> list[tuple[str, str]]:
    """(text, 'ADT^A31') of every corpus message with an unused trigger."""
    found = []
    for text in texts:
        msg = header(text)
        if msg is not None and (msg.message_type, msg.trigger) in mapping.UNUSED_TRIGGERS:
            found.append((text, f"{msg.message_type}^{msg.trigger}"))
    return found


async def send_all(port: int, texts: list[str]) -> list[str]:
    """The ACK code of each message, in order (a batch file answers one code per message)."""
    codes: list[str] = []
    async with MLLPClient("127.0.0.1", port, timeout=10) as client:
        for text in texts:
            codes += [ack_code(a) for a in _acks(await client.send(text))]
    return codes


async def test_every_unused_corpus_trigger_is_aa_under_accept_and_ar_201_under_reject(
    settings_for: Callable[..., Settings], tmp_path: Path
) -> None:
    texts = corpus_messages()
    unused = unused_of(texts)
    assert {kind.split("^")[1] for _, kind in unused} >= CORPUS_UNUSED
    by_type = Counter(kind for _, kind in unused)

    accept = await started(settings_for(data_dir=tmp_path / "accept"))  # accept: the default
    try:
        assert accept.settings.hl7.unused_triggers == "accept"
        before = {k: await metric(accept, "carescore_hl7_unused_total", type=k) for k in by_type}
        letters_before = len(accept.runtime.dead_letters.query(source="hl7v2", limit=10_000))
        async with MLLPClient("127.0.0.1", accept.mllp.port) as client:
            for text, kind in unused:
                reply = await client.send(text)
                assert msa(reply)[0] == "AA", (kind, reply)
                assert msa(reply)[1] == parse(text).msh.get(10, unescaped=False)
            # an unknown trigger is not 'unused': still AR 201 under accept
            stranger = await client.send(unused[0][0].replace(unused[0][1], "ADT^A99", 1))
            assert ack_code(stranger) == "AR" and err(stranger)[0] == "201"
        for kind, count in by_type.items():
            assert await metric(accept, "carescore_hl7_unused_total", type=kind) == before[kind] + count
        await asyncio.sleep(0.3)
        assert not list(accept.runtime.log.raw_records())  # no events: nothing was stored
        assert len(accept.runtime.dead_letters.query(source="hl7v2", limit=10_000)) == letters_before + 1
        accepted = await send_all(accept.mllp.port, texts)
    finally:
        await accept.stop()

    reject = await started(settings_for(data_dir=tmp_path / "reject", hl7={"unused_triggers": "reject"}))
    try:
        async with MLLPClient("127.0.0.1", reject.mllp.port) as client:
            for text, kind in unused:
                reply = await client.send(text)
                assert msa(reply)[0] == "AR" and err(reply)[0] == "201", (kind, reply)
        kept = reject.runtime.dead_letters.query(source="hl7v2", limit=10_000)
        assert sum(1 for d in kept if d.reason.startswith("AR 201")) == len(unused)
        rejected = await send_all(reject.mllp.port, texts)
    finally:
        await reject.stop()

    # the whole corpus under both settings: only the unused triggers change outcome
    unused_texts = {text for text, _ in unused}
    assert len(accepted) == len(rejected) == len(texts)
    for text, a, r in zip(texts, accepted, rejected, strict=True):
        assert (a, r) == (("AA", "AR") if text in unused_texts else (a, a)), text[:120]
    family = [i for i, t in enumerate(texts) if re.search(r"\|(ADT|ORM|OML|ORU|DFT)\^", t.split("\r")[0])]
    aa_accept = sum(accepted[i] == "AA" for i in family)
    aa_reject = sum(rejected[i] == "AA" for i in family)
    print(
        f"\nADT/ORM/OML/ORU/DFT corpus messages acknowledged AA: {aa_accept} of {len(family)} "
        f"(unused_triggers accept), {aa_reject} of {len(family)} (reject)"
    )
    assert aa_accept == aa_reject + len(unused)


# -- (e) control characters in codes -------------------------------------------------------------


async def test_escaped_control_characters_never_reach_unit_codes_labels_or_acks(
    settings_for: Callable[..., Settings],
) -> None:
    svc = await started(settings_for())
    try:
        port = svc.mllp.port
        start = NOW - timedelta(hours=1)
        # a configured unit with \X0A\ appended: still the ED (department emergency)
        ed = m.Visit(PATIENT, "E", m.Location("ED\\X0A\\", "", "1", "DEMO"), "VC1", "DEMO")
        # an unknown unit with CR LF and TAB inside: one readable code, "NEW WARD"
        new = m.Visit(
            PATIENT, "I", m.Location("NEW\\X0D\\\\X0A\\WARD\\X09\\", "", "1", "DEMO"), "VC2", "DEMO"
        )
        # PV1-3 with a TAB and no facility: the facility is MSH-4, which ends in \X0D\
        ward = m.Visit(PATIENT, "I", m.Location("4W\\X09\\", "1", "7", ""), "VC3", "DEMO\\X0D\\")
        async with MLLPClient("127.0.0.1", port) as client:
            for order, result in (stat_pair("OC1", "", start, 30, ed), stat_pair("OC2", "", start, 30, new)):
                assert ack_code(await client.send(order)) == "AA"
                assert ack_code(await client.send(result)) == "AA"
            admit = m.adt("A01", NOW, ward, admit=NOW)
            assert "|DEMO\\X0D\\|" in admit and "4W\\X09\\^" in admit
            assert ack_code(await client.send(admit)) == "AA"

        async def tat(unit: str) -> Any:
            v = value_of(await api(svc, "/api/v1/kpis/lab_tat_stat", unit=unit), unit)
            return v if v and v["n"] >= 1 else None

        ed_value = await wait_for(lambda: tat("ED"))
        assert ed_value["group"]["department"] == "emergency"
        assert (await wait_for(lambda: tat("NEW WARD")))["group"]["unit"] == "NEW WARD"

        async def occupied() -> Any:
            v = value_of(await api(svc, "/api/v1/kpis/bed_occupancy", unit="4W"), "4W")
            return v if v and v["numerator"] >= 1 else None

        assert (await wait_for(occupied))["group"]["facility"] == "DEMO"
        every = await api(svc, "/api/v1/kpis/lab_tat_stat")
        assert all(not CONTROL.search(str(v["group"][k] or "")) for v in every["values"] for k in v["group"])

        # /metrics as Prometheus reads it: no label value holds a control character
        text = await api(svc, "/metrics")
        units = set()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                for key, value in sample.labels.items():
                    assert not CONTROL.search(value), (sample.name, key, value)
                if sample.name == "carescore_kpi_value":
                    units.add(sample.labels.get("unit"))
        assert {"ED", "NEW WARD", "4W"} <= units

        # an ACK never carries a control character a reason or an echo would have brought
        # along: \X1C\ unescaped in MSH-9 or MSH-10 would end the ACK's frame early
        hostile = m.adt("A01", NOW, visit(number="VC4"), admit=NOW, control_id="ID\\X1C\\1").replace(
            "ADT^A01^ADT_A01", "ADT^A0\\X1C\\1", 1
        )
        # a reason quoting an unescaped value (MSH-12): the ACK text must not carry the 0x1C
        version = m.adt("A01", NOW, visit(number="VC6"), admit=NOW, control_id="V-1").replace(
            "|2.5.1", "|9.9\\X1C\\\\X0B\\", 1
        )
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        follow = m.adt("A01", NOW, visit(number="VC5"), admit=NOW, control_id="AFTER-1")
        writer.write(frame(hostile) + frame(version) + frame(follow))
        first, second, third = [await read_ack(reader) for _ in range(3)]
        writer.close()
        assert not CONTROL.search(first.replace("\r", "")) and not CONTROL.search(second.replace("\r", ""))
        assert msa(first) == ("AR", "ID\\X1C\\1") and err(first)[0] == "201"
        assert msa(second) == ("AR", "V-1") and err(second)[0] == "203" and "9.9" in err(second)[1]
        assert msa(third) == ("AA", "AFTER-1")
    finally:
        await svc.stop()
