"""What every KPI operator shares: windows closing on the watermark, roll-ups, samples.

An operator is a plain deterministic object. `update(event)` folds one event into per-pane
partial aggregates; `advance(watermark)` returns the samples of every window the watermark
has closed (final); `live(watermark)` returns the open window's provisional values.
`snapshot()`/`restore()` make the state durable for both runtimes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from engine.aggregates import Acc, Finalizer
from engine.definitions import KpiDefinition
from engine.events import EventBase
from engine.samples import GroupKey, Sample, Window, group_of, rollups, ts_to_dt
from engine.windows import PaneClock

Handler = Callable[[EventBase], None]
LevelHandler = Callable[[GroupKey, float, float], None]

MAX_QUIET_WINDOWS = 1000
"""Past this many windows without any data, closing jumps ahead instead of walking."""


def place_of(event: EventBase) -> GroupKey:
    return (event.facility, event.department, event.unit)


class Operator:
    """Base for all operators; subclasses provide per-window partial aggregates."""

    def __init__(self, kpi: KpiDefinition, finalizer: Finalizer):
        self.kpi = kpi
        self.clock = PaneClock(kpi.window)
        self.finalize = finalizer
        self.closed_upto: int | None = None
        self.first_index: int | None = None
        self.known: set[GroupKey] = set()
        self.sources: set[str] = set()
        self.late_events = 0
        self.dropped_events = 0

    # -- wiring --------------------------------------------------------------------------
    def subscriptions(self) -> dict[str, Handler]:
        """Event type -> handler."""
        return {}

    def level_subscriptions(self) -> dict[str, LevelHandler]:
        """Level name (e.g. 'patients') -> handler(group, ts, delta)."""
        return {}

    # -- what subclasses implement -------------------------------------------------------
    def _window_accs(self, start: int, end: int) -> tuple[dict[GroupKey, Acc], bool]:
        """Partial aggregates per unit for panes [start, end), and whether any data fell there."""
        raise NotImplementedError

    def _data_indices(self) -> Iterable[int]:
        """Pane indices that hold data (for skipping empty windows)."""
        raise NotImplementedError

    def _prune(self, keep_from: int) -> None:
        raise NotImplementedError

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
        idx = self.clock.index(ts)
        if self.first_index is None or idx < self.first_index:
            self.first_index = idx if self.first_index is None else min(self.first_index, idx)
        if self.closed_upto is not None and idx < self.closed_upto:
            self.late_events += 1
            if idx < self.clock.keep_from(self.closed_upto) and not self.clock.cumulative:
                self.dropped_events += 1
                return None
        return idx

    # -- closing windows -----------------------------------------------------------------
    def advance(self, watermark: float) -> list[Sample]:
        clock = self.clock
        if self.first_index is None:
            return []
        if self.closed_upto is None:
            self.closed_upto = self.first_index
        out: list[Sample] = []
        end = self.closed_upto + 1
        quiet = 0
        while clock.closable(end, watermark):
            start = clock.start_of(end, self.first_index)
            accs, active = self._window_accs(start, end)
            self.closed_upto = end
            if accs:
                out.extend(self._samples(accs, start * clock.pane, end * clock.pane, True, watermark))
            if active:
                quiet = 0
                end += 1
            else:
                quiet += 1
                if accs and quiet < MAX_QUIET_WINDOWS:
                    end += 1  # a level persists through quiet windows: keep reporting it
                else:
                    ahead = min((i for i in self._data_indices() if i >= end), default=None)
                    if ahead is None:
                        last = int((watermark - clock.grace) // clock.pane)
                        self.closed_upto = max(self.closed_upto, last)
                        break
                    end = max(end + 1, ahead + 1)
                    quiet = 0
            self._prune(clock.keep_from(self.closed_upto))
        self._prune(clock.keep_from(self.closed_upto))
        return out

    def live(self, watermark: float) -> list[Sample]:
        clock = self.clock
        if self.first_index is None and not self.known:
            return []
        end = clock.live_end(watermark)
        first = self.first_index if self.first_index is not None else end - 1
        start = clock.start_of(end, first)
        accs, _ = self._window_accs(start, end)
        extra = self._live_extra(watermark, start)
        overdue: dict[GroupKey, int] = {}
        for key, (values, count) in extra.items():
            acc = accs.setdefault(key, Acc(self.finalize.needs_values))
            for v in values:
                acc.add(v)
            overdue[key] = count
        for key in self.known:
            accs.setdefault(key, Acc(self.finalize.needs_values))
        return self._samples(accs, start * clock.pane, watermark, False, watermark, overdue)

    def _samples(
        self,
        accs: dict[GroupKey, Acc],
        start: float,
        end: float,
        final: bool,
        as_of: float,
        overdue: dict[GroupKey, int] | None = None,
    ) -> list[Sample]:
        keep = self.finalize.needs_values
        totals: dict[GroupKey, Acc] = {}
        late: dict[GroupKey, int] = {}
        for key, acc in accs.items():
            for up in rollups(key):
                if up != key and not self._rolls_up(acc):
                    continue
                total = totals.get(up)
                if total is None:
                    total = totals[up] = Acc(keep)
                total.merge(acc)
                if overdue and key in overdue:
                    late[up] = late.get(up, 0) + overdue[key]
        window = Window(start=ts_to_dt(start), end=ts_to_dt(end))
        stamp = ts_to_dt(as_of)
        out = []
        for key in sorted(totals, key=lambda k: (k[0], k[1] or "", k[2] or "")):
            acc = totals[key]
            value, num, den = self.finalize(acc)
            n = self._n_of(acc)
            out.append(
                Sample(
                    kpi=self.kpi.id,
                    group=group_of(key),
                    window=window,
                    value=value,
                    numerator=num,
                    denominator=den,
                    n=n,
                    status=self.kpi.status_of(value, n),  # type: ignore[arg-type]
                    as_of=stamp,
                    final=final,
                    overdue=late.get(key, 0),
                )
            )
        return out

    def _n_of(self, acc: Acc) -> int:
        return acc.n

    def _rolls_up(self, acc: Acc) -> bool:
        return True

    # -- state ---------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        return {
            "kpi": self.kpi.id,
            "closed_upto": self.closed_upto,
            "first_index": self.first_index,
            "known": [list(k) for k in self.known],
            "sources": sorted(self.sources),
            "late_events": self.late_events,
            "dropped_events": self.dropped_events,
            "state": self._state(),
        }

    def restore(self, snap: dict[str, Any]) -> None:
        self.closed_upto = snap["closed_upto"]
        self.first_index = snap["first_index"]
        self.known = {tuple(k) for k in snap["known"]}  # type: ignore[misc]
        self.sources = set(snap["sources"])
        self.late_events = snap["late_events"]
        self.dropped_events = snap["dropped_events"]
        self._restore(snap["state"])


def compile_where(where: dict[str, Any]) -> Callable[[EventBase], bool] | None:
    """A fast predicate for a Match's `where` (None when it accepts everything)."""
    if not where:
        return None
    tests: list[tuple[str, frozenset[Any]]] = []
    for name, expected in where.items():
        tests.append((name, frozenset(expected if isinstance(expected, list) else [expected])))
    if len(tests) == 1:
        ((field, allowed),) = tests
        return lambda ev: getattr(ev, field) in allowed
    return lambda ev: all(getattr(ev, n) in o for n, o in tests)
