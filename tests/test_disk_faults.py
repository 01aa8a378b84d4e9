"""Disk faults for real: carescore's data folder on a small filesystem the test fills up.

A tmpfs of 48 MB is mounted by the test (Linux, root, as on the build and CI machines). A
real `carescore run` keeps its data folder there; the test sends STAT lab pairs over MLLP,
fills the filesystem with a ballast file while sending, and then frees it. Promises held:

- while the disk is full, messages are answered AE (never AA without the events on disk) and
  the process keeps answering;
- what was refused is not in the log: once space returns, the same messages are resent and
  AA'd, and every pair is counted exactly once (lab_tat_stat `n`, live and in the period
  report, equals the number of pairs: one observation per order id);
- the log is not corrupt: a SIGKILL and a start afterwards read it whole
  (carescore_eventlog_corrupt_lines_total 0), with the same counts.

And a corrupt line written into the middle of a segment (a bad sector) is quarantined
with a metric at the next start, never a failed start.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from carescore.transports.embedded import EmbeddedRuntime
from engine.bus import Published, StorageUnavailable
from engine.config import Settings
from tests.alerting import free_port
from tests.helpers import lab
from tests.labserver import (
    Server,
    control_id,
    exchange,
    facility_n,
    logged,
    order,
    report_n,
    result,
    wait_for,
    write_config,
)
from tests.smalldisk import fill


def pairs(count: int, first: datetime, prefix: str) -> list[tuple[str, str]]:
    out = []
    for k in range(count):
        ordered = first + timedelta(seconds=k)
        pair = f"{prefix}{k:05d}"
        out.append((order(pair, ordered), result(pair, ordered, ordered + timedelta(minutes=9))))
    return out


def send(sock: socket.socket, message: str) -> str:
    ack = exchange(sock, message)
    return ack.split("\r")[1].split("|")[1]  # MSA-1


@pytest.mark.timeout(600)
def test_a_full_disk_answers_ae_loses_nothing_and_counts_nothing_twice(
    tmp_path: Path, small_disk: Path
) -> None:
    mllp, api = free_port(), free_port()
    config = write_config(tmp_path, mllp, api, data=small_disk / "data")
    server = Server(config, api, tmp_path / "carescore.log")
    now = datetime.now(UTC).replace(microsecond=0)
    sent = pairs(600, now - timedelta(minutes=50), "D")
    messages = [m for pair in sent for m in pair]
    server.start()
    try:
        sock = socket.create_connection(("127.0.0.1", mllp), timeout=30)
        for message in messages[:200]:
            assert send(sock, message) == "AA"

        ballast = fill(small_disk, leave=64 * 1024)
        answers: dict[str, str] = {}
        for message in messages[200:]:
            answers[control_id(message)] = send(sock, message)
            if list(answers.values())[-20:].count("AE") == 20:
                break  # the disk is full: refused, and refused again
        refused = [m for m in messages[200:] if answers.get(control_id(m)) == "AE"]
        assert len(refused) >= 20, answers
        assert set(answers.values()) <= {"AA", "AE"}
        assert httpx.get(server.url("/healthz"), timeout=10).status_code == 200  # still answering

        ballast.unlink()  # space returns
        for message in messages[200:]:  # the interface engine resends what was not AA'd, and the rest
            if answers.get(control_id(message)) != "AA":
                assert send(sock, message) == "AA"
        for message in messages[200:260]:  # some AA'd ones once more (a lost ACK): duplicates
            assert send(sock, message) == "AA"
        sock.close()

        total = len(sent)
        wait_for(f"live n == {total}", lambda: facility_n(server, "lab_tat_stat") == total, timeout=60)
        metrics = httpx.get(server.url("/metrics"), timeout=10).text
        errors = [
            line for line in metrics.splitlines() if line.startswith("carescore_eventlog_write_errors_total")
        ]
        assert errors and float(errors[0].split()[-1]) >= 1, errors  # the refusals came from the log

        server.kill()  # and what is on disk reads back whole
        server.start()
        wait_for(f"live n == {total} after restart", lambda: facility_n(server, "lab_tat_stat") == total)
        start, end = now - timedelta(hours=2), now + timedelta(hours=1)
        assert report_n(server, "lab_tat_stat", start, end) == total
        stored = logged(small_disk / "data")  # each message's events once in the log, no more, no less
        assert (stored.get("lab.order"), stored.get("lab.result")) == (total, total), stored
        metrics = httpx.get(server.url("/metrics")).text
        assert "carescore_eventlog_corrupt_lines_total 0.0" in metrics
        # this restart's history, on the same disk with room again: every write stored, none held
        assert "carescore_history_write_errors_total 0.0" in metrics
        assert "carescore_history_held_windows 0.0" in metrics
    finally:
        server.stop()


@pytest.mark.timeout(300)
def test_a_corrupt_line_mid_segment_is_quarantined_not_a_failed_start(tmp_path: Path) -> None:
    mllp, api = free_port(), free_port()
    server = Server(write_config(tmp_path, mllp, api), api, tmp_path / "carescore.log")
    now = datetime.now(UTC).replace(microsecond=0)
    sent = pairs(50, now - timedelta(minutes=50), "Q")
    server.start()
    try:
        with socket.create_connection(("127.0.0.1", mllp), timeout=30) as sock:
            for o, r in sent:
                assert send(sock, o) == "AA"
                assert send(sock, r) == "AA"
        server.kill()
        (tmp_path / "data" / "snapshot.json").unlink(missing_ok=True)  # replay the whole log
        segment = tmp_path / "data" / "events" / "events-00000000.ndjson"
        lines = segment.read_bytes().split(b"\n")
        results = [i for i, line in enumerate(lines) if b'"lab.result"' in line]
        assert len(results) == 50
        lines[results[5]] = b"\xff\xfe garbage " + b"\0" * 40  # a bad sector in place of one result
        segment.write_bytes(b"\n".join(lines))
        server.start()
        metrics = httpx.get(server.url("/metrics"), timeout=10).text
        assert "carescore_eventlog_corrupt_lines_total 1.0" in metrics
        quarantine = (tmp_path / "data" / "events" / "quarantine.ndjson").read_text()
        assert "garbage" in quarantine
        # that pair's order stays open (under the 60 min timeout: not counted); the rest of the
        # log is read past the bad line, so the other 49 pairs count
        wait_for("the log read past the bad line", lambda: facility_n(server, "lab_tat_stat") == 49)
    finally:
        server.stop()


async def test_a_resend_while_the_first_copy_is_being_written_shares_its_fate(
    small_disk: Path, settings_for: Callable[..., Settings]
) -> None:
    """An interface engine that times out resends the same message on a new connection while
    the first copy may still be on its way to disk. Answering the resend AA at once (it is a
    'duplicate') would acknowledge a message that is lost if that first write then fails; the
    resend must wait for the first copy and share its outcome: AE both if the disk is full,
    and once space returns the message is stored once."""
    runtime = EmbeddedRuntime(settings_for(data_dir=small_disk / "data"))
    try:
        events = [lab("lab.order", 0, "RESEND1"), lab("lab.result", 9, "RESEND1")]
        ballast = fill(small_disk, leave=0)
        first = runtime.publish_nowait("MSG-RESEND1", events)
        again = runtime.publish_nowait("MSG-RESEND1", events)  # before the first is written
        assert not again.done()  # not answered ahead of the first copy
        for copy in (first, again):
            with pytest.raises(StorageUnavailable):
                await asyncio.wait_for(copy, 30)
        ballast.unlink()
        assert await asyncio.wait_for(runtime.publish_nowait("MSG-RESEND1", events), 30) is Published.accepted
        resent = runtime.publish_nowait("MSG-RESEND1", events)
        assert await asyncio.wait_for(resent, 30) is Published.duplicate
    finally:
        await runtime.close()
    assert logged(small_disk / "data") == {"lab.order": 1, "lab.result": 1}
