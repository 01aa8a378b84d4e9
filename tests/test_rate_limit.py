"""Request rate limits (issue 14 item 5): a token bucket per caller and kind, 429 past it.

The running carescore here has small limits so a burst is quick to send: reads 2/s with a burst
of 5, ingest 1/s with a burst of 3. By the token bucket (RFC 2697 §1, one rate), a caller that
has been quiet holds `burst` tokens; each request takes one; none are left after `burst`
requests sent at once, so the next is refused with 429 (RFC 6585 §4). It then lacks one token,
at 2 tokens/s that is at most 0.5 s away: Retry-After (whole seconds, RFC 9110 §10.2.3) is
ceil(0.5) = 1, and the request is taken again within about 0.5 s. A refused request takes no
token, so asking again does not push recovery back.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from api.security.roles import Role
from carescore.serve import Service
from engine.config import Settings

pytestmark = pytest.mark.serial  # buckets refill by the wall clock: a neighbour's load is in the counts

READS = {"rate": 2.0, "burst": 5}
INGEST = {"rate": 1.0, "burst": 3}


@pytest.fixture
async def limited(settings_for: Callable[..., Settings]) -> AsyncIterator[Service]:
    svc = Service(settings_for(api={"port": 0, "rate_limit": {"reads": READS, "ingest": INGEST}}))
    await svc.start()
    try:
        yield svc
    finally:
        await svc.stop()


def client(svc: Service, **headers: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{svc.api_port}", headers=headers, timeout=30)


def assert_429(response: httpx.Response, kind: str) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["retry-after"] == "1"  # ceil((1 - tokens) / rate) with tokens >= 0
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert (problem["status"], problem["title"]) == (429, "Too Many Requests")
    assert f"api.rate_limit.{kind}" in problem["detail"]


async def until_taken(send: Callable[[], Any], within: float) -> float:
    """Seconds until `send` is answered other than 429 (polled: waits on the condition)."""
    began = time.monotonic()
    while True:
        response = await send()
        if response.status_code != 429:
            return time.monotonic() - began
        assert time.monotonic() - began < within, "still refused"


async def test_a_burst_over_the_limit_gets_429_and_recovers(limited: Service) -> None:
    async with client(limited) as local:  # the local operator: one caller
        answers = [(await local.get("/api/v1/kpis")).status_code for _ in range(READS["burst"])]
        assert answers == [200] * READS["burst"]
        assert_429(await local.get("/api/v1/kpis"), "reads")
        assert_429(await local.get("/api/v1/scorecard"), "reads")  # per caller, not per route
        assert (await local.get("/healthz")).status_code == 200  # load balancers are not limited
        # ingest is a bucket of its own: writes still go through while reads are refused
        for _ in range(INGEST["burst"]):
            silence = await local.post(
                "/api/v1/silences", json={"matchers": {"unit": "ICU"}, "duration": "1h"}
            )
            assert silence.status_code == 201, silence.text
        assert_429(
            await local.post("/api/v1/silences", json={"matchers": {"unit": "ICU"}, "duration": "1h"}),
            "ingest",
        )
        # one read token comes back within 1 / 2 s = 0.5 s of the last taken (allow for a slow box)
        waited = await until_taken(lambda: local.get("/api/v1/kpis"), within=3.0)
        assert waited <= 1.5, waited


async def test_each_caller_has_its_own_bucket(limited: Service) -> None:
    viewer = limited.auth.internal_token("wallboard", Role.VIEWER, "read")
    async with client(limited) as local, client(limited, Authorization=f"Bearer {viewer}") as wallboard:
        for _ in range(READS["burst"]):
            assert (await local.get("/api/v1/kpis")).status_code == 200
        assert_429(await local.get("/api/v1/kpis"), "reads")
        for _ in range(READS["burst"]):  # another principal: a full bucket of its own
            assert (await wallboard.get("/api/v1/kpis")).status_code == 200
        assert_429(await wallboard.get("/api/v1/kpis"), "reads")


async def test_refused_credentials_are_limited_by_client_address(limited: Service) -> None:
    """Guessing tokens: each 401 takes from the address's bucket, then 429 without checking."""
    async with client(limited, Authorization="Bearer cs_guess_notatoken") as guesser:
        answers = [(await guesser.get("/api/v1/kpis")).status_code for _ in range(READS["burst"])]
        assert answers == [401] * READS["burst"]
        assert_429(await guesser.get("/api/v1/kpis"), "reads")
    async with client(limited) as local:  # the local operator is another caller on that address
        assert (await local.get("/api/v1/kpis")).status_code == 200
