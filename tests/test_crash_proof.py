"""Crash proof: a real `carescore run` SIGKILLed again and again under 8 MLLP senders.

What AA promises (README "Guarantees"): once a message is acknowledged with AA its events are
fsync'd in the event log, and they are counted once, whatever happens to the process after.
The test holds the process to that the way an interface engine would find out:

- 8 sender threads send STAT lab order/result pairs, stop-and-wait, each pair with its own
  order id. A sender whose connection breaks or whose ACK does not come reconnects and sends
  the same message again (what every interface engine does); one in ten AA'd messages is sent
  again as well (a lost ACK seen from the other side). So the server sees resends of messages
  it never stored, of messages it stored but did not get to acknowledge, and of acknowledged ones.
- The server is SIGKILLed 24 times at different moments: after a random number of further
  ACKs (anywhere in receive, fsync, processing, tick), and while a snapshot is being written
  (a snapshot.*.tmp exists), then started again as a user starts it.

Expected, from the definition of the STAT turnaround KPI (kpi_defs/lab_tat_stat.yaml: one
observation per STAT order id with a final result, keyed by order_id): every pair is AA'd in
the end, so the facility's live `n` and the period report's `n` are both exactly the number of
pairs — 8 senders x PAIRS_PER_SENDER. A lost accepted event makes n smaller, a double count
larger. n alone cannot see a message stored twice (the KPI keeps the first order and result of
an order id), so the event log itself is read too: every order and result event exactly once.
"""

from __future__ import annotations

import random
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.alerting import free_port
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

SENDERS = 8
PAIRS_PER_SENDER = 500  # 4,000 pairs, 8,000 messages
PACE = 0.005  # seconds between a sender's messages: live traffic, so the kills fall among it
KILLS = 24


@dataclass(eq=False)
class Sender(threading.Thread):
    port: int
    messages: list[str]
    seed: int
    acked: set[str] = field(default_factory=set)
    resends: int = 0
    error: str | None = None

    def __post_init__(self) -> None:
        threading.Thread.__init__(self, daemon=True)

    def run(self) -> None:
        rng = random.Random(self.seed)
        sock: socket.socket | None = None
        deadline = time.monotonic() + 600
        i = 0
        try:
            while i < len(self.messages):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"sender stuck at message {i}")
                text = self.messages[i]
                try:
                    if sock is None:
                        sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
                    ack = exchange(sock, text)
                except OSError:  # refused while down, reset by the kill, no ACK in time
                    if sock is not None:
                        sock.close()
                    sock = None
                    self.resends += 1
                    time.sleep(0.05)  # a retry interval, as interface engines have
                    continue
                if "|AA|" not in ack:
                    self.resends += 1  # AE: not stored (the server was going down); send again
                    continue
                self.acked.add(control_id(text))
                time.sleep(PACE)
                if rng.random() < 0.1:
                    continue  # the same message once more: the ACK might have been lost
                i += 1
        except Exception as exc:  # reported by the test
            self.error = repr(exc)
        finally:
            if sock is not None:
                sock.close()


def problems(server: Server) -> list[str]:
    """The /metrics lines that count events the engine raised on or found late."""
    metrics = httpx.get(server.url("/metrics"), timeout=10).text
    return [
        line
        for line in metrics.splitlines()
        if line.startswith("carescore_engine_event_errors") or ("late" in line and "lab_tat_stat" in line)
    ]


@pytest.mark.timeout(900)
def test_every_aad_pair_is_counted_once_across_24_sigkills(tmp_path: Path) -> None:
    mllp, api = free_port(), free_port()
    server = Server(write_config(tmp_path, mllp, api), api, tmp_path / "carescore.log")
    now = datetime.now(UTC).replace(microsecond=0)
    first = now - timedelta(minutes=50)  # the last result 5 min before now: all in the live hour
    senders = []
    for s in range(SENDERS):
        messages = []
        for k in range(PAIRS_PER_SENDER):
            pair = f"{s}{k:04d}"
            ordered = first + timedelta(seconds=(s * PAIRS_PER_SENDER + k) * 0.5)
            messages += [order(pair, ordered), result(pair, ordered, ordered + timedelta(minutes=12))]
        senders.append(Sender(mllp, messages, seed=s))
    total_pairs = SENDERS * PAIRS_PER_SENDER
    snapshot_dir = tmp_path / "data"
    rng = random.Random(11)
    kills: list[str] = []

    def acked() -> int:
        return sum(len(x.acked) for x in senders)

    server.start()
    try:
        for sender in senders:
            sender.start()
        for k in range(KILLS):
            if k % 3 == 2:  # while a forked child is writing the snapshot
                found = wait_for(
                    "a snapshot being written",
                    lambda: any(snapshot_dir.glob("snapshot.*.tmp")),
                    timeout=20,
                    every=0.0005,
                )
                assert found
                kills.append("mid-snapshot")
            else:  # after some more ACKs: anywhere in receive, fsync, processing, tick
                goal = acked() + rng.randint(3, 60)
                wait_for(
                    f"{goal} ACKs",
                    lambda goal=goal: acked() >= goal or not any(x.is_alive() for x in senders),
                    every=0.002,
                )
                kills.append("after ACKs")
            server.kill()
            server.start()
        assert any(x.is_alive() for x in senders), "the senders finished before the kills did: send more"
        for sender in senders:
            sender.join(600)
        errors = [x.error for x in senders if x.error]
        assert not errors, errors
        all_ids = {control_id(m) for x in senders for m in x.messages}
        assert set().union(*(x.acked for x in senders)) == all_ids  # every message AA'd in the end
        assert sum(x.resends for x in senders) > 0

        # once more, killed right after the last ACK: what is on disk must be enough
        server.kill()
        server.start()
        seen: list[int | None] = []
        try:
            wait_for(
                f"live n == {total_pairs}",
                lambda: seen.append(facility_n(server, "lab_tat_stat")) or seen[-1] == total_pairs,
                timeout=60,
            )
        except AssertionError:  # where the pair went: the log, the period report, the live state
            raise AssertionError(
                f"live n is {seen[-1]}, not {total_pairs}; the log holds "
                f"{logged(tmp_path / 'data')}, the period report says "
                f"{report_n(server, 'lab_tat_stat', first - timedelta(hours=1), now + timedelta(hours=1))}, "
                f"engine errors and late events: {problems(server)}"
            ) from None
        start, end = first - timedelta(hours=1), now + timedelta(hours=1)
        assert report_n(server, "lab_tat_stat", start, end) == total_pairs
        stored = logged(tmp_path / "data")  # each message's events once in the log, no more, no less
        assert (stored.get("lab.order"), stored.get("lab.result")) == (total_pairs, total_pairs), stored
        # the live value holds still (not climbing past the total: nothing counted twice later)
        assert facility_n(server, "lab_tat_stat") == total_pairs
        metrics = httpx.get(server.url("/metrics"), timeout=10).text
        for clean in (
            "carescore_engine_event_errors_total 0.0",
            "carescore_eventlog_corrupt_lines_total 0.0",
        ):
            assert clean in metrics
        assert kills.count("mid-snapshot") >= KILLS // 3
    finally:
        server.stop()
