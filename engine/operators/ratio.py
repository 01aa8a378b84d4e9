"""Ratios over a window: numerator and denominator each from events (a count or a sum of
a field) or from a level's time integral (patient-days, the mean headcount).

Complaints per 1,000 patient-days, cost per patient day, overtime % of worked hours,
CLABSI per 1,000 line-days, annual turnover: all are sum(numerator) / sum(denominator),
rolled up the same way (a hospital ratio is the sum over the sum, never a mean of units).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from engine.aggregates import Acc
from engine.definitions import EventPart, LevelPart, RatioMeasure
from engine.events import EventBase
from engine.operators.base import Handler, LevelHandler, Output, compile_where, place_of
from engine.operators.levelseries import LevelTable
from engine.operators.values import ValueOperator
from engine.samples import GroupKey

LEVEL_UNITS = {"days": 86400.0, "hours": 3600.0}


class RatioOperator(ValueOperator):
    measure: RatioMeasure

    def __init__(self, outputs: list[Output], unit_types: dict[GroupKey, str] | None = None):
        super().__init__(outputs, unit_types)
        self.levels: dict[str, LevelTable] = {}
        self._handlers: dict[str, list[Handler]] = {}
        for side, part in (("num", self.measure.numerator), ("den", self.measure.denominator)):
            if isinstance(part, EventPart):
                self._handlers.setdefault(part.event, []).append(self._event_handler(side, part))
            else:
                self.levels[side] = LevelTable()

    def _event_handler(self, side: str, part: EventPart) -> Handler:
        accept = compile_where(part.where)
        field = part.field
        is_num = side == "num"

        def handle(event: EventBase) -> None:
            if accept is not None and not accept(event):
                return
            value = 1.0 if field is None else float(getattr(event, field) or 0.0)
            if is_num:
                self.observe_ratio(place_of(event), event.ts, value, 0.0, 0)
            else:
                self.observe_ratio(place_of(event), event.ts, 0.0, value, 1)

        return handle

    def subscriptions(self) -> dict[str, Handler]:
        out: dict[str, Handler] = {}
        for etype, handlers in self._handlers.items():
            if len(handlers) == 1:
                out[etype] = handlers[0]
            else:
                out[etype] = _fan_out(handlers)
        return out

    def level_subscriptions(self) -> dict[str, LevelHandler]:
        subs: dict[str, LevelHandler] = {}
        for side, part in (("num", self.measure.numerator), ("den", self.measure.denominator)):
            if isinstance(part, LevelPart):
                table = self.levels[side]
                subs[part.level] = self._level_handler(table, subs.get(part.level))
        return subs

    def _level_handler(self, table: LevelTable, other: LevelHandler | None) -> LevelHandler:
        def handle(key: GroupKey, ts: float, delta: float) -> None:
            self._level_delta(table, key, ts, delta)
            if other is not None:
                other(key, ts, delta)

        return handle

    def _level_value(
        self, part: LevelPart, table: LevelTable, key: GroupKey, start: int, end: int, until: float | None
    ) -> float:
        series = table.get(key)
        if series is None:
            return 0.0
        pane = self.clock.pane
        stop = min(until, end * pane) if until is not None else end * pane
        if stop <= start * pane:
            return 0.0
        integral = series.integral(start, end, pane, stop)
        if part.as_ == "average":
            return integral / (stop - start * pane)
        return integral / LEVEL_UNITS[part.as_]

    def _window_accs(
        self, start: int, end: int, until: float | None = None
    ) -> tuple[dict[GroupKey, Acc], bool]:
        accs, active = super()._window_accs(start, end, until)
        for side, part in (("num", self.measure.numerator), ("den", self.measure.denominator)):
            if not isinstance(part, LevelPart):
                continue
            table = self.levels[side]
            for key in table.series:
                value = self._level_value(part, table, key, start, end, until)
                if value == 0:
                    continue
                acc = accs.get(key)
                if acc is None:
                    acc = accs[key] = Acc(self.keep_values)
                if side == "num":
                    acc.num += value
                else:
                    acc.den += value
                series = table.get(key)
                active = active or bool(series and series.active(start, end))
        return accs, active

    def _n_of(self, acc: Acc) -> int:
        """The sample size of a ratio is its denominator: patient-days, line-days, surveys."""
        return int(acc.den)

    def _data_indices(self) -> Iterable[int]:
        yield from super()._data_indices()
        for table in self.levels.values():
            yield from table.indices()

    def _prune(self, keep_from: int) -> None:
        super()._prune(keep_from)
        for table in self.levels.values():
            table.fold(keep_from)

    def _state(self) -> dict[str, Any]:
        state = super()._state()
        state["levels"] = {side: table.to_state() for side, table in self.levels.items()}
        return state

    def _restore(self, state: dict[str, Any]) -> None:
        super()._restore(state)
        for side, table_state in state["levels"].items():
            self.levels[side].restore(table_state)


def _fan_out(handlers: list[Handler]) -> Callable[[EventBase], None]:
    def handle(event: EventBase) -> None:
        for handler in handlers:
            handler(event)

    return handle
