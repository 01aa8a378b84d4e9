"""Issue 12 for alerts, "nothing accepted is lost, nothing hostile stops the service", against
real faults: the real SQLite store while another connection holds its write lock (so writes
fail for real, as during a backup or in an operator's sqlite3 shell), a PostgreSQL connection
the server drops, a unit code carrying CR/LF from a feed, an SMTP server (aiosmtpd) that
refuses one recipient, an outbox row the email channel cannot render, and a staff id a
pager header cannot carry as it is. Mail is read back
from the SMTP server; time is the rig's clock (tests/alerting.py), waits poll with a deadline."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote

import psycopg
import pytest
from aiosmtpd.controller import Controller
from prometheus_client import REGISTRY

from alerts.channels.email import EmailChannel
from alerts.channels.webhook import WebhookChannel
from alerts.store import AlertStore, Notice, OutboxItem
from tests.alerting import ICU, W4, Mailbox, Rig, free_port, make_rig

TAT = "lab_tat_stat"  # critical 75, clear 55, for 30 s
HOSTILE = ("DEMO", "critical_care", "ICU\r\nBcc: attacker@evil.example")  # HL7 \X0D0A\ decoded

ROUTES = """
routes:
  - name: unit
    match: {kind: kpi}
    receivers: [charge_nurse, house_supervisor]
    group_wait: 0s
roles:
  charge_nurse: {scope: unit, fallback: {ICU: [cn-icu]}}
  house_supervisor: {scope: facility, fallback: {DEMO: [hs]}}
people:
  cn-icu: {name: ICU charge nurse, email: cn-icu@ward.example}
  hs: {name: House supervisor, email: hs@ward.example}
"""

T = TypeVar("T")


class Inbox(Mailbox):
    """An aiosmtpd handler keeping each message's bytes as sent; it refuses the recipients in
    `refuse` with the given SMTP reply (a real RCPT TO answer) and counts those attempts."""

    def __init__(self, refuse: dict[str, str] | None = None) -> None:
        super().__init__()
        self.raw: list[tuple[list[str], bytes]] = []
        self.refuse = refuse or {}
        self.refused: list[str] = []

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        if address in self.refuse:
            self.refused.append(address)
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.raw.append((list(envelope.rcpt_tos), bytes(envelope.content)))
        return await super().handle_DATA(server, session, envelope)

    def to(self, address: str) -> list[EmailMessage]:
        """Messages for this address, parsed as a mail client would (headers unfolded)."""
        return [
            message_from_bytes(raw, _class=EmailMessage, policy=policy.default)  # type: ignore[misc]
            for rcpts, raw in self.raw
            if address in rcpts
        ]


@pytest.fixture
def smtp_server() -> Iterator[Callable[..., tuple[int, Inbox]]]:
    started: list[Controller] = []

    def start(refuse: dict[str, str] | None = None) -> tuple[int, Inbox]:
        inbox, port = Inbox(refuse), free_port()
        controller = Controller(inbox, hostname="127.0.0.1", port=port)
        controller.start()
        started.append(controller)
        return port, inbox

    yield start
    for controller in started:
        controller.stop()


@pytest.fixture
def pg(postgres_url: str) -> str:
    """A fresh database on the session's PostgreSQL server."""
    name = f"t{uuid.uuid4().hex[:12]}"
    admin = postgres_url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return postgres_url.rsplit("/", 1)[0] + f"/{name}"


def mail_rig(tmp_path: Path, port: int, store: AlertStore, max_attempts: int = 8) -> Rig:
    """The real service and store, mailing people through the real EmailChannel."""
    rig = make_rig(tmp_path, routes=ROUTES, store=store)
    rig.service.channels["email"] = EmailChannel("127.0.0.1", port, "carescore@hospital.example")
    rig.service.max_attempts = max_attempts
    return rig


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def until(what: str, probe: Callable[[], T], timeout: float = 10.0) -> T:
    """Poll `probe` until it returns something truthy; fail with `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@contextlib.contextmanager
def write_locked(path: Path) -> Iterator[None]:
    """Another connection holds the database's write lock (BEGIN EXCLUSIVE) until the block ends."""
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        other.execute("ROLLBACK")
        other.close()


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


# -- the store fails at fire time ------------------------------------------------------------


