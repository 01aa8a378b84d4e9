"""The commands a user runs beside the server: bulk FHIR import, HL7 file replay, feed
import, and dead-letter replay (offline on the data folder, and through the running API)."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import yaml

from carescore.serve import Service
from connectors.deadletters import DeadLetterStore
from connectors.hl7v2.messages import Location, Patient, Visit, adt
from engine.config import REPO_ROOT
from engine.eventlog import EventLog
from engine.privacy import Pseudonyms, load_key
from tests.conftest import DEMO_PLACES, needs_testdata


def config(tmp_path: Path, name: str = "carescore.yaml", **extra: Any) -> Path:
    path = tmp_path / name
    settings = {
        "data_dir": str(tmp_path / "data"),
        "places": DEMO_PLACES,
        "demo": {"enabled": False},
        **extra,
    }
    path.write_text(yaml.safe_dump(settings))
    return path


def admit(visit: str, unit: str, when: datetime, facility: str = "DEMO") -> str:
    patient = Patient(f"MRN-{visit}", "Doe", "Jo", "19700101", "F")
    return adt("A01", when, Visit(patient, "I", Location(unit, "1", "A"), visit, facility))


def carescore(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "carescore.cli", *map(str, args)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def stored(tmp_path: Path) -> list[dict[str, Any]]:
    return list(EventLog(tmp_path / "data" / "events", fsync=False).raw_records())


def visit_pseudonym(data: Path, visit: str) -> str:
    """What the pipeline stores for a visit number: its pseudonym under the data folder's key
    (tests/test_privacy.py checks the HMAC itself)."""
    return Pseudonyms(load_key(data / "pseudonym.key")).of("enc", visit)


def test_bulk_fhir_import_shows_progress_and_a_summary_and_is_idempotent(tmp_path: Path) -> None:
    bulk = needs_testdata("fhir-r4/bulk-10-patients")
    cfg = config(tmp_path)
    first = carescore("import", "fhir", bulk, "--config", cfg)
    assert first.returncode == 0, first.stderr
    assert "FHIR [########################]" in first.stderr  # the progress bar, finished
    assert "events" in first.stderr and "/s" in first.stderr
    summary = first.stdout
    assert "skipped (no KPI data)" in summary  # Patient, Condition, Practitioner ... lines
    events = stored(tmp_path)
    kinds = {e["type"] for e in events}
    assert {"encounter.admit", "encounter.discharge", "procedure.performed"} <= kinds
    assert f"{len(events):,} events stored" in summary
    again = carescore("import", "fhir", bulk, "--config", cfg)
    assert "0 events stored" in again.stdout and "already stored" in again.stdout
    assert len(stored(tmp_path)) == len(events)


def test_bulk_fhir_import_names_the_bad_line_and_keeps_it(tmp_path: Path) -> None:
    ndjson = tmp_path / "Encounter.000.ndjson"
    good = (
        '{"resourceType":"Encounter","id":"e1","status":"finished","class":{"code":"IMP"},'
        '"period":{"start":"2026-01-05T08:00:00Z","end":"2026-01-07T10:00:00Z"}}'
    )
    bad = '{"resourceType":"Encounter","id":"e2","status":"walking","class":{"code":"IMP"}}'
    ndjson.write_text(f"{good}\n\n{bad}\nnot json\n")
    result = carescore("import", "fhir", ndjson, "--config", config(tmp_path))
    assert result.returncode == 1
    assert "Encounter.000.ndjson:3: 400" in result.stdout and "status" in result.stdout
    assert "Encounter.000.ndjson:4: 400" in result.stdout
    assert "2 rejected" in result.stdout and "1 accepted" in result.stdout
    letters = DeadLetterStore(tmp_path / "data" / "deadletters.sqlite").query()
    assert [d.source for d in letters] == ["fhir", "fhir"]


def test_hl7_file_replay_takes_plain_batched_and_framed_files(tmp_path: Path) -> None:
    now = datetime.now(UTC) - timedelta(hours=1)
    messages = [admit(f"V{i}", "4W", now) for i in range(3)]
    plain = tmp_path / "adt.hl7"
    plain.write_text("\n".join(m.replace("\r", "\n") for m in messages[:2]) + "\nMSH|broken\n")
    framed = tmp_path / "capture.mllp"
    framed.write_bytes(b"\x0b" + messages[2].encode() + b"\x1c\r")
    result = carescore("import", "hl7", plain, framed, "--config", config(tmp_path))
    assert result.returncode == 1, result.stdout  # the broken message is reported
    assert "3 accepted" in result.stdout and "1 rejected" in result.stdout
    assert "adt.hl7:" in result.stdout and "AR" in result.stdout
    visits = [visit_pseudonym(tmp_path / "data", v) for v in ("V0", "V1", "V2")]
    assert sorted(e["encounter_id"] for e in stored(tmp_path)) == sorted(visits)


def test_feed_import_reports_file_and_line(tmp_path: Path) -> None:
    rows = tmp_path / "finance.csv"
    rows.write_text("time,unit,category,amount\n2026-11-01,4W,supplies,10\n2026-11-01,4W,supplies,x\n")
    result = carescore("import", "feed", "finance", rows, "--config", config(tmp_path))
    assert result.returncode == 1
    assert f"{rows}:3: amount:" in result.stdout
    assert [e["type"] for e in stored(tmp_path)] == ["finance.cost"]
    unknown = carescore("import", "feed", "payroll", rows, "--config", config(tmp_path))
    assert unknown.returncode == 2 and "the feeds are staffing" in unknown.stderr


def test_dead_letters_replay_after_the_fix(tmp_path: Path) -> None:
    """Rejected by an allow-list; after the site is added, the replay takes it, once."""
    now = datetime.now(UTC) - timedelta(hours=1)
    message = tmp_path / "a01.hl7"
    message.write_text(admit("V7", "ICU", now, facility="NEWSITE"))
    strict = config(tmp_path, "strict.yaml", mllp={"allowed_facilities": ["DEMO"]})
    fixed = config(tmp_path, "fixed.yaml", mllp={"allowed_facilities": ["DEMO", "NEWSITE"]})
    rejected = carescore("import", "hl7", message, "--config", strict)
    assert "allow-list" in rejected.stdout
    listing = carescore("deadletter", "list", "--config", fixed)
    assert "hl7v2" in listing.stdout and "pending" in listing.stdout
    still = carescore("deadletter", "replay", "--config", strict)
    assert still.returncode == 1 and "REJECTED" in still.stdout and "allow-list" in still.stdout
    replay = carescore("deadletter", "replay", "--config", fixed)
    assert replay.returncode == 0, replay.stdout + replay.stderr
    assert "1 replayed: 1 taken" in replay.stdout
    assert [e["encounter_id"] for e in stored(tmp_path)] == [visit_pseudonym(tmp_path / "data", "V7")]
    nothing = carescore("deadletter", "replay", "--config", fixed)
    assert "0 replayed" in nothing.stdout  # closed letters are not replayed again
    letters = DeadLetterStore(tmp_path / "data" / "deadletters.sqlite").query()
    assert len(letters) == 1 and letters[0].replay_result == "AA: 1 event(s)"


async def test_replay_through_the_running_server(settings_for: Any) -> None:
    svc = Service(settings_for())
    await svc.start()
    try:
        now = datetime.now(UTC) - timedelta(hours=1)
        store = svc.runtime.dead_letters
        good = store.add("hl7v2", "AE 207: storage full", admit("V8", "3E", now))
        bad = store.add("hl7v2", "AR 100: unreadable", "MSH|nonsense")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{svc.api_port}") as client:
            response = await client.post("/api/v1/dead-letters/replay", json={"source": "hl7v2"})
            unknown = await client.post("/api/v1/dead-letters/replay", json={"ids": [999]})
        assert response.status_code == 200
        body = response.json()
        assert (body["taken"], body["still_rejected"]) == (1, 1)
        by_id = {r["id"]: r for r in body["replayed"]}
        assert by_id[good]["taken"] and not by_id[bad]["taken"]
        assert store.get(good).replayed_time is not None  # type: ignore[union-attr]
        assert store.get(bad).replayed_time is None  # type: ignore[union-attr]
        assert len(store.query()) == 2  # the failed replay did not add a letter
        assert unknown.status_code == 404
        v8 = visit_pseudonym(svc.settings.data_dir, "V8")
        assert any(r["encounter_id"] == v8 for r in svc.runtime.log.raw_records())
    finally:
        await svc.stop()
