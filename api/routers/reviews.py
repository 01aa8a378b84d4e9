"""The monthly review of a place (api/review.py) as JSON, printable HTML or PDF.

The format is `?format=json|html|pdf`, else the Accept header (text/html, application/pdf),
else JSON. The review is computed from period reports over the event log, in a worker thread.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from api.review import Review, place_of
from api.review_render import CSP, to_html, to_pdf
from api.security.auth import require
from api.security.roles import Permission
from api.views import BackendDep

router = APIRouter(prefix="/api/v1/reviews", tags=["reviews"])


def _format(request: Request, asked: str | None) -> str:
    if asked:
        return asked
    accept = request.headers.get("accept", "")
    if "application/pdf" in accept:
        return "pdf"
    if "text/html" in accept:
        return "html"
    return "json"


@router.get(
    "/{month}",
    dependencies=[Depends(require(Permission.VIEW_REPORTS))],
    responses={200: {"content": {"text/html": {}, "application/pdf": {}}}},
)
async def monthly_review(
    backend: BackendDep,
    request: Request,
    month: str,
    facility: str | None = None,
    department: str | None = None,
    unit: str | None = None,
    format: str | None = Query(default=None, pattern="^(json|html|pdf)$"),
) -> Any:
    review = Review(backend, month, place_of(backend, facility, department, unit))
    data = await asyncio.to_thread(review.build)
    kind = _format(request, format)
    if kind == "pdf":
        pdf = await asyncio.to_thread(to_pdf, data)
        name = f"review-{month}.pdf"
        return Response(
            pdf, media_type="application/pdf", headers={"content-disposition": f'inline; filename="{name}"'}
        )
    if kind == "html":
        return HTMLResponse(to_html(data), headers={"content-security-policy": CSP})
    return JSONResponse(data)
