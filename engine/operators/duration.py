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

The period report (engine/reports.py) implements the same rules over the event log, and a
property test holds the two to each other.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable
from datetime import tzinfo
from typing import Any

from engine.aggregates import Acc
from engine.definitions.match import Match
from engine.definitions.measures import TIME_UNITS, DurationMeasure
from engine.events import EVENT_TYPES, EventBase
from engine.operators.base import Handler, Hint, Output, compile_where, hint_of
from engine.operators.values import ValueOperator
from engine.samples import GroupKey, Sample

Predicate = Callable[[EventBase], bool]
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
        # event type -> (where test, contradiction test) for each end that has that type
        self.end_tests: dict[str, list[tuple[Predicate | None, Predicate | None]]] = {}
        for end in m.ends:
            self.end_tests.setdefault(end.event, []).append(
                (compile_where(end.where), _contradiction(m.start, end))
            )
        # event type -> one test for "is this an end of a matching start" (None: every one is)
        self.end_check: dict[str, Predicate | None] = {
            etype: _any_end(tests) for etype, tests in self.end_tests.items()
        }
        cancel = m.cancel
        self.cancel_ok = compile_where(cancel.where) if cancel is not None else None
        self.by_start = m.attribute_to == "start"
        self.count_open = m.count_open
        if any(o.finalize.aggregate in ("min", "max") for o in outputs):
            self.keep_values = True  # a value taken back must leave the right min and max
        self.keys: dict[str, Interval] = {}
        self.overdue: dict[str, Interval] = {}  # count_open: open past the timeout, now or before
        # the same by start time, sorted: a closing window looks only at the intervals that can
        # be overdue in it (entries whose key has left `overdue`, or moved, are skipped)
        self.overdue_starts: list[tuple[float, str]] = []
        self._overdue_at: dict[str, float] = {}
        # started, not ended, cancelled or expired, about in start order (starts arrive in
        # about time order), so the live value finds overdue intervals, and expiry finds old
        # ones, at the front
        self.open: dict[str, Interval] = {}
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
        m = self.measure
        if m.start.event in self.end_tests:
            return {}
        hints: dict[str, Hint] = {}
        start = hint_of(m.start.where)
        if start is not None:
            hints[m.start.event] = start
        for etype in self.end_tests:
            ends = [e for e in m.ends if e.event == etype]
            if len(ends) != 1:
                continue  # several ends of one type: their handler checks them all
            (end_match,) = ends
            end_fields = EVENT_TYPES[etype].model_fields
            shared = {k: v for k, v in m.start.where.items() if k in end_fields and k not in end_match.where}
            end = hint_of(shared, also_none=True) or hint_of(end_match.where)
            if end is not None:
                hints[etype] = end
        return hints

    # -- events --------------------------------------------------------------------------
    def _interval(self, key: str) -> Interval:
        found = self.keys.get(key)
        if found is None:
            found = self.keys[key] = Interval()
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
        r = self.keys.get(key)
        if r is None:
            r = self.keys[key] = Interval()
        elif r.frozen:
            return
        ts = event.ts
        if r.start is not None and ts >= r.start:
            return  # a resent order: the first time stands
        r.start, r.start_place = ts, place
        if self.count_open:
            idx = self.clock.index(ts)
            if self.first_index is None or idx < self.first_index:
                self.first_index = idx  # closed windows may count it while open
        self._settle(key, r)

    def on_end(self, event: EventBase) -> None:
        check = self.end_check.get(event.type, _never)
        if check is not None and not check(event):
            return  # e.g. a routine result cannot end a STAT interval: do not wait for its start
        key = getattr(event, self.key_field)
        if key is None:
            return
        r = self.keys.get(key)
        if r is None:
            r = self.keys[key] = Interval()
        elif r.frozen:
            return
        ts = event.ts
        end = r.end
        if end is not None and ts >= end:
            return  # a later end (a corrected result, the call ending after its answer)
        r.end, r.end_place = ts, event.place
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
            if key not in self.open:
                self.open[key] = r
        else:
            self.open.pop(key, None)
        if self.count_open:
            self._note_overdue(key, r)
        if status == "waiting" and r.end is not None:
            self.early_ends[key] = (r.end, r.end_place)  # type: ignore[assignment]
        elif self.early_ends:
            self.early_ends.pop(key, None)

    def _note_overdue(self, key: str, r: Interval) -> None:
        """Keep the intervals that are (or were) open past the timeout: the only ones closed
        windows count while open (open_at), so closing a window need not walk every key."""
        start, timeout = r.start, self.measure.timeout
        if start is None or timeout is None:
            self.overdue.pop(key, None)
            return
        resolved = start + self.life
        if r.end is not None and r.end < resolved:
            resolved = r.end
        if r.cancel is not None and r.cancel < resolved:
            resolved = r.cancel
        if resolved > start + timeout:
            if key not in self.overdue or self._overdue_at.get(key) != start:
                bisect.insort(self.overdue_starts, (start, key))
                self._overdue_at[key] = start
            self.overdue[key] = r
        else:
            self.overdue.pop(key, None)

    # -- time ----------------------------------------------------------------------------
    def advance(self, watermark: float, deadline: float | None = None) -> list[Sample]:
        self._expire(watermark)
        return super().advance(watermark, deadline)

    def _expire(self, watermark: float) -> None:
        """Intervals still open at start + expire_after are given up (counted, with count_open)."""
        oldest = watermark - self.life
        due: list[str] = []
        for key, r in self.open.items():
            begun: float = r.start  # type: ignore[assignment]
            if begun > oldest + self.clock.grace:
                break  # the rest started later (arrival disorder is bounded by the grace)
            if begun <= oldest:
                due.append(key)
        for key in due:
            r = self.keys[key]
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
        for r in self.open.values():
            begun: float = r.start  # type: ignore[assignment]
            place: GroupKey = r.start_place  # type: ignore[assignment]
            if begun > due + self.clock.grace:
                break  # the rest started later (arrival disorder is bounded by the grace)
            if oldest < begun < due:
                values, count = out.get(place, ([], 0))
                values.append((watermark - begun) / self.per)
                out[place] = (values, count + 1)
        return out

    def open_at(self, at: float) -> dict[GroupKey, list[float]]:
        """Intervals open at `at` (event time) past the timeout, at their age then, by start
        place: started before at - timeout and after at - expire_after, with no end and no
        cancel before `at`. What has arrived since (an end at or after `at`) does not matter."""
        timeout = self.measure.timeout
        if timeout is None:
            return {}
        out: dict[GroupKey, list[float]] = {}
        due, oldest = at - timeout, at - self.life
        starts = self.overdue_starts
        lo = bisect.bisect_right(starts, (oldest, "\uffff"))
        hi = bisect.bisect_left(starts, (due, ""))
        found: list[Interval] = []
        if hi - lo <= len(self.overdue):  # by start time (an engine far behind holds years)
            seen: set[str] = set()
            for begun, key in starts[lo:hi]:
                r = self.overdue.get(key)
                if r is not None and r.start == begun and key not in seen:
                    seen.add(key)
                    found.append(r)
        else:  # the intervals overdue now are fewer than the starts in that range
            found = list(self.overdue.values())
        for r in found:
            begun = r.start  # type: ignore[assignment]
            if begun is None or not (oldest < begun < due):
                continue
            if r.end is not None and r.end < at and r.end <= begun + self.life:
                continue
            if r.cancel is not None and r.cancel < at:
                continue
            out.setdefault(r.start_place, []).append((at - begun) / self.per)  # type: ignore[arg-type]
        return out

    def _window_accs(
        self, start: int, end: int, until: float | None = None
    ) -> tuple[dict[GroupKey, Acc], bool]:
        accs, active = super()._window_accs(start, end, until)
        self._closing_overdue = {}
        if until is None and self.count_open:
            for place, values in self.open_at(self.clock.start(end)).items():
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
            clock, timeout = self.clock, float(self.measure.timeout)
            for r in self.overdue.values():
                if r.start is None:
                    continue
                overdue = r.start + timeout
                resolved = min(t for t in (r.end, r.cancel, r.start + self.life) if t is not None)
                if resolved > overdue:
                    yield clock.index(overdue)

    def _pure_panes(self) -> bool:
        return not self.count_open  # an open interval's age changes every window

    def _next_data(self, end: int) -> int | None:
        ahead = super()._next_data(end)
        timeout = self.measure.timeout
        if not self.count_open or timeout is None:
            return ahead
        # windows where an open interval is overdue are not quiet: do not skip them
        starts, clock = self.overdue_starts, self.clock
        i = bisect.bisect_left(starts, (clock.start(end) - float(timeout), ""))
        while i < len(starts):
            begun, key = starts[i]
            i += 1
            r = self.overdue.get(key)
            if r is None or r.start != begun:
                continue
            overdue = clock.index(begun + float(timeout))
            if ahead is None or overdue < ahead:
                return overdue
            break
        return ahead

    def _prune(self, keep_from: int) -> None:
        super()._prune(keep_from)
        horizon = self.clock.start(keep_from) - self.life
        gone = bisect.bisect_left(self.overdue_starts, (horizon, ""))
        if gone:
            for _, key in self.overdue_starts[:gone]:
                if key not in self.overdue:
                    self._overdue_at.pop(key, None)
            del self.overdue_starts[:gone]
        stale = []
        for key, r in self.keys.items():
            if r.since() >= horizon:
                break
            stale.append(key)
        for key in stale:
            del self.keys[key]
            self.overdue.pop(key, None)
            if self.open.pop(key, None) is not None:
                self.expired += 1
            self.early_ends.pop(key, None)

    # -- state ---------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        state = super()._state()
        state["intervals"] = [
            [
                k,
                r.start,
                _list(r.start_place),
                r.end,
                _list(r.end_place),
                r.cancel,
                r.expired,
                r.frozen,
                r.status,
                None if r.obs is None else [list(r.obs[0]), r.obs[1], r.obs[2]],
            ]
            for k, r in self.keys.items()
        ]
        state["open_order"] = list(self.open)
        state["cancelled"] = self.cancelled
        state["negative"] = self.negative
        state["expired"] = self.expired
        return state

    def _restore(self, state: dict[str, Any]) -> None:
        super()._restore(state)
        self.keys, self.open, self.early_ends, self.overdue = {}, {}, {}, {}
        self.overdue_starts, self._overdue_at = [], {}
        self.negative = state["negative"]
        self.expired = state["expired"]
        self.cancelled = state.get("cancelled", 0)
        if "intervals" not in state:  # a snapshot from before intervals were kept whole
            self._restore_pairs(state)
            return
        for k, start, sp, end, ep, cancel, expired, frozen, status, obs in state["intervals"]:
            r = self.keys[k] = Interval()
            r.start, r.start_place = start, _tuple(sp)
            r.end, r.end_place = end, _tuple(ep)
            r.cancel, r.expired, r.frozen, r.status = cancel, expired, frozen, status
            r.obs = None if obs is None else (tuple(obs[0]), obs[1], obs[2])  # type: ignore[assignment]
        for k in state["open_order"]:
            self.open[k] = self.keys[k]
        for k, r in self.keys.items():
            if r.start is None and r.end is not None and not r.frozen:
                self.early_ends[k] = (r.end, r.end_place)  # type: ignore[assignment]
            if self.count_open:
                self._note_overdue(k, r)

    def _restore_pairs(self, state: dict[str, Any]) -> None:
        for k, ts, p in state["open"]:
            r = self.keys[k] = Interval()
            r.start, r.start_place, r.status = ts, tuple(p), "open"  # type: ignore[assignment]
            self.open[k] = r
        for k, ts, p in state["early_ends"]:
            r = self.keys[k] = Interval()
            r.end, r.end_place = ts, tuple(p)  # type: ignore[assignment]
            self.early_ends[k] = (ts, r.end_place)  # type: ignore[assignment]
        for k, ts in state["closed_keys"]:
            r = self.keys[k] = Interval()
            # closed before: its value stays, and nothing reopens it
            r.end, r.frozen, r.status = ts, True, "ended"


