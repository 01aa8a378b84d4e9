"""Durations between paired events: lab turnaround, nurse call response, length of stay.

A start opens an interval under its key, the first matching end closes it; the duration
lands in the pane of the end time, in the place of the start (or end) event. Ends that
arrive before their start wait for it. An interval open past `timeout` is a breach in the
making: the live value counts it at its current age, until it closes or is given up after
`expire_after`, so an overdue STAT lab or an unanswered call raises the KPI instead of
vanishing from it.
"""

from __future__ import annotations

from typing import Any

from engine.definitions import TIME_UNITS, DurationMeasure
from engine.events import EventBase
from engine.operators.base import Handler, Output, compile_where, place_of
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
        self.by_start = self.measure.attribute_to == "start"
        # key -> (start ts, place); buckets group open keys by start pane so the live value
        # finds overdue intervals, and pruning finds expired ones, without a full scan.
        self.open: dict[str, tuple[float, GroupKey]] = {}
        self.buckets: dict[int, dict[str, None]] = {}
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
        return subs

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
        place = place_of(event)
        self.known.add(place)
        early = self.early_ends.pop(key, None)
        if early is not None:
            self._close(key, event.ts, place, early[0], early[1])
            return
        current = self.open.get(key)
        if current is None:
            self._open(key, event.ts, place)
        elif event.ts < current[0]:
            self._unbucket(key, current[0])
            self._open(key, event.ts, place)

    def _open(self, key: str, ts: float, place: GroupKey) -> None:
        self.open[key] = (ts, place)
        idx = self.clock.index(ts)
        bucket = self.buckets.get(idx)
        if bucket is None:
            bucket = self.buckets[idx] = {}
        bucket[key] = None

    def _unbucket(self, key: str, ts: float) -> None:
        idx = self.clock.index(ts)
        bucket = self.buckets.get(idx)
        if bucket is not None:
            bucket.pop(key, None)
            if not bucket:
                del self.buckets[idx]

    def on_end(self, event: EventBase) -> None:
        if self.end_ok is not None and not self.end_ok(event):
            return
        key = getattr(event, self.key_field)
        if key is None or key in self.closed_keys:
            return
        started = self.open.pop(key, None)
        if started is None:
            self.early_ends.setdefault(key, (event.ts, place_of(event)))
            return
        self._unbucket(key, started[0])
        self._close(key, started[0], started[1], event.ts, place_of(event))

    def _close(self, key: str, start: float, start_place: GroupKey, end: float, end_place: GroupKey) -> None:
        self.closed_keys[key] = end
        span = end - start
        if span < 0:
            self.negative += 1
            return
        place = start_place if self.by_start else end_place
        self.known.add(place)
        self.observe(place, end, span / self.per)

    def _live_extra(self, watermark: float, start: int) -> dict[GroupKey, tuple[list[float], int]]:
        """Open intervals past the timeout, at their age, until they close or expire."""
        timeout = self.measure.timeout
        if timeout is None:
            return {}
        out: dict[GroupKey, tuple[list[float], int]] = {}
        last = self.clock.index(watermark - timeout)
        oldest = watermark - self.measure.expire_after
        for idx, keys in self.buckets.items():
            if idx > last:
                continue
            for key in keys:
                begun, place = self.open[key]
                age = watermark - begun
                if age > timeout and begun >= oldest:
                    values, count = out.get(place, ([], 0))
                    values.append(age / self.per)
                    out[place] = (values, count + 1)
        return out

    def _prune(self, keep_from: int) -> None:
        super()._prune(keep_from)
        horizon = keep_from * self.clock.pane - self.measure.expire_after
        first = self.clock.index(horizon)
        for idx in [i for i in self.buckets if i < first]:
            for key in self.buckets.pop(idx):
                del self.open[key]
                self.expired += 1
        # Early ends arrive in roughly time order: the oldest sit at the front.
        stale = []
        for key, (ts, _) in self.early_ends.items():
            if ts >= horizon:
                break
            stale.append(key)
        for key in stale:
            del self.early_ends[key]
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
        self.open = {}
        self.buckets = {}
        for k, ts, p in state["open"]:
            self._open(k, ts, tuple(p))  # type: ignore[arg-type]
        self.early_ends = {k: (ts, tuple(p)) for k, ts, p in state["early_ends"]}  # type: ignore[misc]
        self.closed_keys = dict(state["closed_keys"])
        self.negative = state["negative"]
        self.expired = state["expired"]
