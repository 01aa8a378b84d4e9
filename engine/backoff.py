"""The one backoff: how long to wait before the next attempt at something that keeps failing
(a component restarted by the supervisor, an alert store write, a notice's delivery)."""

from __future__ import annotations

import math
import random


def backoff(base: float, attempt: int, cap: float = math.inf, jitter: float = 0.0) -> float:
    """base, 2*base, 4*base ... for attempt 1, 2, 3 ..., at most `cap`; with `jitter` j the
    delay is spread over (1-j)..(1+j) times that, so many failing together do not retry in step."""
    delay = min(base * 2 ** (max(attempt, 1) - 1), cap)
    return delay * random.uniform(1 - jitter, 1 + jitter) if jitter else delay
