"""Each delivery channel against a real peer: email to an aiosmtpd server, a webhook server
that fails until the notice becomes a dead letter, a real Prometheus Alertmanager (Debian's
prometheus-alertmanager, started here), and /api/v1/stream read by a streaming HTTP client."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from alerts.channels.alertmanager import AlertmanagerChannel
from carescore.serve import Service
from connectors.hl7v2.client import MLLPClient, ack_code
from tests.alerting import ICU, free_port, make_rig
from tests.test_e2e_embedded import now, stat_pair, wait_for

ROUTES = """
routes:
  - name: unit
    match: {kind: kpi}
    receivers: [charge_nurse]
    group_wait: 0s
roles:
  charge_nurse: {scope: unit, fallback: {ICU: [cn-icu]}}
people:
  cn-icu: {name: ICU charge nurse, email: icu-charge@ward.example, pager: "4101"}
"""


async def slow_stat_labs(svc: Service) -> None:
    """Four ICU STAT results 85-105 minutes after ordering: a critical breach."""
    start = now() - timedelta(minutes=110)
    async with MLLPClient("127.0.0.1", svc.mllp.port) as client:
        for i, tat in enumerate([85, 95, 105, 100]):
            for msg in stat_pair(f"SLOW{i}", "ICU", start + timedelta(minutes=i), tat):
                assert ack_code(await client.send(msg)) == "AA"


# fire at once, on the four slow results (the shipped p90 needs 20 values: min_samples 20)
FAST = {"lab_tat_stat": {"for": "1s", "min_samples": 3}}


async def test_email_reaches_the_charge_nurse_in_text_and_html(
    settings_for: Any, kpi_dir: Any, tmp_path: Path, smtp: Any
) -> None:
    port, mailbox = smtp
    routes = tmp_path / "routes.yaml"
    routes.write_text(ROUTES)
    svc = Service(
        settings_for(
            kpi_defs=kpi_dir(FAST),
            alerts={
                "routes": routes,
                "email": {"host": "127.0.0.1", "port": port, "sender": "carescore@h.example"},
            },
        )
    )
    await svc.start()
    try:
        await slow_stat_labs(svc)

        async def arrived() -> Any:
            return mailbox.messages

        (rcpts, msg), *_ = await wait_for(arrived)
    finally:
        await svc.stop()
    assert rcpts == ["icu-charge@ward.example"]
    assert msg["Subject"].startswith("[CRITICAL] ICU:") and "STAT" in msg["Subject"]
    assert msg["From"] == "carescore@h.example" and msg["Message-ID"].endswith("@carescore>")
    parts = {
        p.get_content_type(): p.get_payload(decode=True).decode() for p in msg.walk() if not p.is_multipart()
    }
    assert set(parts) == {"text/plain", "text/html"}
    assert "ICU" in parts["text/plain"] and "threshold 75" in parts["text/plain"]
    assert "<table" in parts["text/html"]
    raw = msg.as_string()
    assert "MRN1" not in raw and "Doe" not in raw  # no patient identifiers anywhere


class FailingHook(BaseHTTPRequestHandler):
    calls: list[tuple[str, int]] = []
    status = 503

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        FailingHook.calls.append((self.headers["Idempotency-Key"], FailingHook.status))
        self.send_response(FailingHook.status)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.parametrize(("status", "attempts"), [(503, 4), (400, 1)])
async def test_a_webhook_that_keeps_failing_ends_as_a_dead_letter(
    settings_for: Any, kpi_dir: Any, status: int, attempts: int
) -> None:
    FailingHook.calls, FailingHook.status = [], status
    server = ThreadingHTTPServer(("127.0.0.1", 0), FailingHook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    svc = Service(
        settings_for(
            kpi_defs=kpi_dir(FAST),
            alerts={"webhooks": [{"name": "pager", "url": url}], "max_attempts": 4, "retry_backoff": 0.05},
        )
    )
    await svc.start()
    try:
        await slow_stat_labs(svc)

        async def dead() -> Any:
            return svc.runtime.dead_letters.query(source="notify")

        (letter,) = await wait_for(dead)
    finally:
        await svc.stop()
        server.shutdown()
    fired = [c for c in FailingHook.calls if ":fired:" in c[0]]
    assert len(fired) == attempts  # retried while it could help (5xx), not after a 4xx
    assert len({key for key, _ in fired}) == 1  # the same idempotency key every time
    assert letter.source == "notify:pager" and f"HTTP {status}" in letter.reason
    assert json.loads(letter.raw)["event"] == "fired"


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[str]:
    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if binary is None:
        pytest.fail("prometheus-alertmanager is not installed: `make test` installs it (apt-get)")
    config = tmp_path / "alertmanager.yml"
    config.write_text("route:\n  receiver: nobody\nreceivers:\n  - name: nobody\n")
    port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.path={tmp_path / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None:
                pytest.fail("alertmanager exited at start")
            threading.Event().wait(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)


async def test_alertmanager_sees_firing_alerts_and_their_end(tmp_path: Path, alertmanager: str) -> None:
    rig = make_rig(tmp_path)
    rig.service.syncs.append(AlertmanagerChannel(alertmanager, resend_every=60))
    await rig.step(0, rig.sample("lab_tat_stat", 90))
    await rig.step(40, rig.sample("lab_tat_stat", 90))

    async def active() -> list[dict[str, Any]]:
        async with httpx.AsyncClient() as client:
            return list((await client.get(f"{alertmanager}/api/v2/alerts", params={"active": "true"})).json())

    (alert,) = await active()
    assert alert["labels"] == {
        "alertname": "lab_tat_stat",
        "severity": "critical",
        "facility": "DEMO",
        "department": "critical_care",
        "unit": "ICU",
        "perspective": "internal_process",
        "source": "carescore",
    }
    assert "ICU" in alert["annotations"]["summary"] and alert["annotations"]["threshold"] == "75.00"
    await rig.hold(3, ("lab_tat_stat", 40, ICU))
    for _ in range(50):
        if not await active():
            break
        await asyncio.sleep(0.1)
    assert await active() == []  # resolved: endsAt sent, no longer active


async def test_the_stream_carries_alert_transitions(settings_for: Any, kpi_dir: Any) -> None:
    service = Service(settings_for(kpi_defs=kpi_dir(FAST)))
    await service.start()
    try:
        await _stream_sees_a_fired_alert(service)
    finally:
        await service.stop()


async def _stream_sees_a_fired_alert(service: Service) -> None:
    seen: list[dict[str, Any]] = []

    async def listen() -> None:
        base = f"http://127.0.0.1:{service.api_port}"
        async with (
            httpx.AsyncClient(base_url=base, timeout=30) as client,
            client.stream("GET", "/api/v1/stream") as response,
        ):
            assert response.headers["content-type"].startswith("text/event-stream")
            event = None
            async for line in response.aiter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: ") and event == "alert":
                    seen.append(json.loads(line[6:]))
                    if seen[-1]["event"] == "fired":
                        return

    listener = asyncio.create_task(listen())
    await asyncio.sleep(0.3)
    await slow_stat_labs(service)
    await asyncio.wait_for(listener, 30)
    fired = seen[-1]
    assert (fired["kpi"], fired["unit"], fired["severity"], fired["state"]) == (
        "lab_tat_stat",
        "ICU",
        "critical",
        "firing",
    )


async def test_stopping_the_service_ends_an_open_stream_cleanly(settings_for: Any) -> None:
    """A page left open must not hold shutdown: on stop the stream's response ends with its
    last chunk (the client reads to the end without a protocol error) instead of being cut
    when the HTTP server's graceful wait gives up."""
    service = Service(settings_for())
    await service.start()
    connected = asyncio.Event()
    lines: list[str] = []

    async def listen() -> None:
        base = f"http://127.0.0.1:{service.api_port}"
        async with (
            httpx.AsyncClient(base_url=base, timeout=60) as client,
            client.stream("GET", "/api/v1/stream") as response,
        ):
            async for line in response.aiter_lines():
                lines.append(line)
                connected.set()

    listener = asyncio.create_task(listen())
    try:
        await asyncio.wait_for(connected.wait(), 30)
    finally:
        await service.stop()
    await asyncio.wait_for(listener, 30)  # raises httpx.RemoteProtocolError if the stream was cut
    assert lines[0] == ": connected"
