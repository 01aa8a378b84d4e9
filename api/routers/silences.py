"""Silences: hold notices for matching alerts for a while (the alerts are still recorded)."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Query
from pydantic import AwareDatetime, BaseModel, Field

from api.problems import Problem
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
    created_by: str = Field(min_length=1, max_length=200)
    comment: str | None = Field(default=None, max_length=2000)


@router.post("", status_code=201)
async def create_silence(backend: BackendDep, body: SilenceRequest) -> dict[str, Any]:
    """Hold notices for matching alerts until ends_at (the alerts are still recorded)."""
    now = time.time()
    starts = body.starts_at.timestamp() if body.starts_at else now
    ends = body.ends_at.timestamp() if body.ends_at else starts + (body.duration or 0)
    if ends <= max(starts, now):
        raise Problem(422, "Invalid silence", "ends_at (or starts_at + duration) must be in the future")
    if not body.matchers:
        raise Problem(422, "Invalid silence", "give at least one matcher (kpi, unit, severity, ...)")
    return backend.alerts.silence(dict(body.matchers), starts, ends, body.created_by, body.comment)


@router.get("")
async def list_silences(backend: BackendDep, expired: bool = False) -> dict[str, Any]:
    return {"silences": backend.alerts.silences(include_expired=expired)}


@router.delete("/{silence_id}")
async def expire_silence(
    backend: BackendDep, silence_id: str, by: str = Query(min_length=1)
) -> dict[str, Any]:
    if not backend.alerts.expire_silence(silence_id, by):
        raise Problem(404, "Unknown silence", f"no active silence {silence_id!r}")
    return {"expired": silence_id}
