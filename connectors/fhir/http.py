"""HTTP endpoints for FHIR ingest, mounted on the API by the composition root.

Bodies are read against fhir_limits.max_body_bytes as they stream in (connectors/http_body.py):
over it, 413 with an OperationOutcome.
"""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from connectors.fhir.ingest import FHIRIngest
from connectors.fhir.outcome import issue
from connectors.http_body import TooLarge, read_body

FHIR_JSON = "application/fhir+json"
# the body types parsed (FHIR R4 http.html: application/fhir+json; plain JSON is accepted too), as
# declared in the OpenAPI document; any other is refused with 415 (api/content_types.py)
BODY = {
    "requestBody": {
        "required": True,
        "content": {t: {"schema": {"type": "object"}} for t in (FHIR_JSON, "application/json")},
    }
}


def fhir_router(ingest: FHIRIngest) -> APIRouter:
    router = APIRouter(prefix="/fhir", tags=["fhir"])

    async def respond(request: Request, resource_type: str | None) -> Response:
        try:
            body = await read_body(request, ingest.limits.max_body_bytes)
        except TooLarge as exc:
            status, answer = ingest.too_large(
                [
                    issue(
                        "error", "too-costly", exc.sized("fhir_limits.max_body_bytes") + ": split the Bundle"
                    )
                ],
                resource_type or "Bundle",
            )
            headers = {"Connection": "close"} if exc.close else None
            return Response(orjson.dumps(answer), status_code=status, media_type=FHIR_JSON, headers=headers)
        status, answer = await ingest.post(body, resource_type)
        return Response(orjson.dumps(answer), status_code=status, media_type=FHIR_JSON)

    @router.post(
        "",
        openapi_extra=BODY,
        summary="POST a Bundle: transaction, batch, message, collection, history (notifications)",
        responses={
            400: {"description": "OperationOutcome: what is wrong, with the element's path"},
            413: {"description": "OperationOutcome: over fhir_limits.max_body_bytes or max_entries"},
            415: {
                "description": "OperationOutcome: the body is not application/fhir+json or application/json"
            },
        },
    )
    async def post_bundle(request: Request) -> Response:
        return await respond(request, None)

    @router.post(
        "/{resource_type}",
        openapi_extra=BODY,
        summary="POST one resource (Encounter, ServiceRequest, Specimen, DiagnosticReport, Observation, ...)",
        responses={
            400: {"description": "OperationOutcome"},
            413: {"description": "OperationOutcome: over fhir_limits.max_body_bytes"},
            415: {
                "description": "OperationOutcome: the body is not application/fhir+json or application/json"
            },
            422: {"description": "type carries no KPI data"},
        },
    )
    async def post_resource(resource_type: str, request: Request) -> Response:
        return await respond(request, resource_type)

    return router
