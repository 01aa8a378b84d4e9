"""Request bodies read against a size limit, for every connector's HTTP door (FHIR, feeds).

A declared Content-Length over the limit is refused before a byte of the body is read; a body
that turns out larger (chunked) stops being kept at the limit, so no request can make the
process hold more than the limit. An oversized body up to DRAIN_FACTOR times the limit is
still received to its end (and dropped), so the sender can read the 413 once it has sent it
all; past that the connection is closed at once, and a client still sending may see a reset
instead of the answer (its TCP stack drops it).
"""

from __future__ import annotations

from starlette.requests import Request

DRAIN_FACTOR = 4


class TooLarge(Exception):
    """declared: the Content-Length that was over the limit (None: the body turned out over it);
    close: the body was not read to its end, so the connection must be closed."""

    def __init__(self, limit: int, declared: int | None, close: bool):
        super().__init__(f"over {limit} bytes")
        self.limit = limit
        self.declared = declared
        self.close = close

    def sized(self, setting: str) -> str:
        """What was too large, naming the setting that limits it."""
        if self.declared is not None:
            return f"the body is {self.declared} bytes; the limit is {self.limit} ({setting})"
        return f"the body is over {self.limit} bytes ({setting})"


async def read_body(request: Request, limit: int) -> bytes:
    """The body, or TooLarge once it is known to be over `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise TooLarge(limit, int(declared), close=int(declared) > DRAIN_FACTOR * limit)
    chunks: list[bytes] = []
    size = 0
    stream = request.stream()
    async for chunk in stream:
        size += len(chunk)
        if size > limit:
            break
        chunks.append(chunk)
    else:
        return b"".join(chunks)
    chunks.clear()
    ended = True
    async for chunk in stream:  # the same stream, on from where it was left: dropped, not kept
        size += len(chunk)
        if size > DRAIN_FACTOR * limit:
            ended = False
            break
    raise TooLarge(limit, None, close=not ended)
