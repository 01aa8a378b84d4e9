"""The demo hospital sends valid HL7, keeps beds within capacity, and breaches early."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from connectors.hl7v2.mapping import MapContext, map_message
from connectors.hl7v2.parser import parse
from demo.hospital import DemoHospital
from engine.config import REPO_ROOT
from engine.core import Engine
from engine.definitions import load_catalogue
from engine.places import Places

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC).timestamp()
BACKFILL = 12 * 3600


def feed(hospital: DemoHospital, engine: Engine, until: float, places: Places) -> int:
    count = 0
    for sent_at, text in hospital.due(until):
        ctx = MapContext(places=places, received=datetime.fromtimestamp(max(sent_at, NOW - 7200), UTC))
        for event in map_message(parse(text), ctx):
            engine.process(event)
        count += 1
    return count


def test_demo_traffic_maps_cleanly_and_respects_beds(places: Places) -> None:
    hospital = DemoHospital(places, seed=3)
    hospital.seed_history(NOW, 7200)
    engine = Engine(load_catalogue(REPO_ROOT / "kpi_defs"), places)
    sent = feed(hospital, engine, NOW + 6 * 3600, places)
    assert sent > 300
    kinds = {e for e in engine.type_sources}
    assert {
        "encounter.admit",
        "encounter.register",
        "encounter.transfer",
        "encounter.discharge",
        "lab.order",
        "lab.result",
    } <= kinds
    beds = {u.id: u.beds for _, _, u in places.units()}
    for sample in engine.live(NOW + 6 * 3600):
        if sample.kpi == "bed_occupancy" and sample.group.unit:
            assert 0 <= sample.numerator <= beds[sample.group.unit]
            if sample.group.unit != "ED":
                assert sample.value > 30  # a realistic census, not an empty hospital


def test_a_stat_breach_happens_within_a_minute_of_start(places: Places) -> None:
    hospital = DemoHospital(places, seed=7)
    hospital.seed_history(NOW, 7200)
    engine = Engine(load_catalogue(REPO_ROOT / "kpi_defs"), places)
    feed(hospital, engine, NOW + 30, places)
    icu = next(s for s in engine.live(NOW + 30) if s.kpi == "lab_tat_stat" and s.group.unit == "ICU")
    assert icu.status == "critical" and icu.n >= 3


def test_demo_state_round_trips(places: Places) -> None:
    a = DemoHospital(places, seed=5)
    a.seed_history(NOW, 3600)
    a.due(NOW)
    b = DemoHospital(places, seed=99)
    import orjson

    b.load(orjson.loads(orjson.dumps(a.state())))
    assert [m for _, m in a.due(NOW + 3600)] == [m for _, m in b.due(NOW + 3600)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.timeout(240)
async def test_carescore_run_with_the_demo_fires_an_alert_within_a_minute(tmp_path: Path) -> None:
    """What `make run` starts, as a newcomer sees it: KPIs move and an alert fires."""
    api_port, mllp_port = _free_port(), _free_port()
    env = {
        **os.environ,
        "CARESCORE_API_PORT": str(api_port),
        "CARESCORE_MLLP_PORT": str(mllp_port),
        "CARESCORE_DATA_DIR": str(tmp_path / "data"),
        "CARESCORE_DEMO": "1",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "carescore.cli", "run"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    started = time.monotonic()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api_port}") as client:
            stat: list[dict[str, object]] = []
            while time.monotonic() - started < 120 and not stat:
                await asyncio.sleep(1)
                try:
                    firing = (await client.get("/api/v1/alerts", params={"state": "firing"})).json()["alerts"]
                except httpx.TransportError:
                    assert proc.poll() is None, proc.stdout.read().decode()  # type: ignore[union-attr]
                    continue
                stat = [a for a in firing if a["kpi"] == "lab_tat_stat"]
            # the demo's slow ICU STAT labs (other alerts may fire too: the backfill is real data)
            assert stat, "no STAT turnaround alert fired"
            card = (await client.get("/api/v1/scorecard")).json()
            values = {k["id"]: k["value"] for p in card["perspectives"] for k in p["kpis"]}
            assert values["bed_occupancy"] and values["average_length_of_stay"]
            page = await client.get("/")
            assert page.status_code == 200 and "carescore" in page.text
    finally:
        proc.send_signal(signal.SIGINT)
        output = proc.communicate(timeout=30)[0].decode()
    assert proc.returncode == 0, output
    assert '"message":"carescore stopped"' in output


def test_the_demo_gives_every_kpi_a_value(places: Places) -> None:
    """EMR traffic and back-office rows together reach every KPI in the catalogue, and every
    row the back office writes is valid against the feed schemas. Mid-month: the live value of
    a calendar-month KPI is the month so far, and on the 1st the back office has not yet sent
    the month's first day (device days and ledger lines come after the day ends)."""
    now = NOW + 14 * 86400  # 2026-06-15 12:00 UTC
    from connectors.feeds.mapping import FeedMapper
    from connectors.feeds.schemas import FEEDS
    from demo.backoffice import BackOffice

    catalogue = load_catalogue(REPO_ROOT / "kpi_defs")
    engine = Engine(catalogue, places)
    hospital, office = DemoHospital(places, seed=7), BackOffice(places, seed=8)
    hospital.seed_history(now, BACKFILL)
    office.seed_history(now)
    until = now + 60
    mapper = FeedMapper(places.index(), UTC, datetime.fromtimestamp(until, UTC))
    rows = [(ts, row) for ts, row in office.due(until)]
    events = [e for _, (feed, row) in rows for e in mapper.events(FEEDS[feed].model_validate(row))]
    texts = hospital.due(until)
    hl7 = [
        e
        for sent_at, text in texts
        for e in map_message(
            parse(text),
            MapContext(places=places, received=datetime.fromtimestamp(max(sent_at, now - BACKFILL), UTC)),
        )
    ]
    for event in sorted(events + hl7, key=lambda e: e.ts):
        engine.process(event)
    assert {"nursecall.placed", "nursecall.acknowledged", "procedure.performed", "finance.charge"} <= set(
        engine.type_sources
    )
    facility = {s.kpi: s for s in engine.live(until) if s.group.department is None}
    missing = sorted(k for k in catalogue.kpis if facility.get(k) is None or facility[k].value is None)
    assert not missing, f"KPIs the demo leaves empty a minute after start: {missing}"
    # a plausible hospital: most of the scorecard within its thresholds, not all red
    statuses = [s.status for s in facility.values()]
    assert statuses.count("ok") >= len(statuses) * 0.6, {k: (s.value, s.status) for k, s in facility.items()}
