"""One key's interval in a duration measure (an order, a call, a stay): its earliest start,
end and cancel in event time, what it counts as now, and its form in a snapshot.

The operator (engine/operators/duration.py) keeps one per key and settles it on every
event; this module holds only the record, so a snapshot written by one version restores
in the next (including the older form that kept open starts, early ends and closed keys
apart).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from engine.samples import GroupKey

Observation = tuple[GroupKey, float, float]  # place, time, value


class Interval:
    """What is known of one key: its earliest start, end and cancel (event time)."""

    __slots__ = (
        "cancel",
        "end",
        "end_place",
        "expired",
        "frozen",
        "obs",
        "start",
        "start_place",
        "status",
    )

    def __init__(self) -> None:
        self.start: float | None = None
        self.start_place: GroupKey | None = None
        self.end: float | None = None
        self.end_place: GroupKey | None = None
        self.cancel: float | None = None
        self.expired = False  # the watermark passed start + expire_after with no end
        self.frozen = False  # restored from an old snapshot: closed, details unknown
        self.obs: Observation | None = None  # the value this key has in the panes now
        self.status = "waiting"  # waiting (no start), open, ended, cancelled, negative, expired

    def since(self) -> float:
        """The time it is kept by (pruned after expire_after past it)."""
        for value in (self.start, self.end, self.cancel):
            if value is not None:
                return value
        return 0.0


Row = tuple[
    float | None,
    GroupKey | None,
    float | None,
    GroupKey | None,
    float | None,
    bool,
    bool,
    str,
    Observation | None,
]
"""An interval at rest (between its events, and not in the overdue index, which reads it) as
a tuple: start, start place, end, end place, cancel, expired, frozen, status, value; its
snapshot row without the key. The collector stops tracking a tuple of untracked values, and
an engine keeps hundreds of thousands of intervals until expire_after (200,000 of the 291,000
objects it tracked in bench/engine_throughput.py were Intervals, ended ones; 38,000 of the
134,000 left were open ones waiting for an end that never came), each scanned by every full
collection. An open one's start is also in the operator's `open`, in start order."""


def at_rest(r: Interval) -> Row:
    return (r.start, r.start_place, r.end, r.end_place, r.cancel, r.expired, r.frozen, r.status, r.obs)


def woken(row: Row) -> Interval:
    """A Row as an Interval again (another event came for its key)."""
    r = Interval()
    r.start, r.start_place, r.end, r.end_place, r.cancel, r.expired, r.frozen, r.status, r.obs = row
    return r


def interval_row(key: str, r: Interval | Row) -> tuple[Any, ...]:
    """An interval as a snapshot row (orjson writes the tuples, places included, as arrays:
    a worker's checkpoint serialises every open interval of every engine)."""
    return (key, *(r if isinstance(r, tuple) else at_rest(r)))


def since(r: Interval | Row) -> float:
    """The time an interval is kept by (pruned after expire_after past it)."""
    if isinstance(r, tuple):
        for value in (r[0], r[2], r[4]):
            if value is not None:
                return value
        return 0.0
    return r.since()


def interval_of_row(row: Sequence[Any]) -> tuple[str, Interval]:
    """A snapshot row back as (key, interval)."""
    k, start, sp, end, ep, cancel, expired, frozen, status, obs = row
    r = Interval()
    r.start, r.start_place = start, _tuple(sp)
    r.end, r.end_place = end, _tuple(ep)
    r.cancel, r.expired, r.frozen, r.status = cancel, expired, frozen, status
    r.obs = None if obs is None else (tuple(obs[0]), obs[1], obs[2])  # type: ignore[assignment]
    return k, r


def restore_pairs(
    state: dict[str, Any],
    keys: dict[str, Interval],
    opened: dict[str, tuple[float, GroupKey]],
    early_ends: dict[str, tuple[float, GroupKey]],
) -> None:
    """A snapshot from before intervals were kept whole: open starts, ends waiting for their
    start, and keys already closed (their value stays, and nothing reopens them)."""
    for k, ts, p in state["open"]:
        r = keys[k] = Interval()
        r.start, r.start_place, r.status = ts, tuple(p), "open"  # type: ignore[assignment]
        opened[k] = (ts, r.start_place)  # type: ignore[assignment]
    for k, ts, p in state["early_ends"]:
        r = keys[k] = Interval()
        r.end, r.end_place = ts, tuple(p)  # type: ignore[assignment]
        early_ends[k] = (ts, r.end_place)  # type: ignore[assignment]
    for k, ts in state["closed_keys"]:
        r = keys[k] = Interval()
        # closed before: its value stays, and nothing reopens it
        r.end, r.frozen, r.status = ts, True, "ended"


def _tuple(place: list[Any] | None) -> GroupKey | None:
    return None if place is None else tuple(place)  # type: ignore[return-value]
