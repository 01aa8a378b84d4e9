"""What every KPI operator shares: windows closing on the watermark, roll-ups, samples.

An operator is a plain deterministic object. `update(event)` folds one event into per-pane
partial aggregates; `advance(watermark)` returns the samples of every window the watermark
has closed (final); `live(watermark)` returns the open window's provisional values.
`snapshot()`/`restore()` make the state durable for both runtimes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import tzinfo
from time import perf_counter
from typing import Any

from engine.aggregates import Acc, Finalizer
from engine.definitions.kpi import KpiDefinition
from engine.events import EventBase
from engine.operators.levelseries import LevelTable
from engine.operators.runs import Runs
from engine.samples import GroupKey, Sample, Window, computed, group_of, rollups, ts_to_dt
from engine.windows import PaneClock

Handler = Callable[[EventBase], None]
Hint = tuple[str, frozenset[Any]]
LevelHandler = Callable[[GroupKey, float, float], None]

MAX_QUIET_WINDOWS = 1000
"""Past this many windows without any data, closing jumps ahead instead of walking."""


def place_of(event: EventBase) -> GroupKey:
    return event.place


@dataclass(frozen=True)
class Output:
    """One KPI an operator reports: its definition and how its value is folded."""

    kpi: KpiDefinition
    finalize: Finalizer


class Operator:
    """Base for all operators; subclasses provide per-window partial aggregates.

    quiet_repeats: a window without data after another one gives the same result (levels:
    a census or a staffing level that did not change). Closing then jumps over the quiet
    panes in one step, extending the runs, instead of computing every window again.

    KPIs that share a measure and a window (STAT turnaround p90, median and % within
    target) share one operator: the events are paired and stored once, and each KPI folds
    the same partial aggregates its own way.
    """

    quiet_repeats = False

    def __init__(
        self,
        outputs: list[Output],
        unit_types: dict[GroupKey, str] | None = None,
        zone: tzinfo | None = None,
    ):
        if not outputs:
            raise ValueError("an operator needs at least one KPI")
        self.outputs = outputs
        first = outputs[0].kpi
        self.kpi_ids = [o.kpi.id for o in outputs]
        self.measure: Any = first.measure
        self.window = first.window
        self.zone = zone  # the site's time zone: where days and months begin (None: UTC)
        self.clock = PaneClock.of(first.window, zone)
        self.keep_values = any(o.finalize.needs_values for o in outputs)
        self.unit_types = unit_types or {}
        self.closed_upto: int | None = None
        self.first_index: int | None = None
        self.known: set[GroupKey] = set()
        self.sources: set[str] = set()
        self.late_events = 0
        self.dropped_events = 0
        self.runs = Runs()
        self._closing: int | None = None
        self.behind = False  # the last advance() stopped at its deadline

    # -- wiring --------------------------------------------------------------------------
    def subscriptions(self) -> dict[str, Handler]:
        """Event type -> handler."""
        return {}

    def level_subscriptions(self) -> dict[str, LevelHandler]:
        """Level name (e.g. 'patients') -> handler(group, ts, delta)."""
        return {}

    def routing_hints(self) -> dict[str, Hint]:
        """Event type -> (field, values) the handler can accept at all: the engine calls it
        only for events whose field has one of those values. The handler still checks."""
        return {}

    # -- what subclasses implement -------------------------------------------------------
    def _window_accs(
        self, start: int, end: int, until: float | None = None
    ) -> tuple[dict[GroupKey, Acc], bool]:
        """Partial aggregates per unit for panes [start, end), and whether any data fell there.
        until: the live window stops at the watermark, inside its last pane."""
        raise NotImplementedError

    def _data_indices(self) -> Iterable[int]:
        """Pane indices that hold data (for skipping empty windows)."""
        raise NotImplementedError

    def _prune(self, keep_from: int) -> None:
        raise NotImplementedError

    def _pure_panes(self) -> bool:
        """Whether a window's result is its panes' data and nothing else (no levels, no ages
        of open intervals): then _pane_moved() says when a sliding window changes."""
        return False

    def _pane_moved(self, entered: int, left: int) -> bool:
        """Whether pane `entered` (the newest of the window) or `left` (the one that just left
        it, pruned with the window before) holds data."""
        return True

    def _next_data(self, end: int) -> int | None:
        """The first pane at or after `end` that holds data (None: none)."""
        return min((i for i in self._data_indices() if i >= end), default=None)

    def _has_data(self, start: int, end: int) -> bool:
        """Whether any pane in [start, end) holds data."""
        return any(start <= i < end for i in self._data_indices())

    def _live_extra(self, watermark: float, start: int) -> dict[GroupKey, tuple[list[float], int]]:
        """Values that only the live window sees (overdue open intervals)."""
        return {}

    def _state(self) -> dict[str, Any]:
        raise NotImplementedError

    def _restore(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    # -- pane bookkeeping ----------------------------------------------------------------
    def _pane_for(self, ts: float) -> int | None:
        """Pane index for an event at ts, or None if its windows are gone from state."""
        clock = self.clock
        pane = clock.pane
        idx = int(ts // pane) if pane else clock.index(ts)
        first = self.first_index
        if first is None or idx < first:
            self.first_index = idx
        closed = self.closed_upto
        if closed is not None and idx < closed:
            self.late_events += 1
            if idx < self.clock.keep_from(closed) and not self.clock.cumulative:
                self.dropped_events += 1
                return None
        return idx

    def _level_delta(self, table: LevelTable, key: GroupKey, ts: float, delta: float) -> None:
        series = table.series.get(key)
        pane = self.clock.pane
        idx = int(ts // pane) if pane else self.clock.index(ts)
        closed = self.closed_upto
        if (
            series is not None
            and self.first_index is not None
            and idx >= self.first_index
            and (closed is None or idx >= closed)
        ):
            series.add(idx, ts, delta)  # the common case, without the checks below
            return
        checked = self._pane_for(ts)
        base_index = self.clock.keep_from(closed) if closed is not None else None
        if table.add(key, checked, ts, delta, base_index):
            self.known.add(key)

    def _level_feed(self, table: LevelTable, then: LevelHandler | None = None) -> LevelHandler:
        """A level handler into `table`: _level_delta with its common case inlined (a census
        change reaches every operator over patient-days, one call each), then `then`."""
        pane, index, level_delta = self.clock.pane, self.clock.index, self._level_delta

        def handle(key: GroupKey, ts: float, delta: float) -> None:
            series = table.series.get(key)
            idx = int(ts // pane) if pane else index(ts)
            first, closed = self.first_index, self.closed_upto
            if series and first is not None and idx >= first and (closed is None or idx >= closed):
                series.add(idx, ts, delta)
            else:
                level_delta(table, key, ts, delta)
            if then is not None:
                then(key, ts, delta)

        return handle

    # -- closing windows -----------------------------------------------------------------
    def advance(self, watermark: float, deadline: float | None = None) -> list[Sample]:
        """deadline (time.perf_counter()): stop closing there, with `behind` set; the next
        call goes on where this one stopped (a runtime keeps its event loop responsive)."""
        self.behind = False
        clock = self.clock
        if self.first_index is None:
            return []
        if self.closed_upto is None:
            # Nothing is closed yet: windows before the first data, or past the grace, are.
            last_closable = clock.index(watermark - clock.grace)
            self.closed_upto = min(self.first_index, last_closable)
        end = self.closed_upto + 1
        quiet = 0
        repeats = self.quiet_repeats and clock.pane > 0  # fixed panes: every window as long
        after_quiet: int | None = None  # the last closed window had no data (and some result)
        # sliding windows of fixed panes: where no pane with data enters or leaves, the window
        # is the one before (the same panes hold the data): its runs grow, nothing is computed
        slides = clock.pane > 0 and clock.k > 1 and not clock.cumulative and self._pure_panes()
        had_result: int | None = None  # the last window closed had a result (some place)
        while clock.closable(end, watermark):
            if deadline is not None and perf_counter() > deadline:
                self.behind = True
                break
            if slides and had_result == end - 1 and not self._pane_moved(end - 1, end - 1 - clock.k):
                self.runs.hold(end - 1, end, ts_to_dt(clock.start(end)))
                self.closed_upto = had_result = end
                end += 1
                quiet = 0
                self._prune(clock.keep_from(self.closed_upto))
                continue
            start = clock.start_of(end, self.first_index)
            if repeats and after_quiet == end - 1 and not self._has_data(start, end):
                # the same level as the window before: hold it to the next data, in one step
                ahead = self._next_data(end)
                last = int((watermark - clock.grace) // clock.pane)
                target = last if ahead is None else min(ahead, last)
                self.runs.hold(end - 1, target, ts_to_dt(clock.start(target)))
                self.closed_upto = after_quiet = target
                end = target + 1
                self._prune(clock.keep_from(self.closed_upto))
                continue
            accs, active = self._window_accs(start, end)
            after_quiet = end if accs and not active else None
            had_result = end if accs else None
            self.closed_upto = end
            if accs:
                self._closing = end  # _samples hands the windows to the runs itself
                closed = self._samples(accs, clock.start(start), clock.start(end), True, watermark)
                self._closing = None
                self.runs.close(closed, end)
            if active:
                quiet = 0
                end += 1
            else:
                quiet += 1
                if accs and quiet < MAX_QUIET_WINDOWS:
                    end += 1  # a level persists through quiet windows: keep reporting it
                else:
                    ahead = self._next_data(end)
                    if ahead is None:
                        last = clock.index(watermark - clock.grace)
                        self.closed_upto = max(self.closed_upto, last)
                        break
                    end = max(end + 1, ahead + 1)
                    quiet = 0
            self._prune(clock.keep_from(self.closed_upto))
        self._prune(clock.keep_from(self.closed_upto))
        return self.runs.flush()

    def live(self, watermark: float) -> list[Sample]:
        clock = self.clock
        if self.first_index is None and not self.known:
            return []
        end = clock.live_end(watermark)
        first = self.first_index if self.first_index is not None else end - 1
        start = clock.start_of(end, first)
        accs, _ = self._window_accs(start, end, watermark)
        extra = self._live_extra(watermark, start)
        overdue: dict[GroupKey, int] = {}
        for key, (values, count) in extra.items():
            acc = accs.setdefault(key, Acc(self.keep_values))
            for v in values:
                acc.add(v)
            overdue[key] = count
        for key in self.known:
            accs.setdefault(key, Acc(self.keep_values))
        return self._samples(accs, clock.start(start), watermark, False, watermark, overdue)

    def _samples(
        self,
        accs: dict[GroupKey, Acc],
        start: float,
        end: float,
        final: bool,
        as_of: float,
        overdue: dict[GroupKey, int] | None = None,
    ) -> list[Sample]:
        keep = self.keep_values
        totals: dict[GroupKey, Acc] = {}
        late: dict[GroupKey, int] = {}
        for key, acc in accs.items():
            if acc.values:
                acc.sorted_values()  # roll-ups then merge one sorted run per unit, not one per pane
            for up in rollups(key):
                if up != key and not self._rolls_up(acc):
                    if not final and up not in totals:
                        # live: the level above shows no data rather than keeping its last
                        # value on the board (its units may all have lost their denominator)
                        totals[up] = Acc(keep)
                    continue
                total = totals.get(up)
                if total is None:
                    total = totals[up] = Acc(keep)
                total.merge(acc)
                if overdue and key in overdue:
                    late[up] = late.get(up, 0) + overdue[key]
        window = Window(start=ts_to_dt(start), end=ts_to_dt(end))
        stamp = ts_to_dt(as_of)
        span = end - start
        closing = self._closing if final else None
        runs = self.runs
        out = []
        for key in sorted(totals, key=lambda k: (k[0], k[1] or "", k[2] or "")):
            acc = totals[key]
            n = self._n_of(acc)
            group = group_of(key)
            unit_type = self.unit_types.get(key)
            for output in self.outputs:
                kpi = output.kpi
                value, num, den = output.finalize(acc, span)
                status = kpi.status_of(value, n, unit_type)
                if closing is not None:
                    result = (value, num, den, n, status)
                    if runs.extend((kpi.id, key), result, closing, window.end):
                        continue  # the same as the window before: its run grows, no new sample
                sample = computed(
                    kpi.id, group, window, value, num, den, n, status, stamp, final, late.get(key, 0)
                )
                if closing is not None:
                    runs.begin(sample, result, closing)
                else:
                    out.append(sample)
        return out

    def _n_of(self, acc: Acc) -> int:
        return acc.n

    def _rolls_up(self, acc: Acc) -> bool:
        return True

    # -- state ---------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        return {
            "kpis": self.kpi_ids,
            "closed_upto": self.closed_upto,
            "first_index": self.first_index,
            "known": [list(k) for k in self.known],
            "sources": sorted(self.sources),
            "late_events": self.late_events,
            "dropped_events": self.dropped_events,
            "runs": self.runs.snapshot(),
            "state": self._state(),
        }

    def restore(self, snap: dict[str, Any]) -> None:
        self.closed_upto = snap["closed_upto"]
        self.first_index = snap["first_index"]
        self.known = {tuple(k) for k in snap["known"]}  # type: ignore[misc]
        self.sources = set(snap["sources"])
        self.late_events = snap["late_events"]
        self.dropped_events = snap["dropped_events"]
        self.runs.restore(snap.get("runs", []))
        self._restore(snap["state"])


def hint_of(where: dict[str, Any], also_none: bool = False) -> Hint | None:
    """The first field of a `where` as a routing hint (None also passes when also_none)."""
    for name, expected in where.items():
        values = frozenset(expected if isinstance(expected, list) else [expected])
        return name, (values | {None}) if also_none else values
    return None


Tests = list[tuple[str, frozenset[Any]]]
"""A conjunction of membership tests: each field's value is in its set."""


def where_tests(where: dict[str, Any]) -> Tests:
    """A Match's `where` as membership tests (a list value: any of them)."""
    return [(name, frozenset(v if isinstance(v, list) else [v])) for name, v in where.items()]


def all_in(tests: Tests) -> Callable[[EventBase], bool] | None:
    """One fast predicate for a conjunction of membership tests (None: no test, all pass).
    One and two tests get their own lambda: this runs on every event an operator is sent."""
    if not tests:
        return None
    if len(tests) == 1:
        ((field, allowed),) = tests
        return lambda ev: getattr(ev, field) in allowed
    if len(tests) == 2:
        (f1, a1), (f2, a2) = tests
        return lambda ev: getattr(ev, f1) in a1 and getattr(ev, f2) in a2
    return lambda ev: all(getattr(ev, n) in o for n, o in tests)


def compile_where(where: dict[str, Any]) -> Callable[[EventBase], bool] | None:
    """A fast predicate for a Match's `where` (None when it accepts everything)."""
    return all_in(where_tests(where))
