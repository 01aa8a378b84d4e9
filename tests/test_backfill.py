"""Backfill is a first-class path: years of real data imported, then `carescore run`.

The MIMIC-IV demo as HL7 v2 (tests/mimic_hl7.py: 2017-2026, dense only in the last weeks) is
sent twice: live over MLLP into a running carescore (A), and imported with `carescore import
hl7` as a user does, then run (B). Checked:

- B starts from its snapshot: `carescore run` replays no event (state recovered with
  events_replayed 0), twice in a row, and counts every event once;
- A and B keep the same closed windows (every window both have closed: those that end before
  the last event's time minus the KPI's grace) and give the same period reports;
- history costs what the data costs: for every KPI and place, rows <= 2 P + 2 + 2 O + 2 R, where
  P is the number of the KPI's panes in which an event happened at that place (or under it),
  O, for KPIs that count open intervals, the windows each interval started there is overdue
  in (from start + timeout to its end or expiry, in steps: its age changes every window), R the
  registrations there (one that is never answered expires without an event, and the census,
  behind levels and per-patient-day rates, changes then).
  The bound knows nothing of how long the data spans.
"""

from __future__ import annotations

import asyncio
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml

from engine.config import REPO_ROOT, Settings
from engine.definitions import load_catalogue
from engine.definitions.measures import DurationMeasure
from engine.samples import rollups
from engine.windows import PaneClock
from tests import mimic_hl7 as mh
from tests.alerting import free_port
from tests.conftest import needs_testdata
from tests.test_mimic_hl7_proof import send_all

REPORTED = ("bed_occupancy", "average_length_of_stay", "lab_tat_stat", "readmission_30d_rate")


def settings_doc(data: Path, api: int = 0) -> dict[str, Any]:
    return {
        "data_dir": str(data),
        "places": mh.places_config(),
        "mllp": {"host": "127.0.0.1", "port": 0},
        "api": {"host": "127.0.0.1", "port": api},
        "demo": {"enabled": False},
        "engine": {"tick": 0.2, "snapshot_every": 3600},
    }


def carescore(*args: str) -> list[str]:
    return [sys.executable, "-m", "carescore.cli", *args]


def user_env() -> dict[str, str]:
    """The test's environment without CARESCORE_* overrides: the settings file decides."""
    return {k: v for k, v in os.environ.items() if not k.startswith("CARESCORE_")}


def command(*args: str) -> subprocess.CompletedProcess[str]:
    """A carescore command run to its end as a user runs it, its output kept."""
    return subprocess.run(
        carescore(*args), cwd=REPO_ROOT, env=user_env(), capture_output=True, text=True, timeout=900
    )


def until_healthy(proc: subprocess.Popen[bytes], port: int) -> dict[str, Any]:
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"carescore run exited with {proc.returncode}"
        try:
            response = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            if response.status_code == 200:
                return dict(response.json())
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError("carescore run did not answer /healthz")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 0


def recovered(log: Path) -> list[dict[str, Any]]:
    out = []
    for line in log.read_bytes().splitlines():
        if b'"state recovered"' in line:
            out.append(orjson.loads(line))
    return out


async def live_replay(settings: Settings, messages: list[mh.Message]) -> dict[str, Any]:
    from carescore.serve import Service

    svc = Service(settings)
    await svc.start()
    try:
        acks = await send_all(svc.mllp.port, messages)
        await svc.runtime.tick_async()  # every window the stream has passed is closed, in slices
        svc.runtime.history.flush()
        reports = {}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{svc.api_port}", timeout=120) as client:
            for kpi in REPORTED:
                response = await client.get(f"/api/v1/reports/{kpi}", params=WHOLE)
                response.raise_for_status()
                reports[kpi] = response.json()["rows"]
        return {"acks": acks, "reports": reports, "events": svc.runtime.engine.events_processed}
    finally:
        await svc.stop()


