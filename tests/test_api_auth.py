"""Issue 14: who may call the API. Every route has a rule (a table that fails on a new route without
one), each role gets what the table says from a running carescore verifying real Keycloak tokens,
clinicians acknowledge their units' alerts only, ops silences are capped, expired/forged/foreign
tokens are refused, integration tokens made by the real CLI are scoped and revocable, every write
is in the audit log with its principal, and the local mode works without any setup."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from fastapi.routing import iter_route_contexts

from api.security.roles import GRANTS, Permission, Role
from carescore.serve import Service
from connectors.hl7v2.client import MLLPClient, ack_code
from engine.config import REPO_ROOT, Settings, load_settings
from engine.yamlconf import ConfigError
from tests.test_e2e_embedded import stat_pair, wait_for

if TYPE_CHECKING:
    from tests.keycloak import Keycloak

pytest_plugins = ("tests.keycloak",)

P = Permission
OPEN = None
#: (method, route template) -> the permission it needs; OPEN: no credentials needed. A route that is
#: not here fails test_every_route_has_a_rule: decide who may call it, then add it.
RULES: dict[tuple[str, str], Permission | None] = {
    ("GET", "/healthz"): OPEN,  # load balancers
    ("GET", "/readyz"): OPEN,
    ("GET", "/openapi.json"): OPEN,  # the API's description, for integrations
    ("GET", "/"): OPEN,  # the page's HTML, script and stylesheet hold no data
    ("GET", "/static/{name}"): OPEN,
    ("GET", "/api/v1/sign-in"): OPEN,  # how the page signs in: asked before it can
    ("GET", "/metrics"): P.VIEW_METRICS,
    ("GET", "/api/v1/kpis"): P.VIEW_KPIS,
    ("GET", "/api/v1/kpis/{kpi_id}"): P.VIEW_KPIS,
    ("GET", "/api/v1/kpis/{kpi_id}/history"): P.VIEW_HISTORY,
    ("GET", "/api/v1/kpis/{kpi_id}/forecast"): P.VIEW_HISTORY,  # a model of the history
    ("GET", "/api/v1/reports/{kpi_id}"): P.VIEW_REPORTS,
    ("GET", "/api/v1/measures/{kpi_id}"): P.VIEW_KPIS,  # the definition, as a FHIR Measure
    ("GET", "/api/v1/measure-reports/{kpi_id}"): P.VIEW_REPORTS,  # a period report, in FHIR
    ("GET", "/api/v1/scorecard"): P.VIEW_KPIS,
    ("GET", "/api/v1/objectives"): P.VIEW_KPIS,  # the strategy map: live statuses, like the scorecard
    ("GET", "/api/v1/objectives/{objective_id}"): P.VIEW_KPIS,
    ("GET", "/api/v1/compare/{kpi_id}"): P.VIEW_REPORTS,  # period reports of every place
    ("GET", "/api/v1/compliance"): P.VIEW_REPORTS,  # period reports (minutes out of compliance)
    ("GET", "/api/v1/reviews/{month}"): P.VIEW_REPORTS,  # period reports and the month's alerts
    ("GET", "/api/v1/views"): P.VIEW_KPIS,  # the built-in, shared and one's own scorecard views
    ("POST", "/api/v1/views"): P.SAVE_VIEWS,  # one's own (a shared one: admin, checked in the handler)
    ("GET", "/api/v1/views/{view_id}"): P.VIEW_KPIS,
    ("PUT", "/api/v1/views/{view_id}"): P.SAVE_VIEWS,  # the owner's; a shared one: admin
    ("DELETE", "/api/v1/views/{view_id}"): P.SAVE_VIEWS,
    ("PUT", "/api/v1/views/{view_id}/landing"): P.SAVE_VIEWS,
    ("GET", "/api/v1/stream"): P.VIEW_STREAM,
    ("GET", "/api/v1/alerts"): P.VIEW_ALERTS,
    ("GET", "/api/v1/alerts/{alert_id}"): P.VIEW_ALERTS,
    ("POST", "/api/v1/alerts/{alert_id}/ack"): P.ACK_ALERTS,
    ("GET", "/api/v1/actions"): P.VIEW_KPIS,  # action plans are scorecard content, no patient data
    ("POST", "/api/v1/actions"): P.MANAGE_ACTIONS,  # clinicians: their units' only
    ("GET", "/api/v1/actions/{action_id}"): P.VIEW_KPIS,
    ("PATCH", "/api/v1/actions/{action_id}"): P.MANAGE_ACTIONS,
    ("GET", "/api/v1/initiatives"): P.VIEW_KPIS,
    ("POST", "/api/v1/initiatives"): P.MANAGE_ACTIONS,  # names no unit: admins only
    ("GET", "/api/v1/initiatives/{initiative_id}"): P.VIEW_KPIS,
    ("PATCH", "/api/v1/initiatives/{initiative_id}"): P.MANAGE_ACTIONS,
    ("POST", "/api/v1/initiatives/{initiative_id}/milestones"): P.MANAGE_ACTIONS,
    ("PATCH", "/api/v1/initiatives/{initiative_id}/milestones/{milestone_id}"): P.MANAGE_ACTIONS,
    ("GET", "/api/v1/kpis/{kpi_id}/analysis/{period}"): P.VIEW_KPIS,
    ("PUT", "/api/v1/kpis/{kpi_id}/analysis/{period}"): P.MANAGE_ACTIONS,  # clinicians: their units'
    ("GET", "/api/v1/silences"): P.VIEW_ALERTS,
    ("POST", "/api/v1/silences"): P.MANAGE_SILENCES,
    ("DELETE", "/api/v1/silences/{silence_id}"): P.MANAGE_SILENCES,
    ("GET", "/api/v1/dead-letters"): P.VIEW_DEAD_LETTERS,
    ("POST", "/api/v1/dead-letters/replay"): P.REPLAY_DEAD_LETTERS,
    ("GET", "/api/v1/audit"): P.ADMIN,
    ("POST", "/fhir"): P.INGEST,
    ("POST", "/fhir/{resource_type}"): P.INGEST,
    ("GET", "/api/v1/feeds"): P.INGEST,
    **{
        ("POST", f"/api/v1/feeds/{feed}"): P.INGEST
        for feed in ("staffing", "hr", "finance", "experience", "quality")
    },
}
NOW = datetime.now(UTC)
#: a request that reaches each route's handler (its answer may be 4xx for the handler's own reasons)
EXAMPLES: dict[tuple[str, str], dict[str, Any]] = {
    ("GET", "/api/v1/reports/{kpi_id}"): {
        "params": {"from": (NOW - timedelta(days=1)).isoformat(), "to": NOW.isoformat()}
    },
    ("GET", "/api/v1/measure-reports/{kpi_id}"): {"params": {"period": NOW.strftime("%Y-%m")}},
    ("GET", "/api/v1/compare/{kpi_id}"): {"params": {"period": NOW.strftime("%Y-%m")}},
    ("GET", "/api/v1/compliance"): {"params": {"period": NOW.strftime("%Y-%m")}},
    ("POST", "/api/v1/alerts/{alert_id}/ack"): {"json": {}},
    ("POST", "/api/v1/views"): {"json": {"name": "matrix", "kpis": ["bed_occupancy"]}},
    ("PUT", "/api/v1/views/{view_id}"): {"json": {"name": "matrix"}},
    ("POST", "/api/v1/actions"): {"json": {}},  # 422 (body) for whoever may write
    ("PATCH", "/api/v1/actions/{action_id}"): {"json": {}},
    ("POST", "/api/v1/initiatives"): {"json": {}},
    ("PATCH", "/api/v1/initiatives/{initiative_id}"): {"json": {}},
    ("POST", "/api/v1/initiatives/{initiative_id}/milestones"): {"json": {}},
    ("PATCH", "/api/v1/initiatives/{initiative_id}/milestones/{milestone_id}"): {"json": {}},
    ("PUT", "/api/v1/kpis/{kpi_id}/analysis/{period}"): {"json": {}},
    ("POST", "/api/v1/silences"): {"json": {"matchers": {"unit": "ICU"}, "duration": "1h"}},
    ("POST", "/api/v1/dead-letters/replay"): {"json": {"ids": []}},
    ("POST", "/fhir"): {
        "content": b'{"resourceType": "Bundle", "type": "batch", "entry": []}',
        "headers": {"Content-Type": "application/fhir+json"},
    },
    ("POST", "/fhir/{resource_type}"): {
        "content": b"{}",
        "headers": {"Content-Type": "application/fhir+json"},
    },
    **{
        ("POST", f"/api/v1/feeds/{feed}"): {"content": b"x\n", "headers": {"Content-Type": "text/csv"}}
        for feed in ("staffing", "hr", "finance", "experience", "quality")
    },
}
PATH_VALUES = {
    "kpi_id": "bed_occupancy",
    "objective_id": "safe_staffing",
    "alert_id": "no-such-alert",
    "action_id": "no-such-action",
    "initiative_id": "no-such-initiative",
    "milestone_id": "no-such-milestone",
    "period": "2026-11",
    "silence_id": "no-such-silence",
    "name": "scorecard.js",
    "resource_type": "Encounter",
    "month": NOW.strftime("%Y-%m"),
    "view_id": "no-such-view",
}
USERS = {  # Keycloak users (deploy/keycloak/README.md) -> the carescore roles in their tokens
    "viewer": {"viewer"},
    "clinician-icu": {"viewer", "clinician"},
    "ops": {"viewer", "ops"},
    "admin": {"admin"},
}


def declared(route: Any) -> set[Permission | None]:
    """The permissions a route's dependencies require (api.security.auth.require)."""
    found: set[Permission | None] = set()
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return found
    stack = list(dependant.dependencies)
    while stack:
        dep = stack.pop()
        permission = getattr(dep.call, "permission", None)
        if permission is not None:
            found.add(permission)
        stack.extend(dep.dependencies)
    return found


