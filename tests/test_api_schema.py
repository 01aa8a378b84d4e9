"""The OpenAPI document fuzzed with schemathesis: no generated request may get a 5xx.

A carescore Service runs in a thread of its own (its own event loop, demo off) with some
HL7 fed over MLLP (STAT labs and an admission, so reports, KPIs and history have rows);
schemathesis loads /openapi.json from it and generates requests for every operation,
checked with not_a_server_error only (the API answers problem JSON the schema does not
list for every status; conformance is not what this test proves).

Run three times (issue 14, Tests): without credentials in local mode (the local operator), and
against a carescore signing in with the real Keycloak, once with an admin's bearer token (never
refused, no 5xx) and once without any (401 on every protected route, whatever was generated).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
from tests.test_api_auth import OPEN, RULES
from tests.test_e2e_embedded import admit, stat_pair

if TYPE_CHECKING:
    from tests.keycloak import Keycloak

pytest_plugins = ("tests.keycloak",)

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


def started(folder: Path, api: dict[str, Any]) -> Iterator[Running]:
    config = Settings.model_validate(
        {
            "data_dir": folder / "data",
            "places": DEMO_PLACES,
            "mllp": {"port": 0},
            "api": {"port": 0, **api},
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


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """Without an IdP: requests without credentials are the local operator (admin)."""
    yield from started(tmp_path_factory.mktemp("schema"), {})


@pytest.fixture(scope="module")
def oidc_running(tmp_path_factory: pytest.TempPathFactory, keycloak: Keycloak) -> Iterator[Running]:
    """Signing in with the real Keycloak's tokens (tests/keycloak.py): no local operator."""
    oidc = {"issuer": keycloak.issuer(), "audience": "carescore-api"}
    yield from started(tmp_path_factory.mktemp("schema-oidc"), {"auth": {"oidc": oidc}})


# The schemathesis pytest plugin (@schema.parametrize with from_fixture) breaks on pytest 9
# (it rewrites request.node._nodeid, gone in pytest 9): each operation's strategy is run
# with hypothesis here instead, the same generation and the same not_a_server_error check.
EXCLUDED = {
    # the SSE stream never ends (a generated GET would hang until the request timeout):
    # test_stream_opens_and_ignores_query exercises it instead
    ("GET", "/api/v1/stream"),
}
Check = Callable[[str, httpx.Response | Any], str | None]


@dataclass
class Fuzzed:
    exercised: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    examples: int = 0


def fuzz(
    base: str,
    *,
    headers: Callable[[], dict[str, str]] = dict,
    excluded: set[tuple[str, str]] = EXCLUDED,
    check: Check | None = None,
    max_examples: int = MAX_EXAMPLES,
    kpis: list[str] | None = None,
) -> Fuzzed:
    """Every operation of the OpenAPI document at `base` with generated requests: a 5xx, or what
    `check(operation, response)` says is wrong, is a failure (the first of each operation).
    headers() is called once per operation (a fresh token); kpis: real KPI ids (default: asked
    for with those headers)."""
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    ids = kpis or kpi_ids(base, headers())
    done = Fuzzed()
    for result in schema.get_all_operations():
        operation = result.ok()
        name = f"{operation.method.upper()} {operation.path}"
        if (operation.method.upper(), operation.path) in excluded:
            continue
        done.exercised.append(name)
        try:
            _fuzz_operation(base, operation, name, headers(), ids, check, max_examples, done)
        except (Exception, BaseExceptionGroup) as exc:  # collect them all, one per operation
            done.failures.append(f"{name}: {exc}")
    print(
        f"schemathesis: {len(done.exercised)} operations, {done.examples} requests, "
        f"statuses {sorted(done.statuses.items())}"
    )
    return done


def kpi_ids(base: str, headers: dict[str, str]) -> list[str]:
    return [k["id"] for k in httpx.get(f"{base}/api/v1/kpis", headers=headers).json()["kpis"]]


