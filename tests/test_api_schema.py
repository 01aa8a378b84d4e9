"""The OpenAPI document fuzzed with schemathesis: no generated request may get a 5xx.

A carescore Service runs in a thread of its own (its own event loop, demo off) with some
HL7 fed over MLLP (STAT labs and an admission, so reports, KPIs and history have rows);
schemathesis loads /openapi.json from it and generates requests for every operation,
checked with not_a_server_error only (the API answers problem JSON the schema does not
list for every status; conformance is not what this test proves).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error

from carescore.serve import Service
from connectors.hl7v2.client import MLLPClient, ack_code
from engine.config import Settings
from tests.conftest import DEMO_PLACES
from tests.test_e2e_embedded import admit, stat_pair

MAX_EXAMPLES = 100  # per operation: every operation in well under 90 s on a loaded 2-core box


class Running:
    """A Service started and stopped on an event loop in a background thread."""

    def __init__(self, config: Settings):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.service = Service(config)
        self.run(self.service.start())

    def run(self, coro: Any, timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        try:
            self.run(self.service.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


async def _feed(service: Service) -> None:
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    async with MLLPClient("127.0.0.1", service.mllp.port) as client:
        assert ack_code(await client.send(admit("V01", "4W", start))) == "AA"
        for i, tat in enumerate([25, 35, 70]):
            for msg in stat_pair(f"S{i}", "ICU", start + timedelta(minutes=i), tat):
                assert ack_code(await client.send(msg)) == "AA"


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    config = Settings.model_validate(
        {
            "data_dir": tmp_path_factory.mktemp("schema") / "data",
            "places": DEMO_PLACES,
            "mllp": {"port": 0},
            "api": {"port": 0},
            "demo": {"enabled": False},
            "engine": {"tick": 0.2, "snapshot_every": 3600},
        }
    )
    running = Running(config)
    try:
        running.run(_feed(running.service))
        yield running
    finally:
        running.stop()


# The schemathesis pytest plugin (@schema.parametrize with from_fixture) breaks on pytest 9
# (it rewrites request.node._nodeid, gone in pytest 9): each operation's strategy is run
# with hypothesis here instead, the same generation and the same not_a_server_error check.
EXCLUDED = {
    # the SSE stream never ends (a generated GET would hang until the request timeout):
    # test_stream_opens_and_ignores_query exercises it instead
    ("GET", "/api/v1/stream"),
}


def test_no_server_error(running: Running) -> None:
    base = f"http://127.0.0.1:{running.service.api_port}"
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    kpi_ids = [k["id"] for k in httpx.get(f"{base}/api/v1/kpis").json()["kpis"]]
    exercised: list[str] = []
    failures: list[str] = []
    examples = 0
    statuses: dict[int, int] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        if (operation.method.upper(), operation.path) in EXCLUDED:
            continue
        exercised.append(f"{operation.method.upper()} {operation.path}")

        # random path ids mostly meet a 404: half the cases get a real KPI id instead, so the
        # KPI, report and FHIR measure code runs on generated queries too
        @given(case=operation.as_strategy(), real=st.booleans(), kpi=st.sampled_from(kpi_ids))
        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
            phases=[Phase.explicit, Phase.generate],  # no shrinking: report the first 5xx
        )
        def run(case: schemathesis.Case, real: bool, kpi: str) -> None:
            nonlocal examples
            if real and "kpi_id" in (case.path_parameters or {}):
                case.path_parameters["kpi_id"] = kpi
            examples += 1
            response = case.call_and_validate(base_url=base, checks=[not_a_server_error], timeout=30)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

        try:
            run()
        except (Exception, BaseExceptionGroup) as exc:  # a 5xx: collect them all, one per operation
            failures.append(f"{exercised[-1]}: {exc}")
    print(
        f"schemathesis: {len(exercised)} operations, {examples} requests, statuses {sorted(statuses.items())}"
    )
    assert len(exercised) >= 20, exercised
    assert not failures, "\n\n".join(failures)


def test_stream_opens_and_ignores_query(running: Running) -> None:
    """The excluded SSE stream: it answers 200 text/event-stream, with or without junk params."""
    base = f"http://127.0.0.1:{running.service.api_port}"
    for params in ({}, {"x": "\x00"}):
        with httpx.stream("GET", f"{base}/api/v1/stream", params=params, timeout=10) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            assert next(response.iter_bytes()).startswith(b": connected")


def test_found_server_errors_stay_fixed(running: Running) -> None:
    """5xx schemathesis found: a row id past SQLite's int64 raised OverflowError (500)."""
    base = f"http://127.0.0.1:{running.service.api_port}"
    got = httpx.get(f"{base}/api/v1/dead-letters", params={"after": "13599388458727921458085888"})
    assert got.status_code == 422
    replay = httpx.post(f"{base}/api/v1/dead-letters/replay", json={"ids": [2**70]})
    assert replay.status_code == 422
