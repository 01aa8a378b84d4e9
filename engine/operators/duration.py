"""Durations between paired events: lab turnaround, nurse call response, length of stay.

A start opens an interval under its key, the first matching end closes it; the duration
lands in the pane of the end time, in the place of the start (or end) event. Ends that
arrive before their start wait for it. An interval open past `timeout` is a breach in the
making: the live value counts it at its current age, until it closes or is given up after
`expire_after`, so an overdue STAT lab or an unanswered call raises the KPI instead of
vanishing from it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine.definitions import TIME_UNITS, DurationMeasure
from engine.events import EVENT_TYPES, EventBase
from engine.operators.base import Handler, Hint, Output, compile_where, hint_of
from engine.operators.values import ValueOperator
from engine.samples import GroupKey


class DurationOperator(ValueOperator):
    measure: DurationMeasure

    def __init__(self, outputs: list[Output], unit_types: dict[GroupKey, str] | None = None):
        super().__init__(outputs, unit_types)
        self.per = TIME_UNITS[self.measure.unit]
        self.key_field = self.measure.key
        self.start_ok = compile_where(self.measure.start.where)
        self.end_ok = compile_where(self.measure.end.where)
        self.end_contradicts = _contradiction(self.measure)
        cancel = self.measure.cancel
        self.cancel_ok = compile_where(cancel.where) if cancel is not None else None
        self.cancelled = 0
        self.by_start = self.measure.attribute_to == "start"
        # key -> (start ts, place), oldest first: starts arrive in about time order, so the
        # live value finds overdue intervals, and pruning expired ones, at the front.
        self.open: dict[str, tuple[float, GroupKey]] = {}
        self.early_ends: dict[str, tuple[float, GroupKey]] = {}
        # keys already paired, so a resent order or a corrected result does not open (or
        # close) a second interval; forgotten with the rest after expire_after
        self.closed_keys: dict[str, float] = {}
        self.negative = 0
        self.expired = 0

    def subscriptions(self) -> dict[str, Handler]:
        subs: dict[str, Handler] = {self.measure.start.event: self.on_start}
        if self.measure.end.event == self.measure.start.event:
            subs[self.measure.start.event] = self.on_either
        else:
            subs[self.measure.end.event] = self.on_end
        if self.measure.cancel is not None:
            subs[self.measure.cancel.event] = self.on_cancel
        return subs

    def on_cancel(self, event: EventBase) -> None:
        """Withdrawn before it ended: drop it, and ignore a late end (or a resent start)."""
        if self.cancel_ok is not None and not self.cancel_ok(event):
            return
        key = getattr(event, self.key_field)
        if key is None or key in self.closed_keys:
            return
        self.open.pop(key, None)
        self.early_ends.pop(key, None)
        self.closed_keys[key] = event.ts
        self.cancelled += 1

    def routing_hints(self) -> dict[str, Hint]:
        m = self.measure
        if m.start.event == m.end.event:
            return {}
        hints: dict[str, Hint] = {}
        start = hint_of(m.start.where)
        if start is not None:
            hints[m.start.event] = start
        end_fields = EVENT_TYPES[m.end.event].model_fields
        shared = {k: v for k, v in m.start.where.items() if k in end_fields and k not in m.end.where}
        end = hint_of(shared, also_none=True) or hint_of(m.end.where)
        if end is not None:
            hints[m.end.event] = end
        return hints

    def on_either(self, event: EventBase) -> None:
        if self.start_ok is None or self.start_ok(event):
            self.on_start(event)
        else:
            self.on_end(event)

    def on_start(self, event: EventBase) -> None:
        if self.start_ok is not None and not self.start_ok(event):
            return
        key = getattr(event, self.key_field)
        if key is None or key in self.closed_keys:
            return
        place = event.place
        self.known.add(place)
        ts = event.ts
        early = self.early_ends.pop(key, None) if self.early_ends else None
        if early is not None:
            self._close(key, ts, place, early[0], early[1])
            return
        current = self.open.get(key)
        if current is not None and ts >= current[0]:
            return  # a resent order: the first time stands
        self.open[key] = (ts, place)

    def on_end(self, event: EventBase) -> None:
        if self.end_ok is not None and not self.end_ok(event):
            return
        if self.end_contradicts is not None and self.end_contradicts(event):
            return  # e.g. a routine result cannot end a STAT interval: do not wait for its start
        key = getattr(event, self.key_field)
        if key is None or key in self.closed_keys:
            return
        started = self.open.pop(key, None)
        if started is None:
            self.early_ends.setdefault(key, (event.ts, event.place))
            return
        self._close(key, started[0], started[1], event.ts, event.place)

    def _close(self, key: str, start: float, start_place: GroupKey, end: float, end_place: GroupKey) -> None:
        self.closed_keys[key] = end
        span = end - start
        if span < 0:
            self.negative += 1
            return
        self.observe(start_place if self.by_start else end_place, end, span / self.per)

    def _live_extra(self, watermark: float, start: int) -> dict[GroupKey, tuple[list[float], int]]:
        """Open intervals past the timeout, at their age, until they close or expire."""
        timeout = self.measure.timeout
        if timeout is None:
            return {}
        out: dict[GroupKey, tuple[list[float], int]] = {}
        due = watermark - timeout
        oldest = watermark - self.measure.expire_after
        for begun, place in self.open.values():
            if begun > due + self.clock.grace:
                break  # the rest started later (arrival disorder is bounded by the grace)
            if oldest <= begun < due:
                values, count = out.get(place, ([], 0))
                values.append((watermark - begun) / self.per)
                out[place] = (values, count + 1)
        return out

    def _prune(self, keep_from: int) -> None:
        super()._prune(keep_from)
        horizon = keep_from * self.clock.pane - self.measure.expire_after
        for table in (self.open, self.early_ends):
            stale = []
            for key, entry in table.items():
                if entry[0] >= horizon:
                    break
                stale.append(key)
            for key in stale:
                del table[key]
            self.expired += len(stale)
        done = []
        for key, ts in self.closed_keys.items():
            if ts >= horizon:
                break
            done.append(key)
        for key in done:
            del self.closed_keys[key]

    def _state(self) -> dict[str, Any]:
        state = super()._state()
        state["open"] = [[k, ts, list(p)] for k, (ts, p) in self.open.items()]
        state["early_ends"] = [[k, ts, list(p)] for k, (ts, p) in self.early_ends.items()]
        state["closed_keys"] = list(self.closed_keys.items())
        state["negative"] = self.negative
        state["expired"] = self.expired
        return state

    def _restore(self, state: dict[str, Any]) -> None:
        super()._restore(state)
        self.open = {k: (ts, tuple(p)) for k, ts, p in state["open"]}  # type: ignore[misc]
        self.early_ends = {k: (ts, tuple(p)) for k, ts, p in state["early_ends"]}  # type: ignore[misc]
        self.closed_keys = dict(state["closed_keys"])
        self.negative = state["negative"]
        self.expired = state["expired"]


def _contradiction(measure: DurationMeasure) -> Callable[[EventBase], bool] | None:
    """A test for end events that say they cannot belong to a matching start: the start
    filter's fields that the end event also carries (lab.result says its priority too),
    unless the end has its own filter on that field (an ED registration, class emergency,
    ends with an admission, class inpatient)."""
    if measure.start.event == measure.end.event:
        return None
    end_fields = EVENT_TYPES[measure.end.event].model_fields
    checks = [
        (name, frozenset(v if isinstance(v, list) else [v]))
        for name, v in measure.start.where.items()
        if name in end_fields and name not in measure.end.where
    ]
    if not checks:
        return None

    def contradicts(event: EventBase) -> bool:
        for name, allowed in checks:
            value = getattr(event, name)
            if value is not None and value not in allowed:
                return True
        return False

    return contradicts
