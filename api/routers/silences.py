"""Silences: hold notices for matching alerts for a while (the alerts are still recorded)."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import AwareDatetime, BaseModel, Field

from api.problems import Problem
from api.security.auth import PrincipalDep, require
from api.security.roles import Permission, Role
from api.views import BackendDep
from engine.durations import Duration
from engine.scorecard import Matchers

router = APIRouter(prefix="/api/v1/silences", tags=["alerts"])


class SilenceRequest(BaseModel):
    matchers: Matchers = Field(
        description="alert labels to match: kpi, perspective, facility, department, unit, severity, kind"
    )
    starts_at: AwareDatetime | None = Field(default=None, description="default: now")
    ends_at: AwareDatetime | None = None
    duration: Duration | None = Field(default=None, description="instead of ends_at, e.g. 2h")
    created_by: str | None = Field(
        default=None, max_length=200, description="ignored: the creator is the signed-in caller"
    )
    comment: str | None = Field(default=None, max_length=2000)


@router.post("", status_code=201, dependencies=[Depends(require(Permission.MANAGE_SILENCES))])
async def create_silence(
    request: Request, backend: BackendDep, principal: PrincipalDep, body: SilenceRequest
) -> dict[str, Any]:
    """Hold notices for matching alerts until ends_at (the alerts are still recorded). Longer than
    api.auth.max_silence only for an admin."""
    now = time.time()
    starts = body.starts_at.timestamp() if body.starts_at else now
    ends = body.ends_at.timestamp() if body.ends_at else starts + (body.duration or 0)
    if ends <= max(starts, now):
        raise Problem(422, "Invalid silence", "ends_at (or starts_at + duration) must be in the future")
    if not body.matchers:
        raise Problem(422, "Invalid silence", "give at least one matcher (kpi, unit, severity, ...)")
    longest = request.app.state.auth.max_silence
    if ends - max(starts, now) > longest and Role.ADMIN.value not in principal.roles:
        raise Problem(
            422,
            "Silence too long",
            f"a silence may last at most {longest:g} s (api.auth.max_silence); "
            "only an admin may set a longer one",
        )
    return backend.alerts.silence(dict(body.matchers), starts, ends, principal.name, body.comment)


@router.get("", dependencies=[Depends(require(Permission.VIEW_ALERTS))])
async def list_silences(backend: BackendDep, expired: bool = False) -> dict[str, Any]:
    return {"silences": backend.alerts.silences(include_expired=expired)}


@router.delete("/{silence_id}", dependencies=[Depends(require(Permission.MANAGE_SILENCES))])
async def expire_silence(
    backend: BackendDep,
    silence_id: str,
    principal: PrincipalDep,
    by: str | None = Query(default=None, description="ignored: the signed-in caller expires it"),
) -> dict[str, Any]:
    if not backend.alerts.expire_silence(silence_id, principal.name):
        raise Problem(404, "Unknown silence", f"no active silence {silence_id!r}")
    return {"expired": silence_id}
