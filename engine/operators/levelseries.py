"""Levels over time (census, nurses on shift, headcount) kept per unit and pane.

Each pane keeps the sum of deltas and the sum of delta*time. The integral of the level
over [a, b) is then level(a)*(b-a) + b*sum(delta) - sum(delta*t): exact and independent
of the order in which deltas arrived, so late ADT messages still give exact patient-days.
"""

from __future__ import annotations

from typing import Any

from engine.operators import paneindex
from engine.samples import GroupKey


class LevelSeries:
    """Panes by index, with their indices sorted: a window reads and folds only its own panes
    (an engine far behind, after a restart or a burst of old data, holds years of them)."""

    __slots__ = ("base", "base_index", "level", "order", "panes")

    def __init__(self, base: float = 0.0, base_index: int | None = None) -> None:
        self.base = base  # level at the start of pane base_index
        self.base_index = base_index
        self.panes: dict[int, list[float]] = {}  # idx -> [sum of deltas, sum of delta*t]
        self.order: list[int] = []  # the keys of panes, sorted
        self.level = base  # the level after every delta: the live value without a walk

    def add(self, idx: int, ts: float, delta: float) -> None:
        self.level += delta
        if self.base_index is not None and idx < self.base_index:
            self.base += delta  # before everything kept: part of the base level
            return
        pane = self.panes.get(idx)
        if pane is None:
            self.panes[idx] = [delta, delta * ts]
            paneindex.add(self.order, idx)
        else:
            pane[0] += delta
            pane[1] += delta * ts

    def level_at(self, idx: int) -> float:
        panes = self.panes
        return self.base + sum(panes[i][0] for i in paneindex.before(self.order, idx))

    def now(self) -> float:
        return self.level

    def integral(self, start: int, end: int, a: float, b: float) -> float:
        """Integral over [a, b): a is where pane `start` begins, b at most where pane `end` does
        (the live window stops at the watermark)."""
        total = self.level_at(start) * (b - a)
        panes = self.panes
        for i in paneindex.within(self.order, start, end):
            d, dt = panes[i]
            total += d * b - dt
        return total

    def active(self, start: int, end: int) -> bool:
        return paneindex.any_within(self.order, start, end)

    def fold(self, keep_from: int) -> None:
        order = self.order
        if order and order[0] < keep_from:  # (called for every window closed: mostly nothing to fold)
            for i in paneindex.take_before(order, keep_from):
                self.base += self.panes.pop(i)[0]
        if self.base_index is None or keep_from > self.base_index:
            self.base_index = keep_from

    def to_state(self) -> list[Any]:
        return [self.base, self.base_index, [[i, d, dt] for i, (d, dt) in self.panes.items()]]

    @classmethod
    def from_state(cls, state: list[Any]) -> LevelSeries:
        series = cls(state[0], state[1])
        series.panes = {i: [d, dt] for i, d, dt in state[2]}
        series.order = sorted(series.panes)
        series.level = series.base + sum(p[0] for p in series.panes.values())
        return series


class LevelTable:
    """One LevelSeries per unit, created on first delta; state for snapshots."""

    def __init__(self) -> None:
        self.series: dict[GroupKey, LevelSeries] = {}
        # every series is folded to this pane (None: not known). Deltas added to a series
        # directly are at or after the operator's closed window, never before its keep_from;
        # the other ways in (add, set_constant, restore) clear it
        self._folded: int | None = None

    def get(self, key: GroupKey) -> LevelSeries | None:
        return self.series.get(key)

    def add(self, key: GroupKey, idx: int | None, ts: float, delta: float, base_index: int | None) -> bool:
        """Apply a delta; idx None means its panes are gone (it joins the base). True if new unit."""
        self._folded = None
        series = self.series.get(key)
        created = series is None
        if series is None:
            series = self.series[key] = LevelSeries(0.0, base_index)
        if idx is None:
            series.base += delta
            series.level += delta
        else:
            series.add(idx, ts, delta)
        return created

    def set_constant(self, key: GroupKey, level: float) -> None:
        self._folded = None
        self.series[key] = LevelSeries(level, None)

    def indices(self) -> list[int]:
        return [i for s in self.series.values() for i in s.panes]

    def next_index(self, end: int) -> int | None:
        """The first pane at or after `end` with a change, in any unit."""
        found = [
            i for i in (paneindex.first_from(s.order, end) for s in self.series.values()) if i is not None
        ]
        return min(found, default=None)

    def fold(self, keep_from: int) -> None:
        """Called for every window closed and at the end of every slice of a tick: mostly
        to the same pane as the last time, with nothing to do."""
        if keep_from == self._folded:
            return
        for series in self.series.values():
            series.fold(keep_from)
        self._folded = keep_from

    def to_state(self) -> list[Any]:
        return [[list(k), s.to_state()] for k, s in self.series.items()]

    def restore(self, state: list[Any]) -> None:
        self._folded = None
        self.series = {tuple(k): LevelSeries.from_state(s) for k, s in state}  # type: ignore[misc]