def app_routes(svc: Service) -> list[tuple[str, str, Any]]:
    """Every HTTP route of the running app, with the dependencies it was included with (FastAPI's
    and Starlette's own: /openapi.json)."""
    routes = list(iter_route_contexts(svc.app.routes))
    assert all(r.methods for r in routes), "a route that is not an HTTP endpoint: give it a rule here"
    return [(m, str(r.path), r) for r in routes for m in sorted(r.methods or ()) if m != "HEAD"]


def may(roles: set[str], permission: Permission | None) -> bool:
    return permission is None or any(permission in GRANTS[Role(r)] for r in roles)


@pytest.fixture
def oidc_settings(keycloak: Keycloak) -> dict[str, Any]:
    return {"issuer": keycloak.issuer(), "audience": "carescore-api", "leeway": 0}


@pytest.fixture
async def oidc_service(
    settings_for: Callable[..., Settings], kpi_dir: Callable[..., Path], oidc_settings: dict[str, Any]
) -> AsyncIterator[Service]:
    svc = Service(
        settings_for(
            kpi_defs=kpi_dir({"lab_tat_stat": {"for": "1s", "min_samples": 3}}),
            api={"port": 0, "auth": {"oidc": oidc_settings, "max_silence": "2h"}},
        )
    )
    await svc.start()
    try:
        yield svc
    finally:
        await svc.stop()