def _never(event: EventBase) -> bool:
    return False


def _any_end(tests: list[tuple[Predicate | None, Predicate | None]]) -> Predicate | None:
    """One predicate for the ends of one event type: any of them matches and does not
    contradict the start (None: every event of the type does)."""
    if len(tests) == 1:
        ok, contra = tests[0]
        if ok is None and contra is None:
            return None
        if contra is None:
            return ok
        if ok is None:
            return lambda event: not contra(event)
        return lambda event: ok(event) and not contra(event)
    return lambda event: any(
        (ok is None or ok(event)) and (contra is None or not contra(event)) for ok, contra in tests
    )


def _list(place: GroupKey | None) -> list[Any] | None:
    return None if place is None else list(place)


def _tuple(place: list[Any] | None) -> GroupKey | None:
    return None if place is None else tuple(place)  # type: ignore[return-value]


def _contradiction(start: Match, end: Match) -> Predicate | None:
    """A test for end events that say they cannot belong to a matching start: the start
    filter's fields that the end event also carries (lab.result says its priority too),
    unless the end has its own filter on that field (an ED registration, class emergency,
    ends with an admission, class inpatient)."""
    if start.event == end.event:
        return None
    end_fields = EVENT_TYPES[end.event].model_fields
    checks = [
        (name, frozenset(v if isinstance(v, list) else [v]))
        for name, v in start.where.items()
        if name in end_fields and name not in end.where
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
