"""Places the configuration does not know: accepted (a new ward must not lose data) but
bounded, listed on /metrics, never a "feed stopped" page; or refused and kept as dead letters
with places.unknown: reject. Through the real MLLP socket of a running carescore.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime

import httpx

from carescore.serve import Service
from connectors.hl7v2 import messages as m
from connectors.hl7v2.client import MLLPClient, ack_code
from engine.config import Settings

PATIENT = m.Patient("MRN1", "Doe", "Jane", "19700101", "F")


def admit(visit: str, unit: str, facility: str = "DEMO") -> str:
    when = datetime.now(UTC).replace(microsecond=0)
    where = m.Visit(PATIENT, "I", m.Location(unit, "1", "01", facility), visit, facility)
    return m.adt("A01", when, where, admit=when)


def err_segment(ack: str) -> str:
    return next(s for s in ack.split("\r") if s.startswith("ERR"))


async def test_unknown_units_are_accepted_up_to_the_cap_and_listed(
    settings_for: Callable[..., Settings],
) -> None:
    svc = Service(settings_for(places={**settings_for().places.model_dump(), "max_unknown": 3}))
    await svc.start()
    try:
        client = MLLPClient("127.0.0.1", svc.mllp.port)
        acks = [await client.send(admit(f"V{i}", f"NEW{i}")) for i in range(5)]
        # the first three unknown units are taken (a ward added before the configuration was)
        assert [ack_code(a) for a in acks] == ["AA", "AA", "AA", "AE", "AE"]
        err = err_segment(acks[3])
        assert "PV1" in err and "max_unknown" in err  # the field and the reason
        assert ack_code(await client.send(admit("V0b", "NEW0"))) == "AA"  # a known unknown still goes in
        assert ack_code(await client.send(admit("V9", "4W"))) == "AA"  # configured units unaffected
        # a unit code with CR/LF (the HL7 escape \X0D\\X0A\) becomes one clean code, never a label break
        assert ack_code(await client.send(admit("V10", "NEW0\\X0D\\\\X0A\\"))) == "AA"
        await client.close()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{svc.api_port}") as http:
            metrics = (await http.get("/metrics")).text
            letters = (await http.get("/api/v1/dead-letters")).json()
        listed = sorted(
            line.split("}")[0] for line in metrics.splitlines() if line.startswith("carescore_unknown_place{")
        )
        assert listed == [f'carescore_unknown_place{{code="NEW{i}",facility="DEMO"' for i in range(3)], listed
        assert "\\n" not in "".join(listed)
        assert sum(1 for d in letters["dead_letters"] if "max_unknown" in d["reason"]) == 2
        # one ops alert says so (warning), naming the codes
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{svc.api_port}") as http:
            deadline = asyncio.get_running_loop().time() + 20
            while not (
                found := [
                    a
                    for a in (await http.get("/api/v1/alerts")).json()["alerts"]
                    if a["kpi"] == "unknown_places"
                ]
            ):
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.1)
        assert len(found) == 1 and found[0]["severity"] == "warning"
        assert all(f"DEMO/NEW{i}" in found[0]["summary"] for i in range(3)), found[0]
    finally:
        await svc.stop()


async def test_reject_mode_refuses_unknown_places_and_keeps_them_for_replay(
    settings_for: Callable[..., Settings],
) -> None:
    svc = Service(settings_for(places={**settings_for().places.model_dump(), "unknown": "reject"}))
    await svc.start()
    try:
        client = MLLPClient("127.0.0.1", svc.mllp.port)
        unknown_unit = await client.send(admit("V1", "NEWWARD"))
        unknown_facility = await client.send(admit("V2", "4W", facility="MADEUP"))
        known = await client.send(admit("V3", "4W"))
        await client.close()
        assert ack_code(unknown_unit) == "AE" and "NEWWARD" in err_segment(unknown_unit)
        assert ack_code(unknown_facility) == "AE" and "MADEUP" in err_segment(unknown_facility)
        assert ack_code(known) == "AA"
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{svc.api_port}") as http:
            letters = (await http.get("/api/v1/dead-letters", params={"source": "hl7v2"})).json()
            metrics = (await http.get("/metrics")).text
        assert len(letters["dead_letters"]) == 2  # replayable once the places are added
        assert "carescore_unknown_place{" not in metrics
    finally:
        await svc.stop()


def test_a_made_up_facility_going_quiet_pages_nobody() -> None:
    from alerts.feeds import FeedWatch
    from engine.config_alerts import FeedRule
    from tests.helpers import enc

    rule = FeedRule(name="EMR ADT", source="hl7v2", events="encounter", stale_after=60)
    watch = FeedWatch([rule], facilities={"DEMO"})
    made_up = enc("encounter.admit", 0, "V1", unit="4W").model_copy(
        update={"source": "hl7v2", "facility": "MADEUP"}
    )
    ours = made_up.model_copy(update={"facility": "DEMO"})
    watch.observe([made_up, ours], now=1000.0)
    fired = watch.check(now=2000.0)
    assert [c.place[0] for c in fired] == ["DEMO"]  # our feed's outage is paged, the made-up one's not

    per_unit = FeedWatch([rule.model_copy(update={"per": "unit"})], facilities={"DEMO"})
    made_up_unit = ours.model_copy(update={"unit": "NEWWARD", "department": None})
    per_unit.observe([made_up_unit, ours], now=1000.0)
    assert [c.place[2] for c in per_unit.check(now=2000.0)] == ["4W"]  # not the made-up unit
