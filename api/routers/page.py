"""The scorecard page and its static files (not in the OpenAPI schema)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse

from api.problems import Problem
from api.security.auth import get_auth
from api.security.oidc import OidcUnavailable

STATIC = Path(__file__).resolve().parent.parent / "static"

router = APIRouter(include_in_schema=False)


@router.get("/")
async def page() -> FileResponse:
    return FileResponse(STATIC / "index.html")


@router.get("/api/v1/sign-in")
async def sign_in(request: Request) -> dict[str, Any]:
    """How the page signs in: `local` (no credentials needed), or `oidc` with the IdP's endpoints
    and the page's public client (authorization code + PKCE). Open: the page asks before it can."""
    verifier = get_auth(request).verifier
    if verifier is None:
        return {"mode": "local"}
    client = verifier.settings.page_client_id
    if client is None:
        return {"mode": "token", "detail": "the page has no sign-in (api.auth.oidc.page_client_id)"}
    try:
        endpoints = await verifier.endpoints()
    except OidcUnavailable:
        raise Problem(
            503, "Identity provider unavailable", "its discovery document cannot be fetched"
        ) from None
    return {"mode": "oidc", "issuer": verifier.settings.issuer, "client_id": client, **endpoints}


@router.get("/static/{name}")
async def static(name: str) -> FileResponse:
    path = (STATIC / name).resolve()
    if path.parent != STATIC.resolve() or not path.is_file():
        raise Problem(404, "Not Found")
    return FileResponse(path)