async def test_a_fire_the_locked_store_refuses_is_kept_retried_surfaced_then_stored_and_mailed(
    tmp_path: Path, smtp_server: Callable[..., tuple[int, Inbox]], caplog: pytest.LogCaptureFixture
) -> None:
    port, inbox = smtp_server()
    path = tmp_path / "alerts.sqlite"
    rig = mail_rig(tmp_path, port, AlertStore(path, busy_timeout=0.05))
    svc = rig.service
    errors = metric("carescore_alert_store_errors_total", operation="record fired")
    await rig.step(0, rig.sample(TAT, 90))  # breaching; fires once `for` (30 s) has passed
    with write_locked(path), caplog.at_level(logging.ERROR, logger="alerts.service"):
        await rig.step(40, rig.sample(TAT, 90))  # fires now: the store cannot take it
        fired_at = rig.clock.now
        assert svc.store.query() == []  # really not stored (read through the WAL)
        assert svc.unstored == 1 and not svc.store_healthy and svc.store_failing_since == fired_at
        assert metric("carescore_alert_store_errors_total", operation="record fired") == errors + 1
        assert metric("carescore_alert_changes_unstored") == 1
        (record,) = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert "record fired failed" in record.getMessage() and "locked" in record.getMessage()
        for _ in range(20):  # 20 s of ticks while the lock is held
            await rig.step(1, rig.sample(TAT, 90))
        tries = metric("carescore_alert_store_errors_total", operation="record fired") - errors
        assert 2 <= tries <= 6  # tried again, but with backoff: not on each of the 20 ticks
        assert svc.unstored == 1  # the one change, neither lost nor duplicated
        assert svc.store.query() == [] and inbox.raw == [] and not svc.store_healthy
    await rig.step(40, rig.sample(TAT, 90))  # the lock is gone; past the backoff
    (mail,) = await until("the alert mailed", lambda: inbox.to("hs@ward.example"))
    assert str(mail["Subject"]).startswith("[CRITICAL] ICU: STAT lab turnaround")
    (alert,) = svc.store.query()
    assert alert["state"] == "firing" and alert["fired_at"] == iso(fired_at)  # when it fired
    assert [a["action"] for a in svc.store.audit(alert["id"])][:2] == ["fired", "routed (unit)"]
    assert [p["event"] for _, p in rig.hook.sent] == ["fired"]  # integrations told once
    assert svc.store_healthy and svc.store_failing_since is None and svc.unstored == 0
    assert metric("carescore_alert_changes_unstored") == 0


async def test_a_fire_and_its_resolve_during_an_outage_are_stored_in_order(tmp_path: Path) -> None:
    path = tmp_path / "alerts.sqlite"
    rig = make_rig(tmp_path, store=AlertStore(path, busy_timeout=0.05))
    svc = rig.service
    await rig.step(0, rig.sample(TAT, 90))
    with write_locked(path):
        await rig.step(40, rig.sample(TAT, 90))  # fired
        fired_at = rig.clock.now
        await rig.step(60, rig.sample(TAT, 50))  # resolved (below clear), still not stored
        resolved_at = rig.clock.now
        assert svc.unstored == 2 and svc.store.query() == []
    await rig.step(60, rig.sample(TAT, 50))
    (alert,) = svc.store.query()
    assert (alert["state"], alert["fired_at"], alert["resolved_at"]) == (
        "resolved",
        iso(fired_at),
        iso(resolved_at),
    )
    assert [a["action"] for a in svc.store.audit(alert["id"])][:2] == ["fired", "resolved"]
    # integrations hear the resolve (the fired notice, not delivered before it, is cancelled)
    assert [(p["event"], p["fired_at"]) for _, p in rig.hook.sent] == [("resolved", iso(fired_at))]
    assert svc.store_healthy and svc.unstored == 0


async def test_a_postgres_connection_the_server_dropped_is_opened_again(
    tmp_path: Path, pg: str, smtp_server: Callable[..., tuple[int, Inbox]]
) -> None:
    port, inbox = smtp_server()
    rig = mail_rig(tmp_path, port, AlertStore(pg))
    svc = rig.service
    errors = metric("carescore_alert_store_errors_total", operation="record fired")
    await rig.step(0, rig.sample(TAT, 90))
    with psycopg.connect(pg, autocommit=True) as admin:  # as a server restart or failover would
        killed = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
    assert killed == [(True,), (True,)]  # the alert store's connection and the action plans' own
    await rig.step(40, rig.sample(TAT, 90))  # fires on a dead connection
    assert metric("carescore_alert_store_errors_total", operation="record fired") == errors + 1
    assert svc.unstored == 1 and not svc.store_healthy
    await rig.step(2, rig.sample(TAT, 90))  # past the backoff: a new connection takes it
    (mail,) = await until("the alert mailed", lambda: inbox.to("hs@ward.example"))
    assert str(mail["Subject"]).startswith("[CRITICAL] ICU:")
    assert len(svc.store.active()) == 1 and svc.store_healthy and svc.unstored == 0


