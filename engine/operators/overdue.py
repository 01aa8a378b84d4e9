"""Survivorship for duration measures with count_open: the intervals that are (or were) open
past their timeout, indexed by start time.

They are the only intervals a closed window counts while still open (at their age at the
window's end), so closing a window looks them up by start time instead of walking every
key, and the windows where one becomes overdue are not skipped as quiet.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator

from engine.operators.intervals import Interval
from engine.samples import GroupKey
from engine.windows import PaneClock


class OverdueIntervals:
    """timeout: the measure's (None: nothing is ever overdue); life: its expire_after."""

    __slots__ = ("at", "by_key", "life", "starts", "timeout")

    def __init__(self, timeout: float | None, life: float) -> None:
        self.timeout = timeout
        self.life = life
        self.by_key: dict[str, Interval] = {}  # open past the timeout, now or before
        # the same by start time, sorted: a closing window looks only at the intervals that can
        # be overdue in it (entries whose key has left `by_key`, or moved, are skipped)
        self.starts: list[tuple[float, str]] = []
        self.at: dict[str, float] = {}  # key -> its start in `starts`

    def note(self, key: str, r: Interval) -> None:
        """Keep the interval if it is (or was) open past the timeout; else forget it."""
        start, timeout = r.start, self.timeout
        if start is None or timeout is None:
            self.by_key.pop(key, None)
            return
        resolved = start + self.life
        if r.end is not None and r.end < resolved:
            resolved = r.end
        if r.cancel is not None and r.cancel < resolved:
            resolved = r.cancel
        if resolved > start + timeout:
            if key not in self.by_key or self.at.get(key) != start:
                entry, starts = (start, key), self.starts
                if not starts or starts[-1] <= entry:
                    starts.append(entry)  # starts come in about time order: mostly the last
                else:
                    bisect.insort(starts, entry)
                self.at[key] = start
            self.by_key[key] = r
        else:
            self.by_key.pop(key, None)

    def open_at(self, at: float, per: float) -> dict[GroupKey, list[float]]:
        """Intervals open at `at` (event time) past the timeout, at their age then (in units of
        `per` seconds), by start place: started before at - timeout and after at - life, with
        no end and no cancel before `at`. What has arrived since (an end at or after `at`)
        does not matter."""
        timeout = self.timeout
        if timeout is None:
            return {}
        out: dict[GroupKey, list[float]] = {}
        due, oldest = at - timeout, at - self.life
        starts = self.starts
        lo = bisect.bisect_right(starts, (oldest, "\uffff"))
        hi = bisect.bisect_left(starts, (due, ""))
        found: list[Interval] = []
        if hi - lo <= len(self.by_key):  # by start time (an engine far behind holds years)
            seen: set[str] = set()
            for begun, key in starts[lo:hi]:
                r = self.by_key.get(key)
                if r is not None and r.start == begun and key not in seen:
                    seen.add(key)
                    found.append(r)
        else:  # the intervals overdue now are fewer than the starts in that range
            found = list(self.by_key.values())
        for r in found:
            start = r.start
            if start is None or not (oldest < start < due):
                continue
            if r.end is not None and r.end < at and r.end <= start + self.life:
                continue
            if r.cancel is not None and r.cancel < at:
                continue
            out.setdefault(r.start_place, []).append((at - start) / per)  # type: ignore[arg-type]
        return out

    def due_indices(self, clock: PaneClock) -> Iterator[int]:
        """The panes in which an interval becomes overdue (needs a timeout)."""
        timeout = float(self.timeout)  # type: ignore[arg-type]
        for r in self.by_key.values():
            if r.start is None:
                continue
            overdue = r.start + timeout
            resolved = min(t for t in (r.end, r.cancel, r.start + self.life) if t is not None)
            if resolved > overdue:
                yield clock.index(overdue)

    def next_due(self, clock: PaneClock, end: int, ahead: int | None) -> int | None:
        """The first pane at or after window `end` where an interval becomes overdue, if it comes
        before `ahead` (the next pane with data); else `ahead` (needs a timeout)."""
        timeout = float(self.timeout)  # type: ignore[arg-type]
        starts = self.starts
        i = bisect.bisect_left(starts, (clock.start(end) - timeout, ""))
        while i < len(starts):
            begun, key = starts[i]
            i += 1
            r = self.by_key.get(key)
            if r is None or r.start != begun:
                continue
            overdue = clock.index(begun + timeout)
            if ahead is None or overdue < ahead:
                return overdue
            break
        return ahead

    def prune(self, horizon: float) -> None:
        """Forget the start entries before horizon (their intervals are given up)."""
        gone = bisect.bisect_left(self.starts, (horizon, ""))
        if gone:
            for _, key in self.starts[:gone]:
                if key not in self.by_key:
                    self.at.pop(key, None)
            del self.starts[:gone]