def base(svc: Service) -> str:
    return f"http://127.0.0.1:{svc.api_port}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def call(
    svc: Service, method: str, template: str, headers: dict[str, str] | None = None
) -> httpx.Response:
    path = template
    for name, value in PATH_VALUES.items():
        path = path.replace("{" + name + "}", value)
    example = EXAMPLES.get((method, template), {})
    async with httpx.AsyncClient(base_url=base(svc), headers=headers or {}, timeout=30) as client:
        if template == "/api/v1/stream":  # an endless answer: its status is enough
            async with client.stream(method, path) as response:
                return response
        return await client.request(method, path, **example)


# ---- the table of rules -----------------------------------------------------------------------------


async def test_every_route_has_a_rule_and_declares_it(service: Service) -> None:
    routes = app_routes(service)
    missing = [f"{m} {p}" for m, p, _ in routes if (m, p) not in RULES]
    assert not missing, f"routes without a rule in RULES (decide who may call them): {missing}"
    stale = sorted(set(RULES) - {(m, p) for m, p, _ in routes})
    assert not stale, f"rules for routes that no longer exist: {stale}"
    for method, path, route in routes:
        expected = RULES[(method, path)]
        assert declared(route) == ({expected} if expected else set()), (method, path, declared(route))


@pytest.mark.keycloak
async def test_role_matrix_over_every_route(oidc_service: Service, keycloak: Keycloak) -> None:
    """Each role (Keycloak users, the integration service account, no credentials) on every route:
    refused (401 without credentials, 403 without the permission) exactly where the table says."""
    callers: dict[str, tuple[set[str], dict[str, str] | None]] = {
        user: (roles, bearer(keycloak.password_grant(user)["access_token"])) for user, roles in USERS.items()
    }
    callers["integration"] = ({"integration"}, bearer(keycloak.client_credentials()["access_token"]))
    callers["nobody"] = (set(), None)
    wrong: list[str] = []
    for method, path, _ in app_routes(oidc_service):
        permission = RULES[(method, path)]
        for who, (roles, headers) in callers.items():
            response = await call(oidc_service, method, path, headers)
            if permission is None:
                expected_refusal = None
            elif headers is None:
                expected_refusal = 401
            else:
                expected_refusal = None if may(roles, permission) else 403
            got = response.status_code
            if (expected_refusal is None and got in (401, 403)) or (
                expected_refusal and got != expected_refusal
            ):
                wrong.append(f"{who} {method} {path}: {got}, expected {expected_refusal or 'allowed'}")
            if got == 401:
                assert response.headers["www-authenticate"].startswith("Bearer")
                assert response.headers["content-type"] == "application/problem+json"
    assert not wrong, "\n".join(wrong)


