"""HTTP upload of feed files: POST /api/v1/feeds/{feed} with a CSV, JSON or NDJSON body.

One route per feed, so each row schema is published in the OpenAPI document.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from api.problems import PROBLEM_JSON, Problem
from connectors.feeds.ingest import FeedIngest
from connectors.feeds.reader import FeedFileError, detect
from connectors.feeds.schemas import FEEDS, FeedRow, columns


async def read_limited(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise Problem(
            413, "Upload too large", f"{declared} bytes; the limit is {limit} (feeds.max_upload_bytes)"
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Problem(413, "Upload too large", f"over {limit} bytes (feeds.max_upload_bytes)")
        chunks.append(chunk)
    return b"".join(chunks)


def _openapi(model: type[FeedRow]) -> dict[str, Any]:
    schema = model.model_json_schema()
    header = ",".join(name for name, *_ in columns(model))
    return {
        "requestBody": {
            "required": True,
            "description": f"{model.title}. {(model.__doc__ or '').strip()} Columns: {header}",
            "content": {
                "text/csv": {"schema": {"type": "string", "description": f"header line: {header}"}},
                "application/json": {"schema": {"type": "array", "items": schema}},
                "application/x-ndjson": {
                    "schema": {"type": "string", "description": "one row object per line"}
                },
            },
        }
    }


RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "rows taken; bad rows listed in errors with their line and kept as dead letters"},
    413: {"description": "problem+json: body over feeds.max_upload_bytes"},
    422: {"description": "problem+json: the file is unreadable, or no row in it was usable (errors listed)"},
}


def feeds_router(ingest: FeedIngest, max_bytes: int) -> APIRouter:
    router = APIRouter(prefix="/api/v1/feeds", tags=["feeds"])

    @router.get("", summary="The feeds and their row schemas")
    async def list_feeds() -> dict[str, Any]:
        return {
            "feeds": [
                {
                    "feed": name,
                    "title": model.title,
                    "upload": f"/api/v1/feeds/{name}",
                    "columns": [
                        {"name": n, "required": r, "type": t, "description": d}
                        for n, r, t, d in columns(model)
                    ],
                }
                for name, model in FEEDS.items()
            ]
        }

    for name, model in FEEDS.items():
        router.add_api_route(
            f"/{name}",
            _upload(ingest, name, max_bytes),
            methods=["POST"],
            summary=f"Upload {model.title.lower()} (CSV, JSON array or NDJSON)",
            openapi_extra=_openapi(model),
            responses=RESPONSES,
            name=f"upload_{name}",
        )
    return router


def _upload(ingest: FeedIngest, feed: str, max_bytes: int) -> Any:
    async def upload(request: Request, filename: str | None = None) -> JSONResponse:
        body = await read_limited(request, max_bytes)
        fmt = detect(request.headers.get("content-type"), filename, body)
        try:
            result = await ingest.ingest(feed, body, fmt, filename)
        except FeedFileError as exc:
            raise Problem(422, "Unreadable feed file", str(exc), feed=feed) from None
        answer = result.as_dict()
        if result.rejected and not (result.accepted or result.duplicates):
            detail = f"none of the {result.rows} rows could be used; see errors"
            body_out = {
                "type": "about:blank",
                "title": "No usable rows",
                "status": 422,
                "detail": detail,
                **answer,
            }
            return JSONResponse(body_out, status_code=422, media_type=PROBLEM_JSON)
        return JSONResponse(answer)

    return upload
