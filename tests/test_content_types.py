"""415 for a body of a type the route does not parse (issue 14 item 5; security review M5).

RFC 9110 §15.5.16: 415 Unsupported Media Type when "the content is in a format not supported by
this method on the target resource". A cross-site form can send only text/plain,
application/x-www-form-urlencoded or multipart/form-data, and fetch() without a type sends
none, all without a CORS preflight: each of those must be refused on every route with a body.
FHIR R4 (http.html) accepts application/fhir+json (we take application/json too) and answers
errors with an OperationOutcome; the other routes answer RFC 9457 problem JSON.

BODIES is written from what each route parses (connectors/feeds/reader.py FORMATS, the FHIR
spec, FastAPI's JSON bodies); test_every_body_route_is_in_the_table fails on a new POST/PUT/PATCH
route without a row. Everything goes over real HTTP to a running carescore.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx
import pytest
from fastapi.routing import iter_route_contexts

from carescore.serve import Service
from connectors.feeds.schemas import FEEDS

FHIR = frozenset({"application/fhir+json", "application/json"})
FEED = frozenset(
    {
        "text/csv",
        "application/csv",
        "application/json",
        "application/x-ndjson",
        "application/ndjson",
        "application/jsonl",
    }
)
JSON = frozenset({"application/json"})
NONE: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Body:
    types: frozenset[str]
    required: bool  # a route whose body is optional takes a request with no body and no type
    fhir: bool = False  # refused with an OperationOutcome instead of problem JSON


BODIES: dict[tuple[str, str], Body] = {
    ("POST", "/fhir"): Body(FHIR, True, fhir=True),
    ("POST", "/fhir/{resource_type}"): Body(FHIR, True, fhir=True),
    **{("POST", f"/api/v1/feeds/{feed}"): Body(FEED, True) for feed in FEEDS},
    ("POST", "/api/v1/alerts/{alert_id}/ack"): Body(JSON, False),
    ("POST", "/api/v1/silences"): Body(JSON, True),
    ("POST", "/api/v1/dead-letters/replay"): Body(JSON, True),
    ("POST", "/api/v1/views"): Body(JSON, True),
    ("PUT", "/api/v1/views/{view_id}"): Body(JSON, True),
    ("PUT", "/api/v1/views/{view_id}/landing"): Body(NONE, False),  # takes no body: any is refused
    ("POST", "/api/v1/actions"): Body(JSON, True),
    ("PATCH", "/api/v1/actions/{action_id}"): Body(JSON, True),
    ("POST", "/api/v1/initiatives"): Body(JSON, True),
    ("PATCH", "/api/v1/initiatives/{initiative_id}"): Body(JSON, True),
    ("POST", "/api/v1/initiatives/{initiative_id}/milestones"): Body(JSON, True),
    ("PATCH", "/api/v1/initiatives/{initiative_id}/milestones/{milestone_id}"): Body(JSON, True),
    ("PUT", "/api/v1/kpis/{kpi_id}/analysis/{period}"): Body(JSON, True),
}
PATHS = {
    "{resource_type}": "Encounter",
    "{alert_id}": "no-such-alert",
    "{view_id}": "no-such-view",
    "{action_id}": "no-such-action",
    "{initiative_id}": "no-such-initiative",
    "{milestone_id}": "no-such-milestone",
    "{kpi_id}": "bed_occupancy",
    "{period}": "2026-11",
}
#: what a cross-site page can send without a preflight, and a plausible mistake (XML, no type)
WRONG = [
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "application/xml",
    None,
]


def url(svc: Service, template: str) -> str:
    for name, value in PATHS.items():
        template = template.replace(name, value)
    return f"http://127.0.0.1:{svc.api_port}{template}"


def test_every_body_route_is_in_the_table(service: Service) -> None:
    routes = {
        (method, route.path)
        for route in iter_route_contexts(service.app.routes)
        for method in route.methods or ()
        if method in ("POST", "PUT", "PATCH")
    }
    assert routes == set(BODIES), f"new: {routes - set(BODIES)}; gone: {set(BODIES) - routes}"


@pytest.mark.parametrize(("method", "template"), list(BODIES))
async def test_a_body_of_another_type_is_415(service: Service, method: str, template: str) -> None:
    rule = BODIES[(method, template)]
    async with httpx.AsyncClient(timeout=30) as client:
        for wrong in WRONG:
            headers = {"Content-Type": wrong} if wrong else {}
            response = await client.request(
                method, url(service, template), content=b'{"a": 1}', headers=headers
            )
            assert response.status_code == 415, (wrong, response.text)
            # the types the route takes, listed for the sender (Accept-Post, W3C LDP §7.1)
            assert set(filter(None, response.headers.get("accept-post", "").split(", "))) == rule.types
            body = response.json()
            if rule.fhir:
                assert response.headers["content-type"] == "application/fhir+json"
                assert body["resourceType"] == "OperationOutcome"
                (issue,) = body["issue"]
                assert (issue["severity"], issue["code"]) == ("error", "not-supported")
                said = issue["diagnostics"]
            else:
                assert response.headers["content-type"] == "application/problem+json"
                assert (body["status"], body["title"]) == (415, "Unsupported Media Type")
                assert set(body["accepted"]) == rule.types
                said = body["detail"]
            assert (wrong.split(";")[0] if wrong else "without Content-Type") in said


@pytest.mark.parametrize(("method", "template"), list(BODIES))
async def test_every_type_the_route_parses_gets_past_the_check(
    service: Service, method: str, template: str
) -> None:
    """Not 415 (the handler may still refuse this junk body: 400, 404, 422), parameters and case
    in the type ignored (RFC 9110 §8.3.1: the type and subtype are case-insensitive)."""
    rule = BODIES[(method, template)]
    async with httpx.AsyncClient(timeout=30) as client:
        for media in sorted(rule.types):
            for header in (media, media.upper() + "; charset=utf-8"):
                response = await client.request(
                    method, url(service, template), content=b"{}", headers={"Content-Type": header}
                )
                assert response.status_code != 415, (header, response.text)
                assert response.status_code < 500, (header, response.text)
        if not rule.required:  # no body at all
            response = await client.request(method, url(service, template))
            assert response.status_code != 415, response.text


async def test_a_refused_write_is_audited_with_its_route(service: Service) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.post(
            url(service, "/api/v1/silences"),
            content=b"matchers=x",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
    assert response.status_code == 415
    (entry,) = service.audit.query(limit=1)
    assert (entry["method"], entry["route"], entry["status"]) == ("POST", "/api/v1/silences", 415)