# ---- real tokens against a running carescore ---------------------------------------------------------


async def fire_stat_alerts(svc: Service, *units: str) -> dict[str, str]:
    """Slow STAT labs on each unit until its lab_tat_stat alert fires: unit -> alert id."""
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=110)
    async with MLLPClient("127.0.0.1", svc.mllp.port) as client:
        for unit in units:
            for i, tat in enumerate([85, 95, 105, 100]):
                for msg in stat_pair(f"SLOW{unit}{i}", unit, start + timedelta(minutes=i), tat):
                    assert ack_code(await client.send(msg)) == "AA"

    async def firing() -> Any:
        alerts = svc.runtime.alerts.query("firing", 100)
        by_unit = {a.as_json()["unit"]: a.as_json()["id"] for a in alerts if a.kpi == "lab_tat_stat"}
        return by_unit if set(units) <= set(by_unit) else None

    return dict(await wait_for(firing, 30))


@pytest.mark.keycloak
async def test_viewer_reads_clinician_acks_own_units_ops_silences_capped(
    oidc_service: Service, keycloak: Keycloak
) -> None:
    alerts = await fire_stat_alerts(oidc_service, "ICU", "4W")
    viewer, clinician, ops, admin = (
        bearer(keycloak.password_grant(u)["access_token"])
        for u in ("viewer", "clinician-icu", "ops", "admin")
    )
    async with httpx.AsyncClient(base_url=base(oidc_service), timeout=30) as client:
        kpis = await client.get("/api/v1/kpis/lab_tat_stat", headers=viewer)
        assert kpis.status_code == 200 and kpis.json()["id"] == "lab_tat_stat"
        refused = await client.post(f"/api/v1/alerts/{alerts['ICU']}/ack", json={}, headers=viewer)
        assert refused.status_code == 403 and "ack_alerts" in refused.json()["detail"]

        other_unit = await client.post(f"/api/v1/alerts/{alerts['4W']}/ack", json={}, headers=clinician)
        assert other_unit.status_code == 403, other_unit.text
        assert "4W" in other_unit.json()["detail"] and "ICU" in other_unit.json()["detail"]
        own = await client.post(
            f"/api/v1/alerts/{alerts['ICU']}/ack",
            json={"by": "someone else", "note": "on it"},
            headers=clinician,
        )
        assert own.status_code == 200, own.text
        assert own.json()["acked_by"] == "clinician-icu"  # the principal, not what the body said

        too_long = {"matchers": {"unit": "4W"}, "duration": "3h", "created_by": "someone else"}
        capped = await client.post("/api/v1/silences", json=too_long, headers=ops)
        assert capped.status_code == 422 and "max_silence" in capped.json()["detail"]
        assert capped.headers["content-type"] == "application/problem+json"
        fits = await client.post("/api/v1/silences", json={**too_long, "duration": "2h"}, headers=ops)
        assert fits.status_code == 201, fits.text
        assert fits.json()["created_by"] == "ops"
        by_admin = await client.post("/api/v1/silences", json=too_long, headers=admin)
        assert by_admin.status_code == 201 and by_admin.json()["created_by"] == "admin"
        clinician_silence = await client.post("/api/v1/silences", json=too_long, headers=clinician)
        assert clinician_silence.status_code == 403

        audit = await client.get("/api/v1/audit", headers=admin, params={"limit": 1000})
        assert (await client.get("/api/v1/audit", headers=ops)).status_code == 403
    entries = audit.json()["entries"]
    acks = [(e["name"], e["status"]) for e in entries if e["route"] == "/api/v1/alerts/{alert_id}/ack"]
    assert sorted(acks) == sorted([("viewer", 403), ("clinician-icu", 403), ("clinician-icu", 200)])
    silences = [(e["name"], e["status"]) for e in entries if e["route"] == "/api/v1/silences"]
    assert sorted(silences) == sorted([("ops", 422), ("ops", 201), ("admin", 201), ("clinician-icu", 403)])
    assert all(
        e["client"] == "127.0.0.1" and e["method"] == "POST" for e in entries if e["route"] != "/api/v1/audit"
    )
    assert not [e for e in entries if e["route"].startswith("/api/v1/kpis")]  # reads of KPIs: not audited
    ack = next(e for e in entries if e["status"] == 200)
    assert ack["roles"] == ["clinician", "viewer"] and ack["subject"] != "clinician-icu"  # Keycloak's sub id


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@pytest.mark.keycloak
async def test_expired_forged_and_wrong_audience_tokens_are_refused(
    oidc_service: Service, keycloak: Keycloak
) -> None:
    admin = keycloak.password_grant("admin")["access_token"]
    header, payload, signature = admin.split(".")
    claims = json.loads(_unb64(payload))
    claims["roles"] = ["admin"]
    claims["sub"] = "someone-else"
    forged = ".".join((header, _b64(json.dumps(claims).encode()), signature))
    bad_signature = ".".join(
        (header, payload, signature[:-4] + ("AAAA" if signature[-4:] != "AAAA" else "BBBB"))
    )
    other_audience = keycloak.password_grant("admin", client="other-app", secret="other-app-secret")[
        "access_token"
    ]
    short = keycloak.password_grant("admin", client="carescore-tests-short")["access_token"]
    async with httpx.AsyncClient(base_url=base(oidc_service), timeout=30) as client:
        assert (await client.get("/api/v1/kpis", headers=bearer(short))).status_code == 200
        await asyncio.sleep(4.5)  # the short client's tokens live 3 s; leeway 0
        answers = {
            "expired": await client.get("/api/v1/kpis", headers=bearer(short)),
            "forged": await client.get("/api/v1/kpis", headers=bearer(forged)),
            "bad_signature": await client.get("/api/v1/kpis", headers=bearer(bad_signature)),
            "wrong_audience": await client.get("/api/v1/kpis", headers=bearer(other_audience)),
            "garbage": await client.get("/api/v1/kpis", headers=bearer("not-a-token")),
            "basic": await client.get("/api/v1/kpis", headers={"Authorization": "Basic YWRtaW46YWRtaW4="}),
            "none": await client.get("/api/v1/kpis"),
        }
        assert (await client.get("/api/v1/kpis", headers=bearer(admin))).status_code == 200
    for what, response in answers.items():
        assert response.status_code == 401, (what, response.text)
        assert response.headers["www-authenticate"].startswith('Bearer realm="carescore"'), what
        body = response.json()
        assert body["title"] == "Unauthorized" and body["status"] == 401
        assert signature not in body["detail"] and payload not in body["detail"], what  # never the token
    assert "expired" in answers["expired"].json()["detail"]
    assert "wrong_audience" in answers["wrong_audience"].json()["detail"]
    assert "bad_signature" in answers["forged"].json()["detail"]