# -- a notice that cannot be rendered or sent ---------------------------------------------------


async def test_a_unit_code_with_cr_lf_is_mailed_with_a_one_line_subject_and_blocks_nothing(
    tmp_path: Path, smtp_server: Callable[..., tuple[int, Inbox]]
) -> None:
    port, inbox = smtp_server()
    rig = mail_rig(tmp_path, port, AlertStore(tmp_path / "alerts.sqlite"))
    errors = metric("carescore_alert_notice_errors_total", channel="email")
    await rig.step(0, rig.sample(TAT, 90, HOSTILE), rig.sample(TAT, 90, ICU))
    await rig.step(40, rig.sample(TAT, 90, HOSTILE), rig.sample(TAT, 90, ICU))  # both fire
    first = next(r for r in rig.service.store.outbox() if r["channel"] == "email")
    assert first["payload"]["alerts"][0]["unit"] == HOSTILE[2]  # the hostile one is first in line
    mails = await until(
        "both alerts mailed", lambda: inbox.to("hs@ward.example") if len(inbox.raw) >= 3 else []
    )
    assert len(mails) == 2
    assert sorted(rcpts for rcpts, _ in inbox.raw) == [
        ["cn-icu@ward.example"],
        ["hs@ward.example"],
        ["hs@ward.example"],
    ]  # nobody added by the code's "Bcc:"
    subjects = sorted(str(m["Subject"]).strip() for m in mails)  # long ones are folded (RFC 5322)
    assert subjects[0].startswith("[CRITICAL] ICU Bcc: attacker@evil.example: STAT lab turnaround")
    assert subjects[1].startswith("[CRITICAL] ICU: STAT lab turnaround")
    for mail in mails:
        assert "\r" not in str(mail["Subject"]) and "\n" not in str(mail["Subject"])
        assert mail["Bcc"] is None
    for _, raw in inbox.raw:  # as sent: no header line was injected
        head = raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
        assert not [h for h in head.splitlines() if h.lower().startswith(b"bcc")]
    assert all(r["delivered_at"] and not r["failed_at"] for r in rig.service.store.outbox())
    assert metric("carescore_alert_notice_errors_total", channel="email") == errors  # clean, no retry


@pytest.mark.parametrize(
    ("reply", "attempts"),
    [
        ("550 5.1.1 mailbox unavailable", 1),  # permanent: failed at once
        ("451 4.2.0 greylisted, try again later", 3),  # temporary: retried, failed at max_attempts
    ],
)
async def test_a_recipient_the_server_refuses_fails_alone_while_the_others_go_out(
    tmp_path: Path, smtp_server: Callable[..., tuple[int, Inbox]], reply: str, attempts: int
) -> None:
    port, inbox = smtp_server(refuse={"cn-icu@ward.example": reply})
    rig = mail_rig(tmp_path, port, AlertStore(tmp_path / "alerts.sqlite"), max_attempts=3)
    dead: list[tuple[OutboxItem, str]] = []
    rig.service.on_failed = lambda item, error: dead.append((item, error))
    await rig.step(0, rig.sample(TAT, 90))
    await rig.step(40, rig.sample(TAT, 90))  # fired: a notice to the charge nurse, then to hs
    await until("hs mailed", lambda: inbox.to("hs@ward.example"))
    assert inbox.refused == ["cn-icu@ward.example"]
    await rig.step(0.2)  # at once: a refused notice waits for its backoff (>= 0.5 s)
    assert inbox.refused == ["cn-icu@ward.example"]
    for _ in range(6):  # 30 s: enough for two more tries (1 s and 2 s backoff, +-50 %)
        await rig.step(5)
    assert len(inbox.refused) == attempts
    assert len(inbox.to("hs@ward.example")) == 1  # the other notice went out once, first time
    (refused,) = [r for r in rig.service.store.outbox() if r["recipient"] == "cn-icu"]
    assert refused["failed_at"] and refused["attempts"] == attempts and reply[:3] in refused["last_error"]
    assert [item.recipient for item, _ in dead] == ["cn-icu"]


