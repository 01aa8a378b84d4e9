"""Bounded event time (issue 11, item 1): a mistyped year is refused at the connector with the
field named, kept as a dead letter, and the engine's windows and watermarks never see it, so
the real events after it are not late. Through the real MLLP listener, POST /fhir and the feed
API of a running carescore."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from connectors.hl7v2.client import MLLPClient
from connectors.hl7v2.parser import parse


def adt(control: str, evn2: str, visit: str) -> str:
    return "\r".join(
        [
            f"MSH|^~\\&|EMR|DEMO|CARESCORE|DEMO|{evn2}||ADT^A01^ADT_A01|{control}|P|2.5.1",
            f"EVN|A01|{evn2}",
            f"PID|1||MRN-{visit}^^^DEMO^MR||Doe^Jane",
            f"PV1|1|I|4W^1^01^DEMO||||||||||||||||{visit}^^^DEMO^VN",
        ]
    )


async def test_far_future_and_default_dates_are_refused_with_the_field_named(service: Any) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    stamp = now.strftime("%Y%m%d%H%M%S")
    async with MLLPClient("127.0.0.1", service.mllp.port) as client:
        replies = [
            parse(await client.send(adt("F1", "29990101080000", "V1"))),  # a mistyped year
            parse(await client.send(adt("F2", "19000101000000", "V2"))),  # a default 1900 date
            parse(await client.send(adt("F3", stamp, "V3"))),  # a real admission, now
        ]
    codes = [r.first("MSA").get(1) for r in replies]  # type: ignore[union-attr]
    assert codes == ["AE", "AE", "AA"]
    for reply in replies[:2]:
        err = reply.first("ERR")
        assert err is not None and (err.get(2, 1), err.get(2, 3)) == ("EVN", "2")  # EVN-2 named
    assert "engine.max_future" in replies[0].first("ERR").first(8)  # type: ignore[union-attr]
    assert "engine.max_age" in replies[1].first("ERR").first(8)  # type: ignore[union-attr]

    base = f"http://127.0.0.1:{service.api_port}"
    async with httpx.AsyncClient(base_url=base) as api:
        encounter = {
            "resourceType": "Encounter",
            "id": "enc-future",
            "status": "in-progress",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
            "subject": {"reference": "Patient/p9"},
            "period": {"start": "2999-01-01T08:00:00Z"},
        }
        fhir = await api.post(
            "/fhir/Encounter",
            content=json.dumps(encounter),
            headers={"Content-Type": "application/fhir+json"},
        )
        assert fhir.status_code == 422
        issue = fhir.json()["issue"][0]
        assert (
            issue["expression"] == ["Encounter.period.start"] and "engine.max_future" in issue["diagnostics"]
        )
        later = (now + timedelta(days=400)).isoformat()
        feed = await api.post(
            "/api/v1/feeds/staffing",
            content=f"staff_id,role,unit,shift_start\nN1,rn,4W,{later}\nN2,rn,4W,{now.isoformat()}\n",
            headers={"Content-Type": "text/csv"},
        )
        body = feed.json()
        assert (body["accepted"], body["rejected"]) == (1, 1), body
        assert (body["errors"][0]["line"], body["errors"][0]["field"]) == (2, "shift_start")
        assert "engine.max_future" in body["errors"][0]["message"]
        letters = (await api.get("/api/v1/dead-letters")).json()["dead_letters"]
        assert len(letters) >= 4  # two HL7 messages, the Encounter, the feed row
        # the engine never saw 2999: the HL7 watermark is the real admission's time, and the
        # admission after the refused ones is not late
        engine = service.runtime.engine
        for _ in range(50):
            if "hl7v2" in engine.watermarks.max_ts:
                break
            await asyncio.sleep(0.1)
        assert engine.watermarks.max_ts["hl7v2"] == now.timestamp()
        assert sum(engine.late_events().values()) == 0


def test_no_source_moves_its_watermark_past_the_wall_clock() -> None:
    """Defence behind the connectors: an event stamped a year ahead that reached the engine
    (an old log, an import) does not close the windows between now and then, and the real
    events after it still count."""
    from engine.config import REPO_ROOT
    from engine.core import Engine
    from engine.definitions import load_catalogue
    from engine.events import LabEvent

    engine = Engine(load_catalogue(REPO_ROOT / "kpi_defs"), wall_clock=True)
    now = datetime.now(UTC)

    def lab(kind: str, when: datetime, order: str, **fields: Any) -> LabEvent:
        return LabEvent(
            type=kind,  # type: ignore[arg-type]
            event_time=when,
            received_time=now,
            source="hl7v2",
            source_id=f"{order}-{kind}",
            facility="DEMO",
            order_id=order,
            priority="stat",
            **fields,
        )

    engine.process(lab("lab.order", now + timedelta(days=365), "typo"))
    assert engine.watermark_of("lab_tat_stat", now.timestamp()) == now.timestamp()
    closed = engine.windows(engine.advance(now.timestamp()))
    assert all(s.window.end <= now for s in closed)
    # the real traffic after it, stamped now, is on time (a watermark at 2999 would make it late)
    engine.process(lab("lab.order", now - timedelta(seconds=30), "real"))
    engine.process(lab("lab.result", now, "real", result_status="final"))
    assert sum(engine.late_events().values()) == 0


async def test_a_blocked_event_loop_shows_on_metrics(service: Any) -> None:
    """Issue 11 item 3 (measure first): whatever blocks the loop delays every ACK; /metrics
    carries the loop's lag histogram and its longest stall. The fault is real: this coroutine
    holds the service's loop for 0.6 s with a blocking call."""
    import time

    def metric(text: str, name: str) -> float:
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise AssertionError(f"no {name} on /metrics")

    def between(text: str) -> float:  # timer wake-ups 0.5 s to 1 s late
        b = 'carescore_event_loop_lag_seconds_bucket{le="%s"}'
        return metric(text, b % "1.0") - metric(text, b % "0.5")

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{service.api_port}") as api:
        await asyncio.sleep(0.2)  # the watch is running
        before = between((await api.get("/metrics")).text)
        time.sleep(0.6)  # block the loop: the MLLP listener, HTTP and ticks all wait
        for _ in range(50):
            text = (await api.get("/metrics")).text
            if between(text) > before:
                break
            await asyncio.sleep(0.05)
        assert between(text) >= before + 1
        assert metric(text, "carescore_event_loop_stall_max_seconds") >= 0.5


