"""HTTP endpoints for FHIR ingest, mounted on the API by the composition root.

Bodies are read against fhir_limits.max_body_bytes as they stream in: a declared
Content-Length over the limit is answered 413 before a byte of the body is read, and a body
that turns out larger (chunked) stops being kept at the limit, so no request can make the
process hold more than the limit.
"""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from connectors.fhir.ingest import FHIRIngest
from connectors.fhir.outcome import issue

FHIR_JSON = "application/fhir+json"
# An oversized body up to this many times the limit is still received to its end (and dropped),
# so the sender can read the 413 once it has sent it all; past that the connection is closed at
# once, and a client still sending may see a reset instead of the answer (its TCP stack drops it).
DRAIN_FACTOR = 4


class TooLarge(Exception):
    def __init__(self, detail: str, close: bool):
        super().__init__(detail)
        self.detail = detail
        self.close = close


async def read_body(request: Request, limit: int) -> bytes:
    """The body, or TooLarge once it is known to be over `limit` bytes."""
    setting = "fhir_limits.max_body_bytes"
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        detail = f"the body is {declared} bytes; the limit is {limit} ({setting}): split the Bundle"
        raise TooLarge(detail, close=int(declared) > DRAIN_FACTOR * limit)
    chunks: list[bytes] = []
    size = 0
    stream = request.stream()
    async for chunk in stream:
        size += len(chunk)
        if size > limit:
            break
        chunks.append(chunk)
    else:
        return b"".join(chunks)
    chunks.clear()
    ended = True
    async for chunk in stream:  # the same stream, on from where it was left: dropped, not kept
        size += len(chunk)
        if size > DRAIN_FACTOR * limit:
            ended = False
            break
    detail = f"the body is over {limit} bytes ({setting}): split the Bundle"
    raise TooLarge(detail, close=not ended)


def fhir_router(ingest: FHIRIngest) -> APIRouter:
    router = APIRouter(prefix="/fhir", tags=["fhir"])

    async def respond(request: Request, resource_type: str | None) -> Response:
        try:
            body = await read_body(request, ingest.limits.max_body_bytes)
        except TooLarge as exc:
            status, answer = ingest.too_large(
                [issue("error", "too-costly", exc.detail)], resource_type or "Bundle"
            )
            headers = {"Connection": "close"} if exc.close else None
            return Response(orjson.dumps(answer), status_code=status, media_type=FHIR_JSON, headers=headers)
        status, answer = await ingest.post(body, resource_type)
        return Response(orjson.dumps(answer), status_code=status, media_type=FHIR_JSON)

    @router.post(
        "",
        summary="POST a Bundle: transaction, batch, message, collection, history (notifications)",
        responses={
            400: {"description": "OperationOutcome: what is wrong, with the element's path"},
            413: {"description": "OperationOutcome: over fhir_limits.max_body_bytes or max_entries"},
        },
    )
    async def post_bundle(request: Request) -> Response:
        return await respond(request, None)

    @router.post(
        "/{resource_type}",
        summary="POST one resource (Encounter, ServiceRequest, Specimen, DiagnosticReport, Observation, ...)",
        responses={
            400: {"description": "OperationOutcome"},
            413: {"description": "OperationOutcome: over fhir_limits.max_body_bytes"},
            422: {"description": "type carries no KPI data"},
        },
    )
    async def post_resource(resource_type: str, request: Request) -> Response:
        return await respond(request, resource_type)

    return router