async def test_a_notice_that_raises_while_rendering_is_retried_alone_then_failed(
    tmp_path: Path, smtp_server: Callable[..., tuple[int, Inbox]], caplog: pytest.LogCaptureFixture
) -> None:
    """An outbox row the channel cannot render (here: a payload without its alerts, as an older
    release or a bad restore might leave) raises inside the email channel, not a DeliveryError.
    It must neither hold up the notice queued after it nor be sent for ever."""
    port, inbox = smtp_server()
    rig = mail_rig(tmp_path, port, AlertStore(tmp_path / "alerts.sqlite"), max_attempts=3)
    dead: list[tuple[OutboxItem, str]] = []
    rig.service.on_failed = lambda item, error: dead.append((item, error))
    errors = metric("carescore_alert_notice_errors_total", channel="email")
    await rig.step(0, rig.sample(TAT, 90, ICU))
    await rig.step(40, rig.sample(TAT, 90, ICU))
    await until("the ICU alert mailed", lambda: inbox.to("hs@ward.example"))
    (icu,) = rig.service.store.active()
    broken = {"event": "fired", "recipient": {"email": "hs@ward.example"}}  # no "alerts"
    rig.service.store.queue([Notice("email", "legacy-1", broken, (icu["id"],), "fired")])
    with caplog.at_level(logging.ERROR, logger="alerts.service"):
        await rig.step(0, rig.sample(TAT, 90, W4))  # a 4W breach queued behind the broken row
        await rig.step(40, rig.sample(TAT, 90, W4))  # 4W fires
        w4 = await until(
            "the 4W alert mailed", lambda: [m for m in inbox.to("hs@ward.example") if "4W" in m["Subject"]]
        )
        assert len(w4) == 1
        row = next(r for r in rig.service.store.outbox() if r["idempotency_key"] == "legacy-1")
        assert row["attempts"] >= 1 and "KeyError" in row["last_error"] and not row["failed_at"]
        for _ in range(6):
            await rig.step(5, rig.sample(TAT, 90, W4))
    row = next(r for r in rig.service.store.outbox() if r["idempotency_key"] == "legacy-1")
    assert row["failed_at"] and row["attempts"] == 3 and row["delivered_at"] is None
    assert metric("carescore_alert_notice_errors_total", channel="email") == errors + 3
    assert [item.idempotency_key for item, _ in dead] == ["legacy-1"]
    assert any("not delivered" in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)
    assert len(inbox.to("hs@ward.example")) == 2  # ICU and 4W, each once


class Pager(BaseHTTPRequestHandler):
    """A paging gateway: keeps the Idempotency-Key of each POST and answers 200."""

    keys: list[str] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        Pager.keys.append(self.headers["Idempotency-Key"])
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


async def test_a_pager_notice_to_a_staff_id_with_non_ascii_letters_is_sent(tmp_path: Path) -> None:
    """Staff ids are part of the idempotency key, which goes out as a header: 'rn-müller' is
    a fine id, but not a valid HTTP header value as it stands."""
    routes = """
routes:
  - {name: unit, match: {kind: kpi}, receivers: [charge_nurse], group_wait: 0s}
roles:
  charge_nurse: {scope: unit, fallback: {ICU: [rn-müller]}}
people:
  rn-müller: {name: RN Müller, pager: "4101"}
"""
    Pager.keys = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Pager)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        rig = make_rig(tmp_path, routes=routes)
        url = f"http://127.0.0.1:{server.server_address[1]}/page"
        rig.service.channels = {"pager": WebhookChannel("pager", url, routed=True)}
        await rig.step(0, rig.sample(TAT, 90))
        await rig.step(40, rig.sample(TAT, 90))
        (key,) = await until("the page", lambda: list(Pager.keys))
        await rig.service.close()
    finally:
        server.shutdown()
    assert unquote(key).endswith(":pager:rn-müller") and key.isascii()
    (row,) = rig.service.store.outbox()
    assert row["delivered_at"] and row["attempts"] == 1


def test_storing_a_fired_alert_again_after_a_lost_reply_records_it_once(tmp_path: Path) -> None:
    """The service repeats a write whose outcome it did not learn (a connection lost at
    COMMIT may have committed): the second write must neither fail nor duplicate anything."""
    store = AlertStore(tmp_path / "alerts.sqlite")
    alert = {
        "id": "a1",
        "kpi": TAT,
        "facility": "DEMO",
        "state": "firing",
        "severity": "critical",
        "started_at": iso(0),
        "fired_at": iso(0),
        "summary": "ICU: slow",
    }
    notice = Notice("email", "a1:fired:email", {"x": 1}, ("a1",), "fired")
    store.fire(dict(alert), [notice])
    store.fire(dict(alert), [notice])
    assert len(store.query()) == 1 and len(store.outbox()) == 1
    assert [a["action"] for a in store.audit("a1")] == ["fired"]
