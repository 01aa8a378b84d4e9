"""HTTP endpoints for FHIR ingest, mounted on the API by the composition root."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from connectors.fhir.ingest import FHIRIngest

FHIR_JSON = "application/fhir+json"


def fhir_router(ingest: FHIRIngest) -> APIRouter:
    router = APIRouter(prefix="/fhir", tags=["fhir"])

    @router.post(
        "",
        summary="POST a Bundle: transaction, batch, message, collection, history (notifications)",
        responses={400: {"description": "OperationOutcome: what is wrong, with the element's path"}},
    )
    async def post_bundle(request: Request) -> Response:
        status, body = await ingest.post(await request.body())
        return Response(orjson.dumps(body), status_code=status, media_type=FHIR_JSON)

    @router.post(
        "/{resource_type}",
        summary="POST one resource (Encounter, ServiceRequest, Specimen, DiagnosticReport, Observation, ...)",
        responses={
            400: {"description": "OperationOutcome"},
            422: {"description": "type carries no KPI data"},
        },
    )
    async def post_resource(resource_type: str, request: Request) -> Response:
        status, body = await ingest.post(await request.body(), resource_type)
        return Response(orjson.dumps(body), status_code=status, media_type=FHIR_JSON)

    return router
