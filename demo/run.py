"""Running the demo hospital beside carescore: its EMR talks MLLP to the listener, its back
office uploads rows to the feed API, both over real sockets like any outside system."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import orjson

from connectors.hl7v2.client import MLLPClient, ack_code
from demo.backoffice import BackOffice
from demo.hospital import DemoHospital
from engine.places import Places

log = logging.getLogger(__name__)


class DemoPeers:
    def __init__(self, places: Places, state_file: Path, *, seed: int, rate: float):
        self.state_file = state_file
        self.hospital = DemoHospital(places, seed=seed, rate=rate)
        self.backoffice = BackOffice(places, seed=seed + 1, rate=rate)
        self.resumed = False
        if state_file.exists():
            state = orjson.loads(state_file.read_bytes())
            if "hospital" in state:
                self.hospital.load(state["hospital"])
                self.backoffice.load(state["backoffice"])
                self.resumed = True

    def seed(self, now: float, backfill: float, scenarios: Sequence[str] = ()) -> None:
        self.hospital.seed_history(now, backfill, scenarios)
        self.backoffice.seed_history(now, billing_from=now - backfill)

    def save(self) -> None:
        state = {"hospital": self.hospital.state(), "backoffice": self.backoffice.state()}
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps(state))
        tmp.replace(self.state_file)

    def next_time(self) -> float | None:
        times = [t for t in (self.hospital.next_time(), self.backoffice.next_time()) if t is not None]
        return min(times, default=None)


def _unless_stopping() -> None:
    """Before a retry: a cancel the failed call swallowed (httpx can turn one into a
    transport error, Python 3.11's wait_for can drop one) still stops the demo."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def _send_hl7(client: MLLPClient, message: str, where: str) -> None:
    for attempt in range(30):
        try:
            ack = await client.send(message)
            break
        except (ConnectionError, OSError, TimeoutError):
            _unless_stopping()
            await asyncio.sleep(min(2.0, 0.1 * (attempt + 1)))
    else:
        raise ConnectionError(f"demo: MLLP listener at {where} does not answer")
    if ack_code(ack) != "AA":
        log.warning("demo message not accepted", extra={"ack": ack_code(ack)})


async def _upload(http: httpx.AsyncClient, rows: list[tuple[str, dict[str, Any]]]) -> None:
    """Rows of each feed as one JSON upload, feeds in the order their first row came."""
    by_feed: dict[str, list[dict[str, Any]]] = {}
    for feed, row in rows:
        by_feed.setdefault(feed, []).append(row)
    for feed, batch in by_feed.items():
        for attempt in range(30):
            try:
                response = await http.post(f"/api/v1/feeds/{feed}", json=batch)
                break
            except httpx.TransportError:
                _unless_stopping()
                await asyncio.sleep(min(2.0, 0.1 * (attempt + 1)))
        else:
            raise ConnectionError("demo: the feed API does not answer")
        result = response.json()
        if response.status_code != 200 or result.get("rejected"):
            log.warning("demo feed rows not accepted", extra={"feed": feed, "errors": result.get("errors")})


async def run_demo(
    places: Places,
    host: str,
    port: int,
    api: str,
    state_file: Path,
    *,
    seed: int = 7,
    rate: float = 1.0,
    backfill: float = 12 * 3600.0,
    scenarios: Sequence[str] = (),
    clock: Callable[[], float] | None = None,
    headers: dict[str, str] | None = None,
) -> None:
    """Feed carescore until cancelled; save the simulation now and then."""
    now_fn = clock or time.time
    peers = DemoPeers(places, state_file, seed=seed, rate=rate)
    if peers.resumed:
        log.info("demo hospital resumed", extra={"patients": len(peers.hospital.stays)})
    else:
        peers.seed(now_fn(), backfill, scenarios)
        log.info("demo hospital starting: backfilling history", extra={"hours": round(backfill / 3600, 1)})
    client = MLLPClient(host, port)
    sent = 0
    last_save = 0.0
    async with httpx.AsyncClient(base_url=api, timeout=60, headers=headers) as http:
        try:
            while True:
                now = now_fn()
                for _, message in peers.hospital.due(now):
                    await _send_hl7(client, message, f"{host}:{port}")
                    sent += 1
                rows = [row for _, row in peers.backoffice.due(now)]
                if rows:
                    await _upload(http, rows)
                    sent += len(rows)
                if now - last_save > 10:
                    peers.save()
                    last_save = now
                upcoming = peers.next_time()
                await asyncio.sleep(0.5 if upcoming is None else min(1.0, max(0.05, upcoming - now_fn())))
        finally:
            peers.save()
            await client.close()
            log.info("demo hospital stopped", extra={"messages_sent": sent})