def _fuzz_operation(
    base: str,
    operation: Any,
    name: str,
    sent: dict[str, str],
    kpi_ids: list[str],
    check: Check | None,
    max_examples: int,
    done: Fuzzed,
) -> None:
    # random path ids mostly meet a 404: half the cases get a real KPI id instead, so the
    # KPI, report and FHIR measure code runs on generated queries too
    @given(case=operation.as_strategy(), real=st.booleans(), kpi=st.sampled_from(kpi_ids))
    @settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate],  # no shrinking: report the first failure
    )
    def run(case: schemathesis.Case, real: bool, kpi: str) -> None:
        if real and "kpi_id" in (case.path_parameters or {}):
            case.path_parameters["kpi_id"] = kpi
        done.examples += 1
        response = case.call_and_validate(
            base_url=base, headers=sent, checks=[not_a_server_error], timeout=30
        )
        done.statuses[response.status_code] = done.statuses.get(response.status_code, 0) + 1
        wrong = check(name, response) if check else None
        assert wrong is None, wrong

    run()


def test_no_server_error(running: Running) -> None:
    done = fuzz(f"http://127.0.0.1:{running.service.api_port}")
    assert len(done.exercised) >= 20, done.exercised
    assert not done.failures, "\n\n".join(done.failures)


OIDC_EXAMPLES = 50  # per operation and run: two runs over every operation in about a minute


@pytest.mark.keycloak
def test_with_an_admin_token_no_server_error_and_no_refusal(
    oidc_running: Running, keycloak: Keycloak
) -> None:
    """Keycloak's admin user (deploy/keycloak: role admin) on every operation: the token is taken
    everywhere (admin holds every permission: api/security/roles.py) and nothing is a 5xx."""

    def admin() -> dict[str, str]:  # a fresh token per operation: they live 300 s
        return {"Authorization": "Bearer " + keycloak.password_grant("admin")["access_token"]}

    def taken(name: str, response: Any) -> str | None:
        refused = response.status_code in (401, 403)
        return f"{response.status_code} for an admin: {response.text[:300]}" if refused else None

    done = fuzz(oidc_base(oidc_running), headers=admin, check=taken, max_examples=OIDC_EXAMPLES)
    assert len(done.exercised) >= 20, done.exercised
    assert not done.failures, "\n\n".join(done.failures)


@pytest.mark.keycloak
def test_without_a_token_every_protected_route_is_401(oidc_running: Running, keycloak: Keycloak) -> None:
    """No credentials with an IdP configured: every generated request to a route that needs a
    permission (tests/test_api_auth.py RULES) is 401 with WWW-Authenticate: Bearer (RFC 6750
    §3), whatever its parameters and body; the open routes never are; nothing is a 5xx. The
    stream is included: refused, it answers at once."""

    def refused(name: str, response: Any) -> str | None:
        method, path = name.split(" ", 1)
        if RULES[(method, path)] is OPEN:
            return f"401 on the open route {name}" if response.status_code == 401 else None
        if response.status_code != 401:
            return f"{response.status_code}, expected 401: {response.text[:300]}"
        challenge = response.headers.get("www-authenticate") or [""]
        return None if challenge[0].startswith("Bearer") else f"WWW-Authenticate {challenge}"

    admin = {"Authorization": "Bearer " + keycloak.password_grant("admin")["access_token"]}
    done = fuzz(
        oidc_base(oidc_running),
        excluded=set(),
        check=refused,
        max_examples=OIDC_EXAMPLES,
        kpis=kpi_ids(oidc_base(oidc_running), admin),
    )
    protected = [n for n in done.exercised if RULES[tuple(n.split(" ", 1))] is not OPEN]  # type: ignore[index]
    assert len(protected) >= 20 and "GET /api/v1/stream" in protected, done.exercised
    assert not done.failures, "\n\n".join(done.failures)


def oidc_base(running: Running) -> str:
    return f"http://127.0.0.1:{running.service.api_port}"


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
