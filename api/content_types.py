"""415 for a request body of a type its route does not parse.

Why: a cross-site HTML form (text/plain, urlencoded, multipart) or a `fetch` without a type
needs no CORS preflight, so without this check a page in a clinician's browser could post
FHIR or feed rows into a loopback carescore whose callers are the local operator (security
review M5). The accepted types are the ones each route declares in the OpenAPI document
(FastAPI's JSON bodies, the feeds' CSV/JSON/NDJSON, FHIR's fhir+json and json), so the
document and the check cannot disagree. A body the route does not need may be left out (no
Content-Type, no bytes); a body it declares required needs a type. FHIR routes answer with an
OperationOutcome (FHIR R4 http.html: "415 Unsupported Media Type"), the others with problem JSON.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi.routing import RouteContext, iter_route_contexts
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from api.problems import PROBLEM_JSON

BODY_METHODS = {"POST", "PUT", "PATCH"}
FHIR_JSON = "application/fhir+json"


def accepted(route: RouteContext) -> tuple[frozenset[str], bool] | None:
    """(media types, body required) of a route's request body; None: it takes none."""
    declared = (getattr(route, "openapi_extra", None) or {}).get("requestBody")
    if declared:
        return frozenset(t.lower() for t in declared.get("content", {})), bool(declared.get("required"))
    body = getattr(route, "body_field", None)
    if body is not None:
        return frozenset({"application/json"}), body.field_info.is_required()
    return None


def media_type(header: str | None) -> str | None:
    """`text/csv; charset=utf-8` -> `text/csv`."""
    if header is None:
        return None
    return header.split(";", 1)[0].strip().lower() or None


class ContentTypeCheck:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        route = _route(scope)
        rule = accepted(route) if route is not None else None
        headers = dict(scope["headers"])
        if rule is None:  # unknown route (404 follows) or one that takes no body: none may come
            if route is None or not _has_body(headers):
                await self.app(scope, receive, send)
                return
            rule = frozenset(), False
        types, required = rule
        given = media_type(headers.get(b"content-type", b"").decode("latin-1") or None)
        if given in types or (given is None and not required and not _has_body(headers)):
            await self.app(scope, receive, send)
            return
        scope["route"] = route  # the audit log names the route of a refused write too
        await _refuse(send, given, sorted(types))


def _route(scope: Scope) -> RouteContext | None:
    """The route this request will reach (routers included in the app are walked through)."""
    app: Any = scope.get("app")
    for route in iter_route_contexts(getattr(app, "routes", ())):
        if route.matches(scope)[0] is Match.FULL:
            return route
    return None


def _has_body(headers: dict[bytes, bytes]) -> bool:
    return headers.get(b"content-length", b"0") not in (b"0", b"") or b"transfer-encoding" in headers


async def _refuse(send: Send, given: str | None, types: list[str]) -> None:
    what = f"Content-Type {given}" if given else "a body without Content-Type"
    wanted = f"send one of: {', '.join(types)}" if types else "this request takes no body"
    detail = f"{what} is not accepted here; {wanted}"
    if FHIR_JSON in types:
        media = FHIR_JSON
        body: dict[str, Any] = {
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": "not-supported", "diagnostics": detail}],
        }
    else:
        media = PROBLEM_JSON
        body = {"type": "about:blank", "title": "Unsupported Media Type", "status": 415, "detail": detail}
        body["accepted"] = types
    payload = orjson.dumps(body)
    await send(
        {
            "type": "http.response.start",
            "status": 415,
            "headers": [
                (b"content-type", media.encode()),
                (b"content-length", str(len(payload)).encode()),
            ]
            + ([(b"accept-post", ", ".join(types).encode())] if types else []),
        }
    )
    await send({"type": "http.response.body", "body": payload})