async def test_idp_unreachable_is_503(settings_for: Callable[..., Settings]) -> None:
    from tests.alerting import free_port

    issuer = f"http://127.0.0.1:{free_port()}/realms/gone"
    svc = Service(
        settings_for(api={"port": 0, "auth": {"oidc": {"issuer": issuer, "audience": "carescore-api"}}})
    )
    await svc.start()
    try:
        header = _b64(json.dumps({"alg": "RS256", "kid": "k"}).encode())
        body = _b64(json.dumps({"iss": issuer, "sub": "x", "aud": "carescore-api", "exp": 4e9}).encode())
        async with httpx.AsyncClient(base_url=base(svc)) as client:
            unavailable = await client.get("/api/v1/kpis", headers=bearer(f"{header}.{body}.c2ln"))
            nobody = await client.get("/api/v1/kpis")  # with an IdP configured there is no local operator
            health = await client.get("/healthz")
    finally:
        await svc.stop()
    assert unavailable.status_code == 503 and unavailable.json()["title"] == "Identity provider unavailable"
    assert nobody.status_code == 401
    assert health.status_code == 200


# ---- integration tokens, local mode, audit ------------------------------------------------------------


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "carescore.cli", "token", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
        env={**os.environ, "CARESCORE_DEMO": "0"},
    )


def encounter(unit: str = "4W") -> dict[str, Any]:
    start = (datetime.now(UTC) - timedelta(hours=2)).isoformat(timespec="seconds")
    return {
        "resourceType": "Encounter",
        "id": "enc-auth-1",
        "status": "in-progress",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
        "subject": {"reference": "Patient/p1"},
        "period": {"start": start},
        "location": [{"location": {"reference": f"Location/{unit}"}, "period": {"start": start}}],
    }


