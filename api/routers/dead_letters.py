"""Dead letters: inputs that could not be used, and their replay after a fix."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from api.backend import Replayer
from api.problems import Problem
from api.security.auth import require
from api.security.roles import Permission
from api.views import BackendDep

router = APIRouter(prefix="/api/v1/dead-letters", tags=["dead letters"])
ROW_ID_MAX = 2**63 - 1  # a SQLite rowid: a larger id is a 422, not an OverflowError (500)


class ReplayRequest(BaseModel):
    ids: list[Annotated[int, Field(ge=-ROW_ID_MAX, le=ROW_ID_MAX)]] = Field(
        default_factory=list, description="these letters; empty: every pending one"
    )
    source: str | None = Field(
        default=None, description="only this source (hl7v2, fhir, feed, feed:staffing)"
    )
    include_replayed: bool = Field(default=False, description="also letters already taken by a replay")


def get_replayer(request: Request) -> Replayer | None:
    replayer: Replayer | None = request.app.state.replayer
    return replayer


@router.get("", dependencies=[Depends(require(Permission.VIEW_DEAD_LETTERS))])
async def dead_letters(
    backend: BackendDep,
    source: str | None = None,
    after: int = Query(default=0, ge=0, le=ROW_ID_MAX),
    limit: int = Query(default=100, ge=1, le=1000),
) -> dict[str, Any]:
    letters = backend.dead_letters.query(source=source, after=after, limit=limit)
    return {
        "dead_letters": [d.summary() for d in letters],
        "counts": backend.dead_letters.count(),
    }


@router.post("/replay", dependencies=[Depends(require(Permission.REPLAY_DEAD_LETTERS))])
async def replay_dead_letters(
    backend: BackendDep,
    replayer: Annotated[Replayer | None, Depends(get_replayer)],
    body: ReplayRequest,
) -> dict[str, Any]:
    """Send dead letters through their connector again (after a fix). A letter taken is
    closed; one rejected again stays pending with the new reason."""
    if replayer is None:
        raise Problem(501, "Replay unavailable", "this API process has no connectors to replay through")
    try:
        letters = backend.dead_letters.select(body.ids, body.source, body.include_replayed)
    except KeyError as exc:
        raise Problem(404, "Unknown dead letter", str(exc.args[0])) from None
    done = await replayer.replay(letters)
    return {
        "replayed": [r.as_dict() for r in done],
        "taken": sum(r.taken for r in done),
        "still_rejected": sum(not r.taken for r in done),
    }
