"""Patients per direct-care licensed nurse, at every moment: never averaged.

California Title 22 §70217(a) sets a unit's licensed nurse-to-patient ratio "at all times";
a time-weighted mean of the ratio hides the hour the unit ran short. So a window's value is
the worst ratio in it (`max`), or how long the unit was out of ratio (`minutes_over`, above
its unit type's legal `limit`). Patients with no direct-care licensed nurse on shift is the
worst state there is: an infinite ratio, critical, never `no_data`. A department or facility
is as bad as its worst unit (minutes out of ratio add up: unit-minutes).

The operator keeps every step of both levels (patients present, nurses on shift) per unit and
pane, so a window can walk the step function instead of integrating it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import tzinfo
from typing import Any, NamedTuple

from engine.aggregates import Acc
from engine.definitions.kpi import KpiDefinition
from engine.definitions.measures import StaffingRatioMeasure
from engine.operators import paneindex
from engine.operators.base import LevelHandler, Operator, Output
from engine.samples import GroupKey, Sample, Status, Window, computed, group_of, rollups, ts_to_dt
from engine.scorecard import STATUS_LEVEL

UNSTAFFED = math.inf
"""The ratio of patients to no nurse."""


def ratio(patients: float, nurses: float) -> float:
    if patients <= 0:
        return 0.0
    if nurses <= 0:
        return UNSTAFFED
    return patients / nurses


class RatioProfile:
    """What one unit's step function did over [start, end): worst ratio (and the levels then),
    seconds above the limit, seconds with patients present."""

    __slots__ = ("nurses", "over", "patients", "present", "worst")

    def __init__(self) -> None:
        self.worst = 0.0
        self.patients = 0.0
        self.nurses = 0.0
        self.over = 0.0
        self.present = 0.0


def profile(
    start_levels: tuple[float, float],
    steps: Iterable[tuple[float, float, float]],
    start: float,
    end: float,
    limit: float | None,
) -> RatioProfile:
    """Walk (ts, d_patients, d_nurses) steps, in any order, over [start, end)."""
    out = RatioProfile()
    patients, nurses = start_levels
    t = start

    def hold(until: float) -> None:
        span = until - t
        if span <= 0:
            return
        r = ratio(patients, nurses)
        if patients > 0:
            out.present += span
            if r > out.worst:
                out.worst, out.patients, out.nurses = r, patients, nurses
        if limit is not None and r > limit:
            out.over += span

    for ts, dp, dn in sorted(steps):
        if ts >= end:
            break
        if ts > t:
            hold(ts)
            t = ts
        patients += dp
        nurses += dn
    hold(end)
    return out


class Result(NamedTuple):
    value: float | None
    numerator: float | None
    denominator: float | None
    n: int
    status: Status


def unit_result(kpi: KpiDefinition, prof: RatioProfile, unit_type: str | None) -> Result:
    """One unit's value: the worst ratio (None when there were patients and no nurse: the
    ratio is infinite, critical) or the minutes out of ratio; n is 1 when it had patients."""
    n = 1 if prof.present > 0 or prof.patients > 0 else 0
    if kpi.aggregate == "minutes_over":
        minutes = prof.over / 60.0
        return Result(minutes, minutes, prof.present / 60.0, n, kpi.status_of(minutes, n, unit_type))
    if prof.worst == UNSTAFFED:
        return Result(None, prof.patients, prof.nurses, n, "critical" if n else "no_data")
    return Result(prof.worst, prof.patients, prof.nurses, n, kpi.status_of(prof.worst, n, unit_type))


def rollup_result(kpi: KpiDefinition, parts: list[Result]) -> Result:
    """A department or facility: as bad as its worst unit; minutes out of ratio add up."""
    worst = max(
        parts,
        key=lambda r: (STATUS_LEVEL[r.status], math.inf if r.value is None and r.n else (r.value or 0.0)),
    )
    n = sum(r.n for r in parts)
    status = worst.status if n else "no_data"
    if kpi.aggregate == "minutes_over":
        minutes = sum(r.value or 0.0 for r in parts)
        return Result(minutes, minutes, sum(r.denominator or 0.0 for r in parts), n, status)
    return Result(worst.value, worst.numerator, worst.denominator, n, status)


def _sample(kpi: KpiDefinition, key: GroupKey, r: Result, window: Window, stamp: Any, final: bool) -> Sample:
    return computed(
        kpi.id,
        group_of(key),
        window,
        r.value,
        r.numerator,
        r.denominator,
        r.n,
        r.status,
        stamp,
        final,
    )


class _Steps:
    """One unit's steps per pane, and the levels before the first kept pane."""

    __slots__ = ("base", "base_index", "first", "now", "order", "panes")

    def __init__(self, base_index: int | None) -> None:
        self.base = [0.0, 0.0]
        self.base_index = base_index
        self.panes: dict[int, list[tuple[float, float, float]]] = {}
        self.order: list[int] = []  # the keys of panes, sorted: a window walks its own panes only
        self.now = [0.0, 0.0]  # patients and nurses after every step: the live ratio without a walk
        # the time of the unit's first step: it is in no window that ends before then (whether
        # a window closed before the unit's first event arrived must not change the result)
        self.first: float = math.inf

    def add(self, idx: int | None, ts: float, dp: float, dn: float) -> None:
        self.first = min(self.first, -math.inf if idx is None else ts)
        self.now[0] += dp
        self.now[1] += dn
        if idx is None or (self.base_index is not None and idx < self.base_index):
            self.base[0] += dp
            self.base[1] += dn
            return
        steps = self.panes.get(idx)
        if steps is None:
            steps = self.panes[idx] = []
            paneindex.add(self.order, idx)
        steps.append((ts, dp, dn))

    def levels_at(self, idx: float) -> tuple[float, float]:
        if idx == math.inf:
            return self.now[0], self.now[1]
        p, n = self.base
        for i in paneindex.before(self.order, idx):
            for _, dp, dn in self.panes[i]:
                p += dp
                n += dn
        return p, n

    def between(self, start: int, end: int) -> list[tuple[float, float, float]]:
        return [s for i in paneindex.within(self.order, start, end) for s in self.panes[i]]

    def active(self, start: int, end: int) -> bool:
        return paneindex.any_within(self.order, start, end)

    def fold(self, keep_from: int) -> None:
        order = self.order
        if order and order[0] < keep_from:  # (called for every window closed: mostly nothing to fold)
            self._fold(keep_from)
        if self.base_index is None or keep_from > self.base_index:
            self.base_index = keep_from

    def _fold(self, keep_from: int) -> None:
        for i in paneindex.take_before(self.order, keep_from):
            for _, dp, dn in self.panes.pop(i):
                self.base[0] += dp
                self.base[1] += dn