def test_watermark_lag_is_the_wall_clock_minus_each_sources_watermark() -> None:
    """carescore_watermark_lag_seconds (issue 15): per source, wall clock minus the engine's
    watermark, the idle advance included; the gauge shows the worst of a process's engines and
    drops a source no engine has any more (a Kafka partition revoked)."""
    from prometheus_client import REGISTRY

    from carescore.metrics import show_watermark_lags
    from engine.config import REPO_ROOT
    from engine.core import Engine
    from engine.definitions import load_catalogue
    from tests.helpers import at, lab, ts

    engine = Engine(load_catalogue(REPO_ROOT / "kpi_defs"), idle_timeout=60, wall_clock=True)
    # an order stamped 08:00 that arrives at 08:05 (300 s late), over HL7
    engine.process(lab("lab.order", 0, "A", received=at(5), priority="stat"))
    # 10 s after it came: not idle yet (10 < 60), the watermark is still 08:00: 310 s behind
    assert engine.watermark_lags(ts(5) + 10) == {"hl7v2": 310.0}
    # 200 s after it came: idle for 140 s, the watermark moved to 08:02:20: 300 + 60 = 360 s behind
    assert engine.watermark_lags(ts(5) + 200) == {"hl7v2": 360.0}
    # a feed's row stamped 08:06:40 and received then: 100 s later it is idle 40 s, 60 s behind
    engine.process(lab("lab.order", 400 / 60, "B", received=at(400 / 60), source="feed", priority="stat"))
    lags = engine.watermark_lags(ts(5) + 200)
    assert lags == {"hl7v2": 360.0, "feed": 60.0}

    other = {"hl7v2": 30.0}  # a second engine (another partition) less behind
    show_watermark_lags([lags, other])
    value = REGISTRY.get_sample_value
    assert value("carescore_watermark_lag_seconds", {"source": "hl7v2"}) == 360.0
    assert value("carescore_watermark_lag_seconds", {"source": "feed"}) == 60.0
    show_watermark_lags([other])
    assert value("carescore_watermark_lag_seconds", {"source": "hl7v2"}) == 30.0
    assert value("carescore_watermark_lag_seconds", {"source": "feed"}) is None
