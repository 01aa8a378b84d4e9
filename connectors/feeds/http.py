"""HTTP upload of feed files: POST /api/v1/feeds/{feed} with a CSV, JSON or NDJSON body.

The body's format is its Content-Type (reader.FORMATS); each one the reader parses is declared
in the OpenAPI document, and any other is refused with 415 by the API (api/content_types.py).

One route per feed, so each row schema is published in the OpenAPI document. A refusal is
raised as UploadRefused; the application renders it as the API renders every error (RFC 9457
problem details, api/problems.py), so the connector needs nothing of the API package.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from connectors.feeds.ingest import FeedIngest, FeedReport
from connectors.feeds.reader import FORMATS, FeedFileError, Format, detect
from connectors.feeds.schemas import FEEDS, FeedRow, columns
from connectors.http_body import TooLarge, read_body
from engine.bus import StorageUnavailable


class UploadRefused(Exception):
    """An upload refused: status, title, detail and extra members of the problem."""

    def __init__(self, status: int, title: str, detail: str, **extra: Any):
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.extra = extra


async def read_limited(request: Request, limit: int) -> bytes:
    try:
        return await read_body(request, limit)
    except TooLarge as exc:
        raise UploadRefused(413, "Upload too large", exc.sized("feeds.max_upload_bytes")) from None


def _openapi(model: type[FeedRow]) -> dict[str, Any]:
    schema = model.model_json_schema()
    header = ",".join(name for name, *_ in columns(model))
    by_format: dict[Format, dict[str, Any]] = {
        "csv": {"schema": {"type": "string", "description": f"header line: {header}"}},
        "json": {"schema": {"type": "array", "items": schema}},
        "ndjson": {"schema": {"type": "string", "description": "one row object per line"}},
    }
    return {
        "requestBody": {
            "required": True,
            "description": f"{model.title}. {(model.__doc__ or '').strip()} Columns: {header}",
            "content": {media: by_format[fmt] for media, fmt in FORMATS.items()},
        }
    }


RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "rows taken; bad rows listed in errors with their line and kept as dead letters"},
    413: {"description": "problem+json: body over feeds.max_upload_bytes"},
    415: {"description": "problem+json: the Content-Type is not one of the formats read"},
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
            raise UploadRefused(422, "Unreadable feed file", str(exc), feed=feed) from None
        except StorageUnavailable as exc:
            raise UploadRefused(
                503, "Could not store the file now", f"{exc}; send it again", feed=feed
            ) from None
        report: FeedReport = result.answer
        answer = report.as_dict()
        if result.code == "422":  # no row in it was usable
            detail = f"none of the {report.rows} rows could be used; see errors"
            raise UploadRefused(422, "No usable rows", detail, **answer)
        return JSONResponse(answer)

    return upload