def staffing_csv() -> str:
    def iso(hours: float) -> str:
        return (datetime.now(UTC) - timedelta(hours=hours)).isoformat(timespec="seconds")

    return "\n".join(
        [
            "staff_id,role,unit,shift_start,shift_end,worked_hours,overtime_hours",
            f"E1,rn,4W,{iso(13)},{iso(1)},12,1",
        ]
    )


async def test_integration_tokens_from_the_cli_are_scoped_revocable_and_audited(
    settings_for: Callable[..., Settings], tmp_path: Path
) -> None:
    """Without an IdP (local mode, loopback): requests without credentials are the local operator,
    integration tokens made by `carescore token create` are checked and held to their scope."""
    settings = settings_for()
    config = tmp_path / "carescore.yaml"
    config.write_text(f"data_dir: {settings.data_dir}\n")
    made = cli(config, "create", "--name", "lab interface", "--role", "integration", "--scope", "fhir")
    assert made.returncode == 0, made.stderr
    fhir_token = made.stdout.strip()
    assert fhir_token.startswith("cs_") and "shown once" in made.stderr and fhir_token not in made.stderr
    made = cli(config, "create", "--name", "rostering", "--role", "integration", "--scope", "feed:staffing")
    assert made.returncode == 0, made.stderr
    feed_token = made.stdout.strip()
    bad = cli(config, "create", "--name", "x", "--role", "integration", "--scope", "feed:nope")
    assert bad.returncode == 2 and "unknown feed" in bad.stderr
    stored = (settings.data_dir / "tokens.sqlite").read_bytes()
    assert fhir_token.encode() not in stored and fhir_token.split("_", 2)[2].encode() not in stored

    svc = Service(settings)
    await svc.start()
    try:
        fhir_json = {"Content-Type": "application/fhir+json"}
        async with httpx.AsyncClient(base_url=base(svc), timeout=30) as client:
            posted = await client.post(
                "/fhir/Encounter",
                content=json.dumps(encounter()),
                headers={**fhir_json, **bearer(fhir_token)},
            )
            csv = {"Content-Type": "text/csv"}
            fhir_on_feed = await client.post(
                "/api/v1/feeds/staffing", content=staffing_csv(), headers={**csv, **bearer(fhir_token)}
            )
            uploaded = await client.post(
                "/api/v1/feeds/staffing?filename=shifts.csv",
                content=staffing_csv(),
                headers={**csv, **bearer(feed_token)},
            )
            other_feed = await client.post(
                "/api/v1/feeds/hr", content="x", headers={**csv, **bearer(feed_token)}
            )
            feed_on_fhir = await client.post(
                "/fhir/Encounter",
                content=json.dumps(encounter()),
                headers={**fhir_json, **bearer(feed_token)},
            )
            kpis = await client.get("/api/v1/kpis", headers=bearer(feed_token))
            local = await client.get("/api/v1/kpis")  # no credentials on the loopback: the local operator
            local_silence = await client.post(
                "/api/v1/silences", json={"matchers": {"unit": "ICU"}, "duration": "30d"}
            )
            letters = await client.get("/api/v1/dead-letters")  # a read of patient-level data
            wrong = await client.get("/api/v1/kpis", headers=bearer(fhir_token[:-2] + "AA"))
            feed_id = feed_token.split("_")[1]
            revoked = cli(config, "revoke", feed_id)
            assert revoked.returncode == 0 and "revoked" in revoked.stdout, revoked.stderr
            after = await client.post(
                "/api/v1/feeds/staffing", content=staffing_csv(), headers={**csv, **bearer(feed_token)}
            )
            audit = (await client.get("/api/v1/audit", params={"limit": 100})).json()["entries"]
            since = (await client.get("/api/v1/audit", params={"principal": f"token:{feed_id}"})).json()
        listed = cli(config, "list")
    finally:
        await svc.stop()
    assert posted.status_code in (200, 201), posted.text
    assert uploaded.status_code == 200 and uploaded.json()["accepted"] == 1, uploaded.text
    for refused in (fhir_on_feed, other_feed, feed_on_fhir, kpis):
        assert refused.status_code == 403, refused.text
    assert "feed:hr" in other_feed.json()["detail"]
    assert local.status_code == 200
    assert local_silence.status_code == 201 and local_silence.json()["created_by"] == "local operator"
    assert letters.status_code == 200
    assert wrong.status_code == 401 and after.status_code == 401
    assert "revoked" in after.json()["detail"] and feed_token not in after.text
    assert listed.returncode == 0 and "revoked" in listed.stdout and "lab interface" in listed.stdout
    assert fhir_token not in listed.stdout and "live" in listed.stdout

    fhir_id = fhir_token.split("_")[1]
    rows = [(e["subject"], e["method"], e["route"], e["status"]) for e in reversed(audit)]
    assert rows == [
        (f"token:{fhir_id}", "POST", "/fhir/{resource_type}", posted.status_code),
        (f"token:{fhir_id}", "POST", "/api/v1/feeds/staffing", 403),
        (f"token:{feed_id}", "POST", "/api/v1/feeds/staffing", 200),
        (f"token:{feed_id}", "POST", "/api/v1/feeds/hr", 403),
        (f"token:{feed_id}", "POST", "/fhir/{resource_type}", 403),
        ("local", "POST", "/api/v1/silences", 201),
        ("local", "GET", "/api/v1/dead-letters", 200),
        ("-", "POST", "/api/v1/feeds/staffing", 401),  # the revoked token: no principal
    ]
    assert [e["roles"] for e in audit if e["subject"] == f"token:{fhir_id}"] == [["integration"]] * 2
    assert [e["status"] for e in since["entries"]] == [403, 403, 200]
    assert all(fhir_token not in json.dumps(e) and feed_token not in json.dumps(e) for e in audit)