WHOLE = {"from": "2017-01-01T00:00:00+00:00", "to": "2027-01-01T00:00:00+00:00", "by": "unit"}


@pytest.fixture(scope="module")
def backfill(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = needs_testdata("mimic-iv-demo")
    root = tmp_path_factory.mktemp("backfill")
    data = mh.load(folder, datetime.now(UTC).date())
    messages = mh.messages(data)
    feed = root / "feed.hl7"
    feed.write_bytes(b"".join(b"\x0b" + m.text.encode() + b"\x1c\r" for m in messages))

    live = asyncio.run(live_replay(Settings.model_validate(settings_doc(root / "live")), messages))

    api = free_port()
    config = root / "carescore.yaml"
    config.write_text(yaml.safe_dump(settings_doc(root / "imported", api)))
    env = user_env()
    imported = command("import", "hl7", str(feed), "--config", str(config))
    assert imported.returncode == 0, imported.stderr[-2000:]
    log = root / "run.log"
    runs = []
    reports: dict[str, Any] = {}
    for attempt in range(2):
        with log.open("ab") as out:
            proc = subprocess.Popen(
                carescore("run", "--config", str(config)), cwd=REPO_ROOT, env=env, stdout=out, stderr=out
            )
        try:
            runs.append(until_healthy(proc, api))
            if attempt == 0:
                for kpi in REPORTED:
                    response = httpx.get(
                        f"http://127.0.0.1:{api}/api/v1/reports/{kpi}", params=WHOLE, timeout=120
                    )
                    response.raise_for_status()
                    reports[kpi] = response.json()["rows"]
        finally:
            stop(proc)
    return {
        "messages": messages,
        "live": live,
        "live_dir": root / "live",
        "dir": root / "imported",
        "import_output": imported.stdout,
        "runs": runs,
        "recovered": recovered(log),
        "reports": reports,
    }


def test_run_after_an_import_starts_from_the_snapshot_and_counts_each_event_once(
    backfill: dict[str, Any],
) -> None:
    assert backfill["live"]["acks"]["codes"] == {"AA": len(backfill["messages"])}
    assert "rejected" not in backfill["import_output"]
    events = backfill["live"]["events"]
    assert [r["events_processed"] for r in backfill["runs"]] == [events, events]
    assert [(r["from_snapshot"], r["events_replayed"]) for r in backfill["recovered"]] == [
        (True, 0),
        (True, 0),
    ]


def test_import_then_run_gives_the_reports_of_live_streaming(backfill: dict[str, Any]) -> None:
    for kpi in REPORTED:
        assert backfill["reports"][kpi] == backfill["live"]["reports"][kpi], kpi
        assert backfill["reports"][kpi], kpi


def selected(event: dict[str, Any], where: dict[str, Any]) -> bool:
    return all(event.get(k) in (v if isinstance(v, list) else [v]) for k, v in where.items())


def runs_before(folder: Path, kpi: str, cutoff: float) -> list[tuple[Any, ...]]:
    """The stored runs of closed windows (history rows) that end by `cutoff`, each run cut there:
    equal runs are equal windows, window by window (engine/history.py)."""
    db = sqlite3.connect(folder / "history.sqlite")
    try:
        return db.execute(
            "SELECT s.facility, s.department, s.unit, r.window_start, r.window_end, min(r.until, ?),"
            " r.value, r.numerator, r.denominator, r.n, r.status FROM runs r JOIN series s ON s.id = r.series"
            " WHERE s.kpi = ? AND r.window_end <= ? ORDER BY s.facility, s.department, s.unit, r.window_end",
            (cutoff, kpi, cutoff),
        ).fetchall()
    finally:
        db.close()


def test_import_then_run_keeps_the_closed_windows_of_live_streaming(backfill: dict[str, Any]) -> None:
    catalogue = load_catalogue(REPO_ROOT / "kpi_defs")
    last = max(m.at for m in backfill["messages"]).replace(tzinfo=UTC)
    compared = 0
    for kpi in catalogue:
        # closed in both: windows that end a grace before the last event (the watermark)
        cutoff = (last - timedelta(seconds=float(kpi.window.grace)) - timedelta(days=1)).timestamp()
        want = runs_before(backfill["live_dir"], kpi.id, cutoff)
        got = runs_before(backfill["dir"], kpi.id, cutoff)
        first = next((i for i, (x, y) in enumerate(zip(got, want, strict=False)) if x != y), None)
        assert got == want, (
            kpi.id,
            len(got),
            len(want),
            first,
            first is not None and (got[first], want[first]),
        )
        compared += len(want)
    assert compared > 100_000


def test_history_rows_grow_with_the_data_not_with_the_time_span(backfill: dict[str, Any]) -> None:
    catalogue = load_catalogue(REPO_ROOT / "kpi_defs")
    folder = backfill["dir"]
    events = [
        orjson.loads(line)
        for path in sorted((folder / "events").glob("*.ndjson"))
        for line in path.open("rb")
    ]
    db = sqlite3.connect(folder / "history.sqlite")
    rows = Counter(
        {
            (kpi, (f, d or None, u or None)): n
            for kpi, f, d, u, n in db.execute(
                "SELECT s.kpi, s.facility, s.department, s.unit, count(*) FROM runs"
                " JOIN series s ON s.id = runs.series GROUP BY s.id"
            )
        }
    )
    parsed = [
        (
            e,
            datetime.fromisoformat(e["event_time"]).timestamp(),
            rollups((e["facility"], e.get("department"), e.get("unit"))),
        )
        for e in events
    ]
    registrations: Counter[Any] = Counter()
    for e, _, places in parsed:
        if e["type"] == "encounter.register":
            for place in places:
                registrations[place] += 1
    by_clock: dict[str, dict[Any, set[int]]] = {}
    total_bound = 0
    for kpi in catalogue:
        spec = kpi.window.model_dump_json()
        if spec not in by_clock:
            clock = PaneClock.of(kpi.window)
            found: dict[Any, set[int]] = {}
            for _, at, places in parsed:
                pane = clock.index(at)
                for place in places:
                    found.setdefault(place, set()).add(pane)
            by_clock[spec] = found
        panes = by_clock[spec]
        overdue: Counter[Any] = Counter()  # windows an open interval can be overdue in, per place
        measure = kpi.measure
        if isinstance(measure, DurationMeasure) and measure.count_open and measure.timeout is not None:
            ends = measure.end if isinstance(measure.end, list) else [measure.end]
            ended: dict[Any, float] = {}
            for e, at, _ in parsed:
                if any(e["type"] == m.event for m in ends) and e.get(measure.key) is not None:
                    ended[e[measure.key]] = min(ended.get(e[measure.key], math.inf), at)
            for e, at, places in parsed:
                if e["type"] == measure.start.event and selected(e, measure.start.where):
                    # overdue from start + timeout until its end, or until it expires
                    due = at + float(measure.timeout)
                    gone = min(ended.get(e.get(measure.key), math.inf), at + float(measure.expire_after))
                    if gone > due:
                        steps = math.ceil((gone - due) / float(kpi.window.hop)) + 1
                        for place in places:
                            overdue[place] += steps
        for (kid, place), n in rows.items():
            if kid != kpi.id:
                continue
            bound = 2 * len(panes.get(place, ())) + 2 + 2 * overdue[place] + 2 * registrations[place]
            assert n <= bound, (kpi.id, place, n, bound)
            total_bound += bound
    stored = sum(rows.values())
    size = sum(p.stat().st_size for p in folder.glob("history.sqlite*"))
    assert stored > 10_000  # the bound is checked against a real history
    assert size < 64e6  # nine years of a hospital's feed: tens of MB (1.4 GB, one row per window)
    print(f"history: {stored:,} rows (bound {total_bound:,}), {size / 1e6:.1f} MB")
