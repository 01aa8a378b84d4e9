"""Gauges: a level over time (census, nurses on shift), alone or per another level (beds).

A window's value is the ratio of two integrals (patient-days / bed-days = occupancy); the
live value is the ratio of the levels now.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import tzinfo
from typing import Any

from engine.aggregates import Acc
from engine.definitions.measures import LevelMeasure
from engine.operators.base import LevelHandler, Operator, Output
from engine.operators.levelseries import LevelTable
from engine.samples import GroupKey, Sample


class GaugeOperator(Operator):
    quiet_repeats = True  # a level that did not change gives the same window again
    measure: LevelMeasure

    def __init__(
        self,
        outputs: list[Output],
        unit_types: dict[GroupKey, str] | None = None,
        capacity: dict[GroupKey, float] | None = None,
        zone: tzinfo | None = None,
    ):
        super().__init__(outputs, unit_types, zone)
        self.num = LevelTable()
        self.den = LevelTable()
        self.staffed: set[GroupKey] = set()
        if self.measure.per == "beds":
            for key, beds in (capacity or {}).items():
                self.den.set_constant(key, beds)
                self.known.add(key)
                self.staffed.add(key)

    def level_subscriptions(self) -> dict[str, LevelHandler]:
        subs: dict[str, LevelHandler] = {self.measure.level: self.on_level}
        if self.measure.per == "beds":
            subs["beds"] = self.on_beds
        elif self.measure.per is not None:
            subs[self.measure.per] = self.on_per
        return subs

    def on_beds(self, key: GroupKey, ts: float, delta: float) -> None:
        """Beds closing and reopening move the staffed-bed count of configured units."""
        if key in self.staffed:
            self._level_delta(self.den, key, ts, delta)

    def on_level(self, key: GroupKey, ts: float, delta: float) -> None:
        self._level_delta(self.num, key, ts, delta)

    def on_per(self, key: GroupKey, ts: float, delta: float) -> None:
        self._level_delta(self.den, key, ts, delta)

    def _window_accs(
        self, start: int, end: int, until: float | None = None
    ) -> tuple[dict[GroupKey, Acc], bool]:
        a, b = self.clock.start(start), self.clock.start(end)
        out: dict[GroupKey, Acc] = {}
        active = False
        span = b - a  # a local day can be 23 or 25 hours
        for key in self.known:
            num = self.num.get(key)
            den = self.den.get(key)
            acc = Acc()
            acc.num = num.integral(start, end, a, b) if num else 0.0
            acc.den = span if self.measure.per is None else (den.integral(start, end, a, b) if den else 0.0)
            active = active or bool(num and num.active(start, end)) or bool(den and den.active(start, end))
            if acc.num == 0 and acc.den == 0:
                continue
            acc.n = 1 if acc.den > 0 else 0
            out[key] = acc
        return out, active

    def live(self, watermark: float) -> list[Sample]:
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

    def _n_of(self, acc: Acc) -> int:
        return 1 if acc.den > 0 else 0

    def _rolls_up(self, acc: Acc) -> bool:
        """A unit without a denominator (no beds configured) cannot join a ratio above it."""
        return self.measure.per is None or acc.den > 0

    def _data_indices(self) -> Iterable[int]:
        return self.num.indices() + self.den.indices()

    def _prune(self, keep_from: int) -> None:
        self.num.fold(keep_from)
        self.den.fold(keep_from)

    def _state(self) -> dict[str, Any]:
        return {"num": self.num.to_state(), "den": self.den.to_state()}

    def _restore(self, state: dict[str, Any]) -> None:
        self.num.restore(state["num"])
        self.den.restore(state["den"])
