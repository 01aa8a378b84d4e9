"""How far an event's own time may stray from when it was received.

Feeds carry wrong dates (a typo'd year, a default 1900 or 2099, a wrong zone). One event far
in the future would move the watermark past every real event and turn them all late; so the
connectors refuse an event time more than `engine.max_future` ahead of its arrival, or more
than `engine.max_age` behind it, naming the field, and the engine never lets a source's
watermark run ahead of the wall clock at all (engine/watermarks.py).
"""

from __future__ import annotations

from datetime import datetime

DEFAULT_MAX_FUTURE = 600.0
DEFAULT_MAX_AGE = 100 * 365 * 86400.0  # a default 1900 date is refused; a lifetime of history is not


def _span(seconds: float) -> str:
    for unit, size in (("days", 86400.0), ("hours", 3600.0), ("minutes", 60.0)):
        if seconds >= size:
            return f"{seconds / size:,.0f} {unit}"
    return f"{seconds:.0f} seconds"


class TimeBounds:
    __slots__ = ("max_age", "max_future")

    def __init__(self, max_future: float = DEFAULT_MAX_FUTURE, max_age: float = DEFAULT_MAX_AGE):
        self.max_future = max_future
        self.max_age = max_age

    def problem(self, moment: datetime, received: datetime) -> str | None:
        """Why this event time cannot be taken (None when it can)."""
        ahead = (moment - received).total_seconds()
        if ahead > self.max_future:
            return (
                f"{moment.isoformat()} is {_span(ahead)} ahead of its arrival ({received.isoformat()}); "
                f"events more than {_span(self.max_future)} in the future are refused (engine.max_future)"
            )
        if -ahead > self.max_age:
            return (
                f"{moment.isoformat()} is {_span(-ahead)} old; events older than {_span(self.max_age)} "
                "are refused (engine.max_age)"
            )
        return None


DEFAULT_BOUNDS = TimeBounds()