def test_without_an_idp_the_api_must_stay_on_the_loopback(tmp_path: Path) -> None:
    path = tmp_path / "carescore.yaml"
    path.write_text(
        "demo:\n  enabled: false\nmllp:\n  enabled: false\n"
        "api:\n  port: 8000\n  host: 0.0.0.0\n  plaintext_outside_loopback: true\n"
    )
    with pytest.raises(ConfigError) as refused:
        load_settings(path)
    (problem,) = refused.value.problems
    assert problem.startswith(f"{path}:7: api.host:") and "api.auth.oidc" in problem
    with_idp = (
        path.read_text()
        + "  auth:\n    oidc:\n      issuer: https://idp.example/realms/x\n      audience: a\n"
    )
    path.write_text(with_idp)
    assert load_settings(path).api.auth.oidc is not None
    # CARESCORE_DEMO=0 after the file was read (the demo was on in it): the service refuses to start
    demo_on = (
        "demo:\n  enabled: true\n"
        "api:\n  host: 0.0.0.0\n  plaintext_outside_loopback: true\nmllp:\n  enabled: false\n"
    )
    path.write_text(f"data_dir: {tmp_path / 'data'}\n{demo_on}")
    settings = load_settings(path)
    settings.demo.enabled = False
    with pytest.raises(ConfigError, match=r"api\.auth\.oidc"):
        Service(settings)
    checked = subprocess.run(
        [sys.executable, "-m", "carescore.cli", "run", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "CARESCORE_DEMO": "0"},
    )
    assert checked.returncode == 2 and "api.auth.oidc" in checked.stderr


async def test_local_mode_banner_says_everyone_is_admin(service: Service) -> None:
    assert "sign-in     none (loopback only; every local user is admin)" in service.banner()


async def test_the_demo_uploads_with_an_in_process_token_that_is_never_stored(tmp_path: Path) -> None:
    """With an IdP configured the demo hospital still uploads its feeds: as an integration whose
    token lives in the process only."""
    from starlette.requests import Request

    from api.problems import Problem
    from api.security.auth import Auth, may
    from api.security.tokens import TokenStore

    tokens = TokenStore(tmp_path / "tokens.sqlite")
    auth = Auth(tokens=tokens, local=False)
    token = auth.internal_token("demo hospital", Role.INTEGRATION, "all-ingest")

    def request(authorization: str | None) -> Request:
        headers = [(b"authorization", authorization.encode())] if authorization else []
        return Request({"type": "http", "method": "POST", "path": "/", "headers": headers})

    demo = await auth.authenticate(request(f"Bearer {token}"))
    assert demo.roles == {"integration"} and demo.subject == "internal:demo hospital"
    assert may(demo, P.INGEST, target="feed:staffing") and not may(demo, P.VIEW_KPIS)
    for refused in (None, f"Bearer {token}x", "Bearer csi_guess"):
        with pytest.raises(Problem) as caught:
            await auth.authenticate(request(refused))
        assert caught.value.status == 401
    tokens.close()
    assert token.encode() not in (tmp_path / "tokens.sqlite").read_bytes()


# ---- the page's sign-in (api/static/signin.js) against the real Keycloak ------------------------------

