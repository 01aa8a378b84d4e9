"""Gauges: a level over time (census, nurses on shift), alone or per another level (beds).

Each pane keeps the sum of deltas and the sum of delta*time. The integral of the level
over [a, b) is then level(a)*(b-a) + b*sum(delta) - sum(delta*t): exact and independent
of the order in which deltas arrived. A window's value is the ratio of two integrals
(patient-days / bed-days = occupancy); the live value is the ratio of the levels now.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from engine.aggregates import Acc, Finalizer
from engine.definitions import KpiDefinition, LevelMeasure
from engine.operators.base import LevelHandler, Operator
from engine.samples import GroupKey


class LevelSeries:
    __slots__ = ("base", "base_index", "panes")

    def __init__(self, base: float = 0.0, base_index: int | None = None) -> None:
        self.base = base  # level at the start of pane base_index
        self.base_index = base_index
        self.panes: dict[int, list[float]] = {}  # idx -> [sum of deltas, sum of delta*t]

    def add(self, idx: int, ts: float, delta: float) -> None:
        if self.base_index is not None and idx < self.base_index:
            self.base += delta  # before everything kept: part of the base level
            return
        pane = self.panes.get(idx)
        if pane is None:
            self.panes[idx] = [delta, delta * ts]
        else:
            pane[0] += delta
            pane[1] += delta * ts

    def level_at(self, idx: int) -> float:
        return self.base + sum(p[0] for i, p in self.panes.items() if i < idx)

    def now(self) -> float:
        return self.base + sum(p[0] for p in self.panes.values())

    def integral(self, start: int, end: int, pane: float, until: float | None = None) -> float:
        """Integral over [start*pane, until or end*pane)."""
        b = until if until is not None else end * pane
        total = self.level_at(start) * (b - start * pane)
        for i, (d, dt) in self.panes.items():
            if start <= i < end:
                total += d * b - dt
        return total

    def active(self, start: int, end: int) -> bool:
        return any(start <= i < end for i in self.panes)

    def fold(self, keep_from: int) -> None:
        for i in [i for i in self.panes if i < keep_from]:
            self.base += self.panes.pop(i)[0]
        if self.base_index is None or keep_from > self.base_index:
            self.base_index = keep_from

    def to_state(self) -> list[Any]:
        return [self.base, self.base_index, [[i, d, dt] for i, (d, dt) in self.panes.items()]]

    @classmethod
    def from_state(cls, state: list[Any]) -> LevelSeries:
        series = cls(state[0], state[1])
        series.panes = {i: [d, dt] for i, d, dt in state[2]}
        return series


class GaugeOperator(Operator):
    def __init__(self, kpi: KpiDefinition, finalizer: Finalizer, capacity: dict[GroupKey, float]):
        super().__init__(kpi, finalizer)
        measure = kpi.measure
        assert isinstance(measure, LevelMeasure)
        self.measure = measure
        self.num: dict[GroupKey, LevelSeries] = {}
        self.den: dict[GroupKey, LevelSeries] = {}
        self.capacity = capacity if measure.per == "beds" else {}
        for key, beds in self.capacity.items():
            self.den[key] = LevelSeries(beds, None)
            self.known.add(key)

    def level_subscriptions(self) -> dict[str, LevelHandler]:
        subs: dict[str, LevelHandler] = {self.measure.level: self.on_level}
        if self.measure.per not in (None, "beds"):
            subs[self.measure.per] = self.on_per
        return subs

    def _series(self, table: dict[GroupKey, LevelSeries], key: GroupKey) -> LevelSeries:
        series = table.get(key)
        if series is None:
            series = table[key] = LevelSeries(
                0.0,
                self.clock.keep_from(self.closed_upto) if self.closed_upto is not None else None,
            )
            self.known.add(key)
        return series

    def _delta(self, table: dict[GroupKey, LevelSeries], key: GroupKey, ts: float, delta: float) -> None:
        idx = self._pane_for(ts)
        series = self._series(table, key)
        if idx is None:
            series.base += delta
            return
        series.add(idx, ts, delta)

    def on_level(self, key: GroupKey, ts: float, delta: float) -> None:
        self._delta(self.num, key, ts, delta)

    def on_per(self, key: GroupKey, ts: float, delta: float) -> None:
        self._delta(self.den, key, ts, delta)

    def _window_accs(self, start: int, end: int) -> tuple[dict[GroupKey, Acc], bool]:
        return self._accs(start, end, None)

    def _accs(self, start: int, end: int, until: float | None) -> tuple[dict[GroupKey, Acc], bool]:
        pane = self.clock.pane
        out: dict[GroupKey, Acc] = {}
        active = False
        span = (until if until is not None else end * pane) - start * pane
        for key in self.known:
            num = self.num.get(key)
            den = self.den.get(key)
            acc = Acc()
            acc.num = num.integral(start, end, pane, until) if num else 0.0
            if self.measure.per is None:
                acc.den = span
            else:
                acc.den = den.integral(start, end, pane, until) if den else 0.0
            active = active or bool(num and num.active(start, end)) or bool(den and den.active(start, end))
            if acc.num == 0 and acc.den == 0:
                continue
            acc.n = 1 if acc.den > 0 else 0
            out[key] = acc
        return out, active

    def live(self, watermark: float) -> list:  # type: ignore[override]
        """Live gauges show the level now (not a time average over the open window)."""
        if not self.known:
            return []
        accs: dict[GroupKey, Acc] = {}
        for key in self.known:
            num = self.num.get(key)
            den = self.den.get(key)
            acc = Acc()
            acc.num = num.now() if num else 0.0
            acc.den = 1.0 if self.measure.per is None else (den.now() if den else 0.0)
            acc.n = 1 if acc.den > 0 else 0
            accs[key] = acc
        return self._samples(accs, watermark, watermark, False, watermark)

    def _rolls_up(self, acc: Acc) -> bool:
        """A unit without a denominator (no beds configured) cannot join a ratio above it."""
        return self.measure.per is None or acc.den > 0

    def _data_indices(self) -> Iterable[int]:
        for table in (self.num, self.den):
            for series in table.values():
                yield from series.panes

    def _prune(self, keep_from: int) -> None:
        for table in (self.num, self.den):
            for series in table.values():
                series.fold(keep_from)

    def _state(self) -> dict[str, Any]:
        return {
            "num": [[list(k), s.to_state()] for k, s in self.num.items()],
            "den": [[list(k), s.to_state()] for k, s in self.den.items()],
        }

    def _restore(self, state: dict[str, Any]) -> None:
        self.num = {tuple(k): LevelSeries.from_state(s) for k, s in state["num"]}  # type: ignore[misc]
        self.den = {tuple(k): LevelSeries.from_state(s) for k, s in state["den"]}  # type: ignore[misc]
