"""Ratios over a window: numerator and denominator each from events (a count or a sum of
a field) or from a level's time integral (patient-days, the mean headcount).

Complaints per 1,000 patient-days, cost per patient day, overtime % of worked hours,
CLABSI per 1,000 line-days, annual turnover: all are sum(numerator) / sum(denominator),
rolled up the same way (a hospital ratio is the sum over the sum, never a mean of units).
An event part can count each occurrence once (`distinct`) or leave out events paired with
another (`unless`); a `stay` part counts stays or visits from the encounters' facts, so a
cancel (A11) takes its count back; `minus` subtracts events from the numerator (margins) and `adjust` scales
the denominator by a ratio of two more sums (adjusted patient days).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from datetime import tzinfo
from typing import Any

from engine.aggregates import Acc
from engine.definitions.measures import EventPart, LevelPart, RatioMeasure, StayMeasure
from engine.events import EventBase
from engine.operators.base import Handler, LevelHandler, Output, compile_where, place_of
from engine.operators.levelseries import LevelTable
from engine.operators.stay import Observation, StayRule, StayTally
from engine.operators.values import ValueOperator
from engine.samples import GroupKey

LEVEL_UNITS = {"days": 86400.0, "hours": 3600.0}


class RatioOperator(ValueOperator):
    measure: RatioMeasure

    def __init__(
        self,
        outputs: list[Output],
        unit_types: dict[GroupKey, str] | None = None,
        zone: tzinfo | None = None,
    ):
        super().__init__(outputs, unit_types, zone)
        self.levels: dict[str, LevelTable] = {}
        self.parts: dict[str, EventPart] = {}
        self._handlers: dict[str, list[Handler]] = {}
        # distinct: side -> identity -> (place, ts, value) of the occurrence counted
        self.first_seen: dict[str, dict[str, tuple[GroupKey, float, float]]] = {}
        # unless: side -> (facility, key) -> occurrences counted that a pair may still take back,
        # and the pairing events seen (their times)
        self.pending: dict[str, dict[tuple[str, str], list[tuple[GroupKey, float, float]]]] = {}
        self.pairs: dict[str, dict[tuple[str, str], list[float]]] = {}
        # the instant the last sweep of identities and pairs kept from; stale: something it
        # would take away was added since (else the next sweep from there would change nothing)
        self._kept = -math.inf
        self._stale = False
        self.tallies: dict[str, StayTally] = {}  # side -> its stays (fed by the census's book)
        self._swept_at: int | None = None
        m = self.measure
        for side, part in (("num", m.numerator), ("den", m.denominator)):
            if isinstance(part, EventPart):
                self._add_part(side, part)
            elif isinstance(part, StayMeasure):
                self.tallies[side] = StayTally(StayRule(part, self.unit_types, zone), self._stay_diff(side))
            else:
                self.levels[side] = LevelTable()
        if m.minus is not None:
            self._add_part("minus", m.minus)
        if m.adjust is not None:
            self._add_part("adj_num", m.adjust.numerator)
            self._add_part("adj_den", m.adjust.denominator)

    # -- events ------------------------------------------------------------------------------
    def _add_part(self, side: str, part: EventPart) -> None:
        self.parts[side] = part
        self._handlers.setdefault(part.event, []).append(self._event_handler(side, part))
        if part.distinct is not None:
            self.first_seen[side] = {}
        if part.unless is not None:
            self.pending[side] = {}
            self.pairs[side] = {}
            self._handlers.setdefault(part.unless.event, []).append(self._pair_handler(side, part))

    def _contribute(self, side: str, key: GroupKey, ts: float, value: float, sign: float = 1.0) -> None:
        """Add (sign 1) or take back (sign -1) one event's value on its side of the ratio."""
        idx = self._pane_for(ts)
        if idx is None:
            return
        acc = self._acc(key, idx)
        v = value * sign
        if side == "num":
            acc.num += v
        elif side == "minus":
            acc.num -= v
        elif side == "den":
            acc.den += v
            acc.n += int(sign)
        elif side == "adj_num":
            acc.adj_num += v
        else:
            acc.adj_den += v
        if sign < 0 and acc.n == 0 and not (acc.num or acc.den or acc.adj_num or acc.adj_den):
            del self.panes[key][idx]  # nothing left of it: no sample for it either

    def stay_tallies(self) -> list[StayTally]:
        return list(self.tallies.values())

    def _stay_diff(self, side: str) -> Callable[[list[Observation], list[Observation]], None]:
        def diff(gone: list[Observation], came: list[Observation]) -> None:
            for ts, place, _ in gone:
                self._contribute(side, place, ts, 1.0, -1.0)
            for ts, place, _ in came:
                self._contribute(side, place, ts, 1.0)

        return diff

    def _event_handler(self, side: str, part: EventPart) -> Handler:
        accept = compile_where(part.where)
        field = part.field
        distinct = part.distinct
        unless = part.unless
        contribute = self._contribute

        def handle(event: EventBase) -> None:
            if accept is not None and not accept(event):
                return
            value = 1.0 if field is None else float(getattr(event, field) or 0.0)
            place, ts = place_of(event), event.ts
            if distinct is not None:
                identity = getattr(event, distinct)
                if identity is not None:
                    seen = self.first_seen[side]
                    first = seen.get(identity)
                    if first is not None:
                        if ts >= first[1]:
                            return  # the same occurrence again: it counted once already
                        contribute(side, first[0], first[1], first[2], -1.0)  # an earlier report of it
                    seen[identity] = (place, ts, value)
                    self._stale = self._stale or ts < self._kept
            elif unless is not None:
                paired = getattr(event, unless.key)
                if paired is not None:
                    pair = (event.facility, str(paired))
                    within = float(unless.within)
                    if any(abs(ts - t) <= within for t in self.pairs[side].get(pair, ())):
                        return  # e.g. a separation with a hire next to it: a transfer
                    self.pending[side].setdefault(pair, []).append((place, ts, value))
                    self._stale = self._stale or ts < self._kept
            contribute(side, place, ts, value)

        return handle

    def _pair_handler(self, side: str, part: EventPart) -> Handler:
        unless = part.unless
        assert unless is not None
        accept = compile_where(unless.where)
        within = float(unless.within)

        def handle(event: EventBase) -> None:
            if accept is not None and not accept(event):
                return
            paired = getattr(event, unless.key)
            if paired is None:
                return
            pair = (event.facility, str(paired))
            ts = event.ts
            self.pairs[side].setdefault(pair, []).append(ts)
            self._stale = self._stale or ts < self._kept - within
            counted = self.pending[side].get(pair)
            if not counted:
                return
            keep = []
            for place, t, value in counted:
                if abs(t - ts) <= within:
                    self._contribute(side, place, t, value, -1.0)  # counted before its pair came
                else:
                    keep.append((place, t, value))
            if keep:
                self.pending[side][pair] = keep
            else:
                del self.pending[side][pair]  # as the next sweep would: nothing left to take back

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
                subs[part.level] = self._level_feed(table, subs.get(part.level))
        return subs

    def _level_value(
        self, part: LevelPart, table: LevelTable, key: GroupKey, start: int, end: int, until: float | None
    ) -> float:
        series = table.get(key)
        if series is None:
            return 0.0
        a, b = self.clock.start(start), self.clock.start(end)
        stop = min(until, b) if until is not None else b
        if stop <= a:
            return 0.0
        integral = series.integral(start, end, a, stop)
        if part.as_ == "average":
            return integral / (stop - a)
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

    def _rolls_up(self, acc: Acc) -> bool:
        return self.measure.roll_up == "all" or acc.den > 0

    def _data_indices(self) -> Iterable[int]:
        yield from super()._data_indices()
        for table in self.levels.values():
            yield from table.indices()

    def _pure_panes(self) -> bool:
        return not self.levels  # a level's integral changes with the window

    def _next_data(self, end: int) -> int | None:
        found = [i for i in (t.next_index(end) for t in self.levels.values()) if i is not None]
        ahead = super()._next_data(end)
        return min([*found, ahead]) if ahead is not None else min(found, default=None)

    def _prune(self, keep_from: int) -> None:
        super()._prune(keep_from)
        for table in self.levels.values():
            table.fold(keep_from)
        if keep_from != self._swept_at:  # the book forgets old stays (census prune): so do we
            self._swept_at = keep_from
            for tally in self.tallies.values():
                tally.sweep()
        if self.clock.cumulative:
            return  # every pane is still counted: identities and pairs are kept for good
        kept = self.clock.start(keep_from)
        if kept == self._kept and not self._stale:
            return  # swept from here already, nothing older added since
        self._kept, self._stale = kept, False
        for seen in self.first_seen.values():
            for identity in [i for i, (_, ts, _) in seen.items() if ts < kept]:
                del seen[identity]
        for side, pending in self.pending.items():
            unless = self.parts[side].unless
            assert unless is not None
            horizon = kept - float(unless.within)
            for pair in list(pending):
                pending[pair] = [c for c in pending[pair] if c[1] >= kept]
                if not pending[pair]:
                    del pending[pair]
            pairs = self.pairs[side]
            for pair in list(pairs):
                pairs[pair] = [t for t in pairs[pair] if t >= horizon]
                if not pairs[pair]:
                    del pairs[pair]

    def _state(self) -> dict[str, Any]:
        state = super()._state()
        state["levels"] = {side: table.to_state() for side, table in self.levels.items()}
        state["stays"] = {side: tally.to_state() for side, tally in self.tallies.items()}
        state["first_seen"] = {
            side: {i: [list(p), ts, v] for i, (p, ts, v) in seen.items()}
            for side, seen in self.first_seen.items()
        }
        state["pending"] = {
            side: [
                [list(pair), [[list(p), ts, v] for p, ts, v in counted]] for pair, counted in pending.items()
            ]
            for side, pending in self.pending.items()
        }
        state["pairs"] = {
            side: [[list(pair), times] for pair, times in pairs.items()] for side, pairs in self.pairs.items()
        }
        return state

    def _restore(self, state: dict[str, Any]) -> None:
        super()._restore(state)
        self._kept, self._stale = -math.inf, False
        for side, table_state in state["levels"].items():
            self.levels[side].restore(table_state)
        for side, observed in state.get("stays", {}).items():
            self.tallies[side].restore(observed)
        for side, seen in state.get("first_seen", {}).items():
            self.first_seen[side] = {i: (tuple(p), ts, v) for i, (p, ts, v) in seen.items()}  # type: ignore[misc]
        for side, pending in state.get("pending", {}).items():
            self.pending[side] = {
                tuple(pair): [(tuple(p), ts, v) for p, ts, v in counted]  # type: ignore[misc]
                for pair, counted in pending
            }
        for side, pairs in state.get("pairs", {}).items():
            self.pairs[side] = {tuple(pair): list(times) for pair, times in pairs}  # type: ignore[misc]


def _fan_out(handlers: list[Handler]) -> Callable[[EventBase], None]:
    def handle(event: EventBase) -> None:
        for handler in handlers:
            handler(event)

    return handle