HARNESS = """
const fs = require("fs");
const [mode, origin, stateFile, configJson, callback] = process.argv.slice(2);
const saved = fs.existsSync(stateFile) ? JSON.parse(fs.readFileSync(stateFile, "utf8")) : {};
globalThis.sessionStorage = {
  getItem: (k) => (k in saved ? saved[k] : null),
  setItem: (k, v) => { saved[k] = v; fs.writeFileSync(stateFile, JSON.stringify(saved)); },
};
let assigned = null;
globalThis.location = { origin, href: origin + "/", assign: (url) => { assigned = url; } };
require(process.env.SIGNIN_JS);
const config = JSON.parse(configJson);
(async () => {
  if (mode === "begin") { await globalThis.carescoreSignIn.begin(config); console.log(assigned); }
  else { console.log(await globalThis.carescoreSignIn.complete(config, callback)); }
})().catch((err) => { console.error(err.message); process.exit(1); });
"""


def node(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    harness = tmp_path / "harness.js"
    harness.write_text(HARNESS)
    env = {**os.environ, "SIGNIN_JS": str(REPO_ROOT / "api" / "static" / "signin.js")}
    return subprocess.run(["node", str(harness), *args], capture_output=True, text=True, timeout=60, env=env)


@pytest.mark.keycloak
async def test_the_page_signs_in_with_authorization_code_and_pkce(
    settings_for: Callable[..., Settings], keycloak: Keycloak, tmp_path: Path
) -> None:
    """signin.js, run by node against the real Keycloak: the login URL it goes to carries an S256
    challenge and a state, the code that comes back is exchanged with the verifier, and the token
    it gets is accepted by carescore. The page's own config comes from the open /api/v1/sign-in."""
    import html
    import re
    import shutil
    from urllib.parse import parse_qs, urlsplit

    if shutil.which("node") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("node is needed to run the page's sign-in script; CI=true")
        pytest.skip("node is needed to run the page's sign-in script")
    oidc = {"issuer": keycloak.issuer(), "audience": "carescore-api", "page_client_id": "carescore-page"}
    svc = Service(settings_for(api={"port": 0, "auth": {"oidc": oidc}}))
    await svc.start()
    try:
        origin = base(svc)
        async with httpx.AsyncClient(base_url=origin, timeout=30) as client:
            config = (await client.get("/api/v1/sign-in")).json()
            page = await client.get("/")
        assert config["mode"] == "oidc" and config["client_id"] == "carescore-page"
        assert config["token_endpoint"] == keycloak.endpoint("token")
        assert f"connect-src 'self' {keycloak.url};" in page.headers["content-security-policy"]

        state_file = tmp_path / "session.json"
        begun = node(tmp_path, "begin", origin, str(state_file), json.dumps(config))
        assert begun.returncode == 0, begun.stderr
        login_url = begun.stdout.strip()
        query = parse_qs(urlsplit(login_url).query)
        assert query["code_challenge_method"] == ["S256"] and query["redirect_uri"] == [origin + "/"]
        assert query["client_id"] == ["carescore-page"] and "code_verifier" not in query
        with httpx.Client(follow_redirects=False, timeout=30) as browser:
            form_page = browser.get(login_url)
            form = re.search(r'<form[^>]*id="kc-form-login"[^>]*action="([^"]+)"', form_page.text)
            assert form, form_page.text[:500]
            cookies = "; ".join(f"{c.name}={c.value}" for c in browser.cookies.jar)  # see test_oidc._login
            done = browser.post(
                html.unescape(form.group(1)),
                data={"username": "clinician-icu", "password": "clinician-pass"},
                headers={"Cookie": cookies},
            )
        assert done.status_code == 302, done.text[:500]
        callback = done.headers["location"]
        assert callback.startswith(origin + "/?")

        forged_state = callback.replace("state=", "state=x")
        assert (
            node(tmp_path, "complete", origin, str(state_file), json.dumps(config), forged_state).returncode
            == 1
        )
        completed = node(tmp_path, "complete", origin, str(state_file), json.dumps(config), callback)
        assert completed.returncode == 0, completed.stderr
        token = completed.stdout.strip()
        async with httpx.AsyncClient(base_url=origin, timeout=30) as client:
            card = await client.get("/api/v1/scorecard", headers=bearer(token))
            refused = await client.post("/api/v1/dead-letters/replay", json={}, headers=bearer(token))
    finally:
        await svc.stop()
    assert card.status_code == 200 and refused.status_code == 403  # a clinician, signed in on the page
