"""Durations between paired events: lab turnaround, nurse call response, length of stay.

Every key (an order, a call, a stay) has one interval: from its earliest start to its
earliest end in *event time*, whatever order the events arrive in. `end` may name several
events ("whichever comes first": a nurse call ends at its acknowledgement, at staff
presence, or when it is ended at the bedside); an end that arrives later but happened
earlier replaces the one counted, as long as the key's state and the pane of the value it
replaces are kept (a late event beyond that is counted as late, like any other). The
duration lands in the pane of the end time, in the place of the start (or end) event.
Ends that arrive before their start wait for it.

An interval lives for `expire_after`: an end later than that does not close it, and an
interval still open then is given up. A `cancel` earlier than the end (or, with no end,
within the interval's life) withdraws it; a cancel after the end changes nothing.

An interval open past `timeout` is a breach in the making: the live value counts it at its
current age, until it closes or expires, so an overdue STAT lab or an unanswered call
raises the KPI instead of vanishing from it. With `count_open` the closed windows count it
too (at its age at the window's end), and an interval that never ends counts once, at its
`expire_after` age, in the pane where it expires: a window's "% within target" then
counts the orders never resulted as misses rather than leaving them out.

The period report (engine/report_events.py) implements the same rules over the event log,
and a property test holds the two to each other. One key's record is
engine/operators/intervals.py; which events end which starts, engine/operators/pairing.py;
the index of overdue intervals (count_open), engine/operators/overdue.py.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import tzinfo
from typing import Any

from engine.aggregates import Acc
from engine.definitions.measures import TIME_UNITS, DurationMeasure
from engine.events import EventBase
from engine.operators.base import Handler, Hint, Output, compile_where
from engine.operators.intervals import (
    Interval,
    Observation,
    Row,
    at_rest,
    interval_of_row,
    interval_row,
    restore_pairs,
    since,
    woken,
)
from engine.operators.overdue import OverdueIntervals
from engine.operators.pairing import Predicate, any_end, duration_hints, end_tests_of, never
from engine.operators.values import ValueOperator
from engine.samples import GroupKey, Sample


class DurationOperator(ValueOperator):
    measure: DurationMeasure

    def __init__(
        self,
        outputs: list[Output],
        unit_types: dict[GroupKey, str] | None = None,
        zone: tzinfo | None = None,
    ):
        super().__init__(outputs, unit_types, zone)
        m = self.measure
        self.per = TIME_UNITS[m.unit]
        self.key_field = m.key
        self.life = float(m.expire_after)
        self.start_ok = compile_where(m.start.where)
        # event type -> the membership tests of each end that has that type
        self.end_tests = end_tests_of(m)
        # event type -> one test for "is this an end of a matching start" (None: every one is)
        self.end_check: dict[str, Predicate | None] = {
            etype: any_end(tests) for etype, tests in self.end_tests.items()
        }
        cancel = m.cancel
        self.cancel_ok = compile_where(cancel.where) if cancel is not None else None
        self.by_start = m.attribute_to == "start"
        self.count_open = m.count_open
        if any(o.finalize.aggregate in ("min", "max") for o in outputs):
            self.keep_values = True  # a value taken back must leave the right min and max
        self.keys: dict[str, Interval | Row] = {}  # a Row unless the overdue index reads it
        self.pruned = 0  # keys deleted from the front of `keys` since it was last compacted
        self.prune_at = -math.inf  # the first key's since(): nothing is stale before it
        self.overdue = OverdueIntervals(m.timeout, self.life)  # count_open: open past the timeout
        # started, not ended, cancelled or expired, about in start order (starts arrive in
        # about time order), so the live value finds overdue intervals, and expiry finds old
        # ones, at the front
        self.open: dict[str, tuple[float, GroupKey]] = {}  # key -> (start, start place)
        self.early_ends: dict[str, tuple[float, GroupKey]] = {}  # ends waiting for a start
        self.cancelled = 0
        self.negative = 0
        self.expired = 0
        self._closing_overdue: dict[GroupKey, int] = {}

    # -- wiring --------------------------------------------------------------------------
    def subscriptions(self) -> dict[str, Handler]:
        m = self.measure
        subs: dict[str, Handler] = {}
        for etype in self.end_tests:
            subs[etype] = self.on_end
        subs[m.start.event] = self.on_either if m.start.event in self.end_tests else self.on_start
        if m.cancel is not None:
            subs[m.cancel.event] = self.on_cancel
        return subs

    def routing_hints(self) -> dict[str, Hint]:
        return duration_hints(self.measure, self.end_tests)

    # -- events --------------------------------------------------------------------------
    def _interval(self, key: str) -> Interval:
        found = self.keys.get(key)
        if found is None:
            found = self.keys[key] = Interval()
        elif isinstance(found, tuple):
            found = self.keys[key] = woken(found)
        return found

    def on_either(self, event: EventBase) -> None:
        if self.start_ok is None or self.start_ok(event):
            self.on_start(event)
        else:
            self.on_end(event)

    def on_start(self, event: EventBase) -> None:
        if self.start_ok is not None and not self.start_ok(event):
            return
        key = getattr(event, self.key_field)
        if key is None:
            return
        place = event.place
        self.known.add(place)
        ts = event.ts
        r = self.keys.get(key)
        fresh = r is None
        if r is None:
            if not self.count_open:
                # the common case, what _settle concludes for a key seen first at its start:
                # open, no value yet, at rest as a Row (nothing else reads it until its end)
                self.keys[key] = (ts, place, None, None, None, False, False, "open", None)
                self.open[key] = (ts, place)
                return
            r = self.keys[key] = Interval()
        elif isinstance(r, tuple):
            begun = r[0]
            if r[6] or (begun is not None and ts >= begun):
                return  # frozen, or a resent order: the first time stands
            r = self.keys[key] = woken(r)
        elif r.frozen:
            return
        elif r.start is not None and ts >= r.start:
            return  # a resent order: the first time stands
        r.start, r.start_place = ts, place
        if self.count_open:
            idx = self.clock.index(ts)
            if self.first_index is None or idx < self.first_index:
                self.first_index = idx  # closed windows may count it while open
        if fresh:
            # the common case, what _settle concludes for a key seen first at its start: open,
            # no value yet (nor in open or early_ends before)
            r.status = "open"
            self.open[key] = (ts, place)
            self.overdue.note(key, r)
            return
        self._settle(key, r)

    def on_end(self, event: EventBase) -> None:
        check = self.end_check.get(event.type, never)
        if check is not None and not check(event):
            return  # e.g. a routine result cannot end a STAT interval: do not wait for its start
        key = getattr(event, self.key_field)
        if key is None:
            return
        ts = event.ts
        place = event.place
        r = self.keys.get(key)
        if r is None:
            # what _settle concludes for a key seen first at its end: it waits for its start
            self.keys[key] = (None, None, ts, place, None, False, False, "waiting", None)
            self.early_ends[key] = (ts, place)
            return
        if isinstance(r, tuple):
            ended = r[2]
            if r[6] or (ended is not None and ts >= ended):
                return  # frozen, or a later end (a corrected result, the call ending after its answer)
            start = r[0]
            if (
                r[7] == "open"
                and ended is None
                and r[4] is None
                and r[8] is None
                and start is not None
                and start <= ts <= start + self.life
                and not self.count_open
            ):
                # the fast path below for an open interval at rest: no Interval is made
                obs = (r[1] if self.by_start else place, ts, (ts - start) / self.per)
                self.observe(*obs)  # type: ignore[arg-type]
                self.open.pop(key, None)
                if self.early_ends:
                    self.early_ends.pop(key, None)
                self.keys[key] = (start, r[1], ts, place, None, False, False, "ended", obs)  # type: ignore[assignment]
                return
            r = self.keys[key] = woken(r)
        if r.frozen:
            return
        end = r.end
        if end is not None and ts >= end:
            return  # a later end (a corrected result, the call ending after its answer)
        r.end, r.end_place = ts, place
        start = r.start
        if (
            r.status == "open"
            and end is None
            and r.cancel is None
            and r.obs is None
            and start is not None
            and start <= ts <= start + self.life
        ):
            # the common case, what _settle concludes for the first end of an open interval
            # within its life: ended, its duration observed
            obs = (r.start_place if self.by_start else place, ts, (ts - start) / self.per)
            self.observe(*obs)  # type: ignore[arg-type]
            r.obs = obs  # type: ignore[assignment]
            r.status = "ended"
            self.open.pop(key, None)
            if self.count_open:
                self.overdue.note(key, r)
            if self.early_ends:
                self.early_ends.pop(key, None)
            if not self.count_open or key not in self.overdue.by_key:
                self.keys[key] = (start, r.start_place, ts, place, None, False, False, "ended", obs)  # type: ignore[assignment]
            return
        self._settle(key, r)

    def on_cancel(self, event: EventBase) -> None:
        """Withdrawn before it ended: dropped (also when the cancel arrives after the end)."""
        if self.cancel_ok is not None and not self.cancel_ok(event):
            return
        key = getattr(event, self.key_field)
        if key is None:
            return
        r = self._interval(key)
        if r.frozen or (r.cancel is not None and event.ts >= r.cancel):
            return
        r.cancel = event.ts
        self._settle(key, r)

    # -- the one rule: what a key counts as, from its earliest start, end and cancel ----------
    def _outcome(self, r: Interval) -> tuple[str, Observation | None]:
        start = r.start
        if start is None:
            return "waiting", None
        last = start + self.life
        end = r.end if r.end is not None and r.end <= last else None
        if end is not None:
            if r.cancel is not None and r.cancel < end:
                return "cancelled", None
            if end < start:
                return "negative", None
            place = r.start_place if self.by_start else r.end_place
            return "ended", (place, end, (end - start) / self.per)  # type: ignore[return-value]
        if r.cancel is not None and r.cancel <= last:
            return "cancelled", None
        if r.expired:
            if self.count_open:
                return "expired", (r.start_place, last, self.life / self.per)  # type: ignore[return-value]
            return "expired", None
        return "open", None

    def _settle(self, key: str, r: Interval) -> None:
        kept = r.since()
        if kept < self.prune_at:  # an earlier start, end or cancel: _prune looks again
            self.prune_at = kept
        status, obs = self._outcome(r)
        # (when the old value's pane is gone, that value stays: the change came too late)
        if obs != r.obs and (r.obs is None or self.unobserve(*r.obs)):
            if obs is not None:
                self.observe(*obs)
            r.obs = obs
        if status != r.status:
            if status == "cancelled":
                self.cancelled += 1
            elif status == "negative":
                self.negative += 1
            r.status = status
        if status == "open":
            self.open[key] = (r.start, r.start_place)  # type: ignore[assignment]  # (in place: same order)
        else:
            self.open.pop(key, None)
        if self.count_open:
            self.overdue.note(key, r)
        if status == "waiting" and r.end is not None:
            self.early_ends[key] = (r.end, r.end_place)  # type: ignore[assignment]
        elif self.early_ends:
            self.early_ends.pop(key, None)
        self._rest(key, r)

    def _rest(self, key: str, r: Interval) -> None:
        """Keep an interval at rest as a Row, unless the overdue index reads it."""
        if key not in self.overdue.by_key:
            self.keys[key] = at_rest(r)

    # -- time ----------------------------------------------------------------------------
    def advance(self, watermark: float, deadline: float | None = None) -> list[Sample]:
        self._expire(watermark)
        return super().advance(watermark, deadline)

    def _expire(self, watermark: float) -> None:
        """Intervals still open at start + expire_after are given up (counted, with count_open)."""
        oldest = watermark - self.life
        due: list[str] = []
        for key, (begun, _) in self.open.items():
            if begun > oldest + self.clock.grace:
                break  # the rest started later (arrival disorder is bounded by the grace)
            if begun <= oldest:
                due.append(key)
        for key in due:
            r = self._interval(key)
            r.expired = True
            self.expired += 1
            self._settle(key, r)

    def _live_extra(self, watermark: float, start: int) -> dict[GroupKey, tuple[list[float], int]]:
        """Open intervals past the timeout, at their age, until they close or expire."""
        timeout = self.measure.timeout
        if timeout is None:
            return {}
        out: dict[GroupKey, tuple[list[float], int]] = {}
        due = watermark - timeout
        oldest = watermark - self.life
        for begun, place in self.open.values():
            if begun > due + self.clock.grace:
                break  # the rest started later (arrival disorder is bounded by the grace)
            if oldest < begun < due:
                values, count = out.get(place, ([], 0))
                values.append((watermark - begun) / self.per)
                out[place] = (values, count + 1)
        return out

    def _window_accs(
        self, start: int, end: int, until: float | None = None
    ) -> tuple[dict[GroupKey, Acc], bool]:
        accs, active = super()._window_accs(start, end, until)
        self._closing_overdue = {}
        if until is None and self.count_open:
            for place, values in self.overdue.open_at(self.clock.start(end), self.per).items():
                acc = accs.get(place)
                if acc is None:
                    acc = accs[place] = Acc(self.keep_values)
                for value in values:
                    acc.add(value)
                self._closing_overdue[place] = len(values)
        return accs, active

    def _samples(
        self,
        accs: dict[GroupKey, Acc],
        start: float,
        end: float,
        final: bool,
        as_of: float,
        overdue: dict[GroupKey, int] | None = None,
    ) -> list[Sample]:
        if final and overdue is None and self._closing_overdue:
            overdue = self._closing_overdue
        return super()._samples(accs, start, end, final, as_of, overdue)

    def _data_indices(self) -> Iterable[int]:
        yield from super()._data_indices()
        if self.count_open and self.measure.timeout is not None:
            # windows where an open interval is overdue are not quiet: do not skip them
            yield from self.overdue.due_indices(self.clock)

    def _pure_panes(self) -> bool:
        return not self.count_open  # an open interval's age changes every window

    def _next_data(self, end: int) -> int | None:
        ahead = super()._next_data(end)
        timeout = self.measure.timeout
        if not self.count_open or timeout is None:
            return ahead
        # windows where an open interval is overdue are not quiet: do not skip them
        return self.overdue.next_due(self.clock, end, ahead)

    def _prune(self, keep_from: int) -> None:
        super()._prune(keep_from)
        horizon = self.clock.start(keep_from) - self.life
        self.overdue.prune(horizon)
        if horizon <= self.prune_at:
            return  # called for every window closed: most find the oldest key still kept
        stale = []
        for key, r in self.keys.items():
            kept = since(r)
            if kept >= horizon:
                self.prune_at = kept  # (_settle lowers it when a key's since() moves earlier)
                break
            stale.append(key)
        else:
            self.prune_at = -math.inf
        for key in stale:
            del self.keys[key]
            self.overdue.by_key.pop(key, None)
            if self.open.pop(key, None) is not None:
                self.expired += 1
            self.early_ends.pop(key, None)
        self.pruned += len(stale)
        if self.pruned > len(self.keys):
            # a dict keeps deleted entries in its table until it grows, and iteration walks
            # them: the loop above, run for every window closed, would walk every key pruned
            # since (a backfill closing years of windows spent most of its time there)
            self.keys = dict(self.keys)
            self.pruned = 0

    # -- state ---------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        state = super()._state()
        state["intervals"] = [interval_row(k, r) for k, r in self.keys.items()]
        state["open_order"] = list(self.open)
        state["cancelled"] = self.cancelled
        state["negative"] = self.negative
        state["expired"] = self.expired
        return state

    def _restore(self, state: dict[str, Any]) -> None:
        super()._restore(state)
        self.open, self.early_ends = {}, {}
        self.pruned, self.prune_at = 0, -math.inf
        self.overdue = OverdueIntervals(self.measure.timeout, self.life)
        self.negative = state["negative"]
        self.expired = state["expired"]
        self.cancelled = state.get("cancelled", 0)
        keys: dict[str, Interval] = {}
        if "intervals" not in state:  # a snapshot from before intervals were kept whole
            restore_pairs(state, keys, self.open, self.early_ends)
            self.keys = dict(keys)
            return
        keys = dict(interval_of_row(row) for row in state["intervals"])
        for k in state["open_order"]:
            self.open[k] = (keys[k].start, keys[k].start_place)  # type: ignore[assignment]
        for k, r in keys.items():
            if r.start is None and r.end is not None and not r.frozen:
                self.early_ends[k] = (r.end, r.end_place)  # type: ignore[assignment]
            if self.count_open:
                self.overdue.note(k, r)
        self.keys = dict(keys)
        for k, r in keys.items():
            self._rest(k, r)
