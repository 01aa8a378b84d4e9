"""Request rate limits: one token bucket per caller and kind of request, 429 past it.

Why per caller: one runaway interface engine or script (or a stolen token) must not starve the
scorecard of everyone else; a caller is the signed-in principal, or the client address while no
credentials were accepted (so guessing tokens is limited too). Why two kinds: ingest (every
write: FHIR, feeds, ack, silences, replay) comes in bursts from a few machines, reads from many
pages and scrapers. A bucket holds `burst` requests and refills at `rate` per second (the token
bucket of RFC 2697 §1, one rate); a refused request takes nothing from it. The answer is 429 with
Retry-After in whole seconds (RFC 6585 §4, RFC 9110 §10.2.3) and problem JSON.

Buckets live in this process only (with several gateways each limits on its own). Full buckets
are dropped when there are many, so a flood of new addresses cannot grow the table for good.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from api.problems import Problem

log = logging.getLogger(__name__)

WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
MAX_BUCKETS = 10_000  # past this, full buckets (callers quiet long enough) are forgotten


@dataclass(frozen=True)
class Limit:
    rate: float  # requests per second, refilled continuously
    burst: int  # requests at once after a quiet spell


class RateLimiter:
    def __init__(self, ingest: Limit, reads: Limit, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = {"ingest": ingest, "reads": reads}
        self.clock = clock
        self._buckets: dict[tuple[str, str], tuple[float, float]] = {}  # -> (tokens, as of)

    @staticmethod
    def kind(method: str) -> str:
        return "ingest" if method in WRITES else "reads"

    def charge(self, caller: str, method: str) -> None:
        """Take one request from the caller's bucket, or raise the 429 Problem."""
        kind = self.kind(method)
        limit = self.limits[kind]
        now = self.clock()
        tokens, since = self._buckets.get((kind, caller), (float(limit.burst), now))
        tokens = min(float(limit.burst), tokens + (now - since) * limit.rate)
        if tokens < 1.0:
            self._buckets[(kind, caller)] = (tokens, now)
            wait = max(1, math.ceil((1.0 - tokens) / limit.rate))
            log.info("rate limit reached", extra={"kind": kind, "retry_after": wait})
            raise Problem(
                429,
                "Too Many Requests",
                f"more than {limit.burst} {kind} requests at once or {limit.rate:g}/s "
                f"(api.rate_limit.{kind}); retry after {wait} s",
                headers={"Retry-After": str(wait)},
            )
        self._buckets[(kind, caller)] = (tokens - 1.0, now)
        if len(self._buckets) > MAX_BUCKETS:
            self._forget_full(now)

    def _forget_full(self, now: float) -> None:
        for key, (tokens, since) in list(self._buckets.items()):
            limit = self.limits[key[0]]
            if tokens + (now - since) * limit.rate >= limit.burst:
                del self._buckets[key]
