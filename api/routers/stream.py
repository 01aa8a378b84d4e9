"""/api/v1/stream: live KPI values and alert changes as server-sent events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from api.backend import Backend
from api.security.auth import PrincipalDep, require
from api.security.roles import Permission
from api.views import BackendDep, hidden_below, shown

router = APIRouter(tags=["stream"])


async def _events(backend: Backend, request: Request, k: int | None) -> AsyncIterator[bytes]:
    with backend.board.subscribe() as queue:
        yield b": connected\n\n"
        while not await request.is_disconnected():
            try:
                message = await asyncio.wait_for(queue.get(), 15)
            except TimeoutError:
                yield b": keep-alive\n\n"
                continue
            if message["type"] == "end":
                return
            data = message["data"]
            kpi = backend.catalogue.kpis.get(data.get("kpi", "")) if message["type"] == "kpi" else None
            if kpi is not None:
                data = shown(kpi, data, k)
            yield f"event: {message['type']}\n".encode() + b"data: " + orjson.dumps(data) + b"\n\n"


@router.get("/api/v1/stream", dependencies=[Depends(require(Permission.VIEW_STREAM))])
async def stream(backend: BackendDep, principal: PrincipalDep, request: Request) -> StreamingResponse:
    return StreamingResponse(
        _events(backend, request, hidden_below(backend, principal)),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache"},
    )
