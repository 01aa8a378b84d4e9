"""PHI kept small: identifiers pseudonymised before they are stored, a private data folder,
and retention of what must hold raw PHI (dead letters, inbox done/ and failed/ files)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import socket
import sqlite3
import stat
import zlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from connectors.hl7v2 import messages as m
from engine.config import Settings
from engine.events import EncounterEvent
from engine.privacy import Pseudonyms, load_key, pseudonyms_from
from engine.yamlconf import ConfigError
from tests.labserver import FACILITY, Server, exchange, wait_for, write_config
from tests.smalldisk import fill

MRN = "MRN-4471-2093"
VISITS = ("VN-8812-0001", "VN-8812-0002")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the pseudonym itself ------------------------------------------------------------------
def test_pseudonym_is_hmac_sha256_of_namespace_and_value(tmp_path: Path) -> None:
    key = b"k" * 32
    # by hand: HMAC-SHA256(key, b"pt" NUL b"MRN-4471-2093"), first 16 bytes as hex, after "pt-"
    expected = "pt-" + hmac.new(key, b"pt\x00" + MRN.encode(), hashlib.sha256).hexdigest()[:32]
    p = Pseudonyms(key)
    assert p.of("pt", MRN) == expected
    assert p.of("pt", MRN) == Pseudonyms(b"k" * 32).of("pt", MRN)  # same key: links stays
    assert Pseudonyms(b"j" * 32).of("pt", MRN) != expected  # another key: unlinkable
    assert p.of("enc", MRN) != expected  # an MRN and a visit number that look alike stay apart
    assert "k" * 32 not in repr(p)
    with pytest.raises(ValueError, match="at least 32 bytes"):
        Pseudonyms(b"short")


def test_apply_replaces_only_identifier_fields() -> None:
    p = Pseudonyms(b"s" * 32)
    now = datetime.now(UTC)
    event = EncounterEvent(
        type="encounter.swap_beds",
        event_time=now,
        received_time=now,
        source="hl7v2",
        source_id="EMR|1|abc#0",
        facility="DEMO",
        unit="4W",
        encounter_id="V1",
        patient_id=MRN,
        other_encounter_id="V2",
        patient_class="inpatient",
    )
    (out,) = p.apply([event])
    assert isinstance(out, EncounterEvent)
    assert out.patient_id == p.of("pt", MRN)
    assert (out.encounter_id, out.other_encounter_id) == (p.of("enc", "V1"), p.of("enc", "V2"))
    kept = (out.source_id, out.unit, out.patient_class, out.ts)
    assert kept == ("EMR|1|abc#0", "4W", "inpatient", event.ts)
    assert event.patient_id == MRN  # the connector's own event is not changed under it


def test_key_file_is_made_private_once_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "secrets" / "pseudonym.key"
    first = load_key(path)
    assert len(first) == 64 and stat.S_IMODE(path.stat().st_mode) == 0o600  # 32 random bytes, hex
    assert load_key(path) == first
    short = tmp_path / "short.key"
    short.write_text("too short\n")
    with pytest.raises(ConfigError, match=r"privacy.pseudonym_key_file: .*short.key: .*at least 32 bytes"):
        pseudonyms_from(short)


def test_a_key_that_could_not_be_written_whole_is_not_left_half_made(small_disk: Path) -> None:
    """The key is made at the first start. A disk that fills (or a kill) while it is written
    must not leave an empty key file behind: every later start would refuse it as too short,
    and the service would not come up again until someone deleted it by hand."""
    path = small_disk / "data" / "pseudonym.key"
    path.parent.mkdir()
    ballast = fill(small_disk, leave=0)
    with pytest.raises(ConfigError, match=r"privacy.pseudonym_key_file: .*pseudonym.key: .*No space left"):
        pseudonyms_from(path)
    assert list(path.parent.iterdir()) == []  # no key, and no temporary file either
    ballast.unlink()
    key = load_key(path)  # the next start makes it
    assert len(key) == 64 and load_key(path) == key
    assert list(path.parent.iterdir()) == [path]


def readable(path: Path) -> bytes:
    """A file's bytes as a reader of the disk would get them: snapshots are zlib'd JSON
    (engine/checkpoint.py), so compressed bytes would hide an MRN from a plain search."""
    raw = path.read_bytes()
    try:
        return raw + zlib.decompress(raw)
    except zlib.error:
        return raw


# -- end to end: HL7 over MLLP into a real `carescore run` ---------------------------------
def _stay_messages(now: datetime) -> list[str]:
    """Stay 1 admitted 20 days ago, discharged home (PV1-36 01) 15 days ago; stay 2 admitted
    5 days ago. By hand: one index discharge (stay 1), readmitted 10 days later (< 30): the
    30-day readmission rate of the discharging unit is 1 / 1 x 100 = 100."""
    patient = m.Patient(MRN, "Doe", "Jane", "19700101", "F")
    first = m.Visit(patient, "I", m.Location("ICUL", "1", "01", FACILITY), VISITS[0], FACILITY)
    second = m.Visit(patient, "I", m.Location("ICUL", "1", "02", FACILITY), VISITS[1], FACILITY)
    admit1, out1, admit2 = now - timedelta(days=20), now - timedelta(days=15), now - timedelta(days=5)
    return [
        m.adt("A01", admit1, first, admit=admit1),
        m.adt("A03", out1, first, admit=admit1, discharge=out1, disposition="01"),
        m.adt("A01", admit2, second, admit=admit2),
    ]


def test_mrn_reaches_no_file_and_readmission_still_links(tmp_path: Path) -> None:
    mllp, api = free_port(), free_port()
    config = write_config(tmp_path, mllp, api)
    data = tmp_path / "data"
    server_log = tmp_path / "server.log"
    server = Server(config, api, server_log)
    server.start()
    try:
        now = datetime.now(UTC).replace(microsecond=0)
        with socket.create_connection(("127.0.0.1", mllp), timeout=30) as sock:
            for message in _stay_messages(now):
                assert "MSA|AA|" in exchange(sock, message)

        def readmitted() -> Any:
            body = httpx.get(server.url("/api/v1/kpis/readmission_30d_rate"), params={"unit": "ICUL"}).json()
            found = [v for v in body["values"] if v["group"]["unit"] == "ICUL" and v["numerator"] == 1]
            return found[0] if found else None

        value = wait_for("the readmission linked", readmitted)
        assert (value["numerator"], value["denominator"], value["value"]) == (1, 1, 100)
        wait_for("a snapshot", lambda: (data / "snapshot.json").exists())
    finally:
        server.stop()
    key = (data / "pseudonym.key").read_bytes().strip()
    by_hand = "pt-" + hmac.new(key, b"pt\x00" + MRN.encode(), hashlib.sha256).hexdigest()[:32]
    contents = {p: readable(p) for p in data.rglob("*") if p.is_file()}
    assert any(by_hand.encode() in c for p, c in contents.items() if "events" in p.parts)
    assert any(p.name == "snapshot.json" and by_hand.encode() in c for p, c in contents.items())
    for secret in (MRN, *VISITS):
        holding = [str(p.relative_to(data)) for p, c in contents.items() if secret.encode() in c]
        assert holding == [], f"{secret} stored in {holding}"
        assert secret.encode() not in server_log.read_bytes()  # nor logged at INFO
    # file modes: the folder and everything carescore made in it are the owner's only
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    modes = {str(p.relative_to(data)): stat.S_IMODE(p.stat().st_mode) for p in data.rglob("*")}
    assert len(modes) > 5, modes
    assert {k: v for k, v in modes.items() if v & 0o077} == {}


# -- retention -------------------------------------------------------------------------------
async def _until(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_purge_job_deletes_old_dead_letters_and_filed_inbox_files(
    settings_for: Callable[..., Settings],
) -> None:
    from carescore.serve import Service

    settings = settings_for(
        privacy={"purge_every": 0.2},
        dead_letters={"retention": "1d"},
        feeds={"retention": "1d", "poll": 0.05},
    )
    svc = Service(settings)
    await svc.start()
    try:
        done = settings.inbox / "done"
        await _until(done.exists)
        # made after the first purge: only a purge that keeps running deletes them
        await asyncio.sleep(0.3)
        two_days_ago = datetime.now(UTC).timestamp() - 2 * 86400
        old, fresh = done / "20250101T000000Z-roster.csv", done / "20250102T000000Z-roster.csv"
        for path in (old, old.with_name(old.name + ".result.json"), fresh):
            path.write_text("staff_id,unit\nRN1,4W\n")
        os.utime(old, (two_days_ago, two_days_ago))
        os.utime(old.with_name(old.name + ".result.json"), (two_days_ago, two_days_ago))
        store = svc.runtime.dead_letters
        stale = store.add("hl7v2", "AR 100: test", f"MSH|^~\\&|EMR|{MRN}")
        kept = store.add("hl7v2", "AR 100: test", "MSH|^~\\&|EMR|recent")
        store.flush()
        with sqlite3.connect(store.path) as db:  # received two days ago, past the 1-day retention
            db.execute(
                "UPDATE dead_letters SET received_time = ? WHERE id = ?",
                ((datetime.now(UTC) - timedelta(days=2)).isoformat(), stale),
            )
        await _until(lambda: not old.exists() and store.get(stale) is None)
        assert fresh.exists() and store.get(kept) is not None
        assert not old.with_name(old.name + ".result.json").exists()
    finally:
        await svc.stop()