class StaffingRatioOperator(Operator):
    quiet_repeats = True  # a level that did not change gives the same window again
    measure: StaffingRatioMeasure

    def __init__(
        self,
        outputs: list[Output],
        unit_types: dict[GroupKey, str] | None = None,
        zone: tzinfo | None = None,
    ):
        super().__init__(outputs, unit_types, zone)
        self.units: dict[GroupKey, _Steps] = {}
        # every unit is folded to this pane (None: not known); a step lands before it only in a
        # unit's base (_Steps.add), and a new unit clears it (LevelTable._folded, the same idea)
        self._folded: int | None = None

    def level_subscriptions(self) -> dict[str, LevelHandler]:
        return {self.measure.patients: self.on_patients, self.measure.nurses: self.on_nurses}

    def on_patients(self, key: GroupKey, ts: float, delta: float) -> None:
        self._step(key, ts, delta, 0.0)

    def on_nurses(self, key: GroupKey, ts: float, delta: float) -> None:
        self._step(key, ts, 0.0, delta)

    def _step(self, key: GroupKey, ts: float, dp: float, dn: float) -> None:
        idx = self._pane_for(ts)
        steps = self.units.get(key)
        if steps is None:
            base = self.clock.keep_from(self.closed_upto) if self.closed_upto is not None else None
            steps = self.units[key] = _Steps(base)
            self._folded = None
            self.known.add(key)
        steps.add(idx, ts, dp, dn)

    def limit_of(self, kpi: KpiDefinition, key: GroupKey) -> float | None:
        return kpi.levels_for(self.unit_types.get(key)).limit

    # -- windows -----------------------------------------------------------------------------
    def _profiles(
        self, kpi: KpiDefinition, start: float, end: float, first: int, last: int
    ) -> dict[GroupKey, RatioProfile]:
        out = {}
        for key, steps in self.units.items():
            if steps.first >= end:
                continue  # no step yet in or before this window
            out[key] = profile(
                steps.levels_at(first), steps.between(first, last), start, end, self.limit_of(kpi, key)
            )
        return out

    def _window_accs(
        self, start: int, end: int, until: float | None = None
    ) -> tuple[dict[GroupKey, Acc], bool]:
        active = any(s.active(start, end) for s in self.units.values())
        until_ts = self.clock.start(end)
        return ({k: Acc() for k, s in self.units.items() if s.first < until_ts}, active)

    def _samples(
        self,
        accs: dict[GroupKey, Acc],
        start: float,
        end: float,
        final: bool,
        as_of: float,
        overdue: dict[GroupKey, int] | None = None,
    ) -> list[Sample]:
        # the panes the window covers: start is a pane's beginning; end may be inside its pane
        # (the live window): steps at or after end are not walked
        first, last = self.clock.index(start), self.clock.index(end) + 1
        window = Window(start=ts_to_dt(start), end=ts_to_dt(end))
        stamp = ts_to_dt(as_of)
        out: list[Sample] = []
        for output in self.outputs:
            kpi = output.kpi
            live_now = not final and kpi.aggregate == "max"
            if live_now:
                # the live ratio is the ratio now, not the worst of the open window
                profiles = {
                    key: profile(s.levels_at(math.inf), (), end, end + 1, self.limit_of(kpi, key))
                    for key, s in self.units.items()
                }
            else:
                profiles = self._profiles(kpi, start, end, first, last)
            out.extend(self._rolled(kpi, profiles, window, stamp, final))
        return out

    def _rolled(
        self,
        kpi: KpiDefinition,
        profiles: dict[GroupKey, RatioProfile],
        window: Window,
        stamp: Any,
        final: bool,
    ) -> list[Sample]:
        """Each unit's sample, then each department and facility as its worst unit."""
        per_group: dict[GroupKey, list[Sample]] = {}
        for key, prof in profiles.items():
            sample = self._unit_sample(kpi, key, prof, window, stamp, final)
            for up in rollups(key):
                per_group.setdefault(up, []).append(sample)
        out = []
        for key in sorted(per_group, key=lambda k: (k[0], k[1] or "", k[2] or "")):
            parts = per_group[key]
            if key[2] is not None and len(parts) == 1 and parts[0].group.key == key:
                out.append(parts[0])
                continue
            out.append(self._rollup_sample(kpi, key, parts, window, stamp, final))
        return out

    def _unit_sample(
        self, kpi: KpiDefinition, key: GroupKey, prof: RatioProfile, window: Window, stamp: Any, final: bool
    ) -> Sample:
        return _sample(kpi, key, unit_result(kpi, prof, self.unit_types.get(key)), window, stamp, final)

    def _rollup_sample(
        self, kpi: KpiDefinition, key: GroupKey, parts: list[Sample], window: Window, stamp: Any, final: bool
    ) -> Sample:
        results = [Result(s.value, s.numerator, s.denominator, s.n, s.status) for s in parts]
        return _sample(kpi, key, rollup_result(kpi, results), window, stamp, final)

    def live(self, watermark: float) -> list[Sample]:
        if not self.units:
            return []
        end = self.clock.live_end(watermark)
        first = self.first_index if self.first_index is not None else end - 1
        start = self.clock.start_of(end, first)
        return self._samples({}, self.clock.start(start), watermark, False, watermark)

    # -- state -------------------------------------------------------------------------------
    def _data_indices(self) -> Iterable[int]:
        return [i for s in self.units.values() for i in s.panes]

    def _prune(self, keep_from: int) -> None:
        if keep_from == self._folded:
            return  # (called for every window closed and every slice of a tick)
        for steps in self.units.values():
            steps.fold(keep_from)
        self._folded = keep_from

    def _state(self) -> dict[str, Any]:
        return {
            "units": [
                [
                    list(k),
                    s.base,
                    s.base_index,
                    [[i, [list(x) for x in v]] for i, v in s.panes.items()],
                    None if s.first == math.inf else s.first if s.first != -math.inf else "-inf",
                ]
                for k, s in self.units.items()
            ]
        }

    def _restore(self, state: dict[str, Any]) -> None:
        self.units = {}
        self._folded = None
        for key, base, base_index, panes, *first in state["units"]:
            steps = _Steps(base_index)
            steps.base = list(base)
            steps.panes = {i: [tuple(x) for x in v] for i, v in panes}  # type: ignore[misc]
            steps.order = sorted(steps.panes)
            steps.now = list(steps.levels_at(math.nextafter(math.inf, 0)))
            found = first[0] if first else "-inf"  # a snapshot from before: as if always there
            steps.first = -math.inf if found == "-inf" else math.inf if found is None else float(found)
            self.units[tuple(key)] = steps  # type: ignore[index]
