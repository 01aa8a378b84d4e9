"""Operators whose observations are numbers placed at a time: the pane store they share."""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable
from datetime import tzinfo
from typing import Any

from engine.aggregates import Acc
from engine.operators import paneindex
from engine.operators.base import Operator, Output
from engine.samples import GroupKey


class ValueOperator(Operator):
    """Keeps an Acc per (unit, pane); cumulative windows fold expired panes into a base."""

    def __init__(
        self,
        outputs: list[Output],
        unit_types: dict[GroupKey, str] | None = None,
        zone: tzinfo | None = None,
    ):
        super().__init__(outputs, unit_types, zone)
        self.panes: dict[GroupKey, dict[int, Acc]] = {}
        self.base: dict[GroupKey, Acc] = {}
        # pane indices in a heap per unit: pruning takes the oldest panes off the top instead
        # of scanning them all for every closed window (years of panes after a backfill)
        self.order: dict[GroupKey, list[int]] = {}
        self.tops: dict[GroupKey, int] = {}  # the highest pane index made per unit (kept)
        self.indices: list[int] = []  # every pane index with data, sorted (the next data: bisect)
        self._indexed: set[int] = set()
        self._left: set[int] = set()  # the panes with data pruned last

    def observe(self, key: GroupKey, ts: float, value: float) -> None:
        pane = self.clock.pane
        idx = int(ts // pane) if pane else self.clock.index(ts)
        first, closed = self.first_index, self.closed_upto
        if first is None or idx < first or (closed is not None and idx < closed):
            checked = self._pane_for(ts)  # the slow path: first event, or a late one
            if checked is None:
                return
            idx = checked
        panes = self.panes.get(key)
        acc = panes.get(idx) if panes is not None else None
        if acc is None:
            acc = self._acc(key, idx)
        acc.add(value)

    def unobserve(self, key: GroupKey, ts: float, value: float) -> bool:
        """Take back a value observed before (a duration whose earlier end, or cancel, came
        in later). False when its pane is no longer kept: the value then stays."""
        idx = self.clock.index(ts)
        panes = self.panes.get(key)
        acc = panes.get(idx) if panes is not None else None
        folded = False
        if acc is None:
            acc = self.base.get(key) if self.clock.cumulative else None
            kept_from = self.clock.keep_from(self.closed_upto) if self.closed_upto is not None else None
            if acc is None or kept_from is None or idx >= kept_from:
                return False
            folded = True  # a cumulative window's pane, folded into its base
        if acc.values is not None:
            try:
                acc.values.remove(value)
            except ValueError:
                return False
            acc.lo = min(acc.values, default=math.inf)
            acc.hi = max(acc.values, default=-math.inf)
        acc.n -= 1
        acc.total -= value
        if acc.n == 0:
            acc.total = 0.0
        if self.closed_upto is not None and idx < self.closed_upto:
            self.late_events += 1  # a correction to a window already reported
        if acc.n == 0 and acc.num == 0 and acc.den == 0:  # nothing left: no sample for it either
            if folded:
                del self.base[key]
            else:
                del panes[idx]  # type: ignore[union-attr]
        return True

    def observe_ratio(self, key: GroupKey, ts: float, num: float, den: float, n: int) -> None:
        idx = self._pane_for(ts)
        if idx is None:
            return
        acc = self._acc(key, idx)
        acc.num += num
        acc.den += den
        acc.n += n

    def _acc(self, key: GroupKey, idx: int) -> Acc:
        panes = self.panes.get(key)
        if panes is None:
            panes = self.panes[key] = {}
            self.known.add(key)
        acc = panes.get(idx)
        if acc is None:
            acc = panes[idx] = Acc(self.keep_values)
            heapq.heappush(self.order.setdefault(key, []), idx)
            top = self.tops.get(key)
            if top is None or idx > top:  # (indices before 1970 are negative)
                self.tops[key] = idx
            if idx not in self._indexed:
                self._indexed.add(idx)
                paneindex.add(self.indices, idx)
        return acc

    def _window_accs(
        self, start: int, end: int, until: float | None = None
    ) -> tuple[dict[GroupKey, Acc], bool]:
        keep = self.keep_values
        out: dict[GroupKey, Acc] = {}
        active = False
        cumulative = self.clock.cumulative
        tops, order = self.tops, self.order
        for key, panes in self.panes.items():
            acc: Acc | None = None
            base = self.base.get(key) if cumulative else None
            if base is not None:
                acc = Acc(keep)
                acc.merge(base)
            else:
                # no pane of this unit in [start, end): skipped (its heap's top is at or below its
                # lowest pane, `tops` at or above its highest); most units, in most windows a
                # backfill closes
                heap = order.get(key)
                if not heap or heap[0] >= end or tops[key] < start:
                    continue
            if end - start < len(panes):  # the window's panes, not every pane kept
                found = [p for p in map(panes.get, range(start, end)) if p is not None]
            else:
                found = [p for i, p in panes.items() if start <= i < end]
            for pane in found:
                if acc is None:
                    acc = Acc(keep)
                if keep:
                    pane.sorted_values()  # once per pane: windows then sort runs, fast
                acc.merge(pane)
                active = True
            if acc is not None:
                out[key] = acc
        return out, active

    def _data_indices(self) -> Iterable[int]:
        for panes in self.panes.values():
            yield from panes

    def _next_data(self, end: int) -> int | None:
        return paneindex.first_from(self.indices, end)

    def _pure_panes(self) -> bool:
        return True

    def _pane_moved(self, entered: int, left: int) -> bool:
        return entered in self._indexed or left in self._left

    def _prune(self, keep_from: int) -> None:
        gone = paneindex.take_before(self.indices, keep_from)
        if not gone:
            # `indices` holds the index of every pane made (_acc): no pane is older than keep_from
            # (this runs for every window closed, and in every slice of a tick, for every unit)
            return
        # a pane with data leaves the windows when pruned: kept until the next prune
        self._left = set(gone)
        self._indexed.difference_update(gone)
        for key, panes in self.panes.items():
            heap = self.order.get(key)
            if not heap or heap[0] >= keep_from:
                continue
            found: dict[int, None] = {}  # a pane emptied and made again is in the heap twice
            while heap and heap[0] < keep_from:
                i = heapq.heappop(heap)
                if i in panes:  # (a pane emptied by unobserve() is gone already)
                    found[i] = None
            old = list(found)
            if not old:
                continue
            if self.clock.cumulative:
                base = self.base.get(key)
                if base is None:
                    base = self.base[key] = Acc(self.keep_values)
                for i in old:
                    base.merge(panes[i])
            for i in old:
                del panes[i]

    def _state(self) -> dict[str, Any]:
        return {
            "panes": [
                [list(key), idx, acc.to_state()]
                for key, panes in self.panes.items()
                for idx, acc in panes.items()
            ],
            "base": [[list(key), acc.to_state()] for key, acc in self.base.items()],
        }

    def _restore(self, state: dict[str, Any]) -> None:
        self.panes = {}
        for key, idx, acc in state["panes"]:
            self.panes.setdefault(tuple(key), {})[idx] = Acc.from_state(acc)  # type: ignore[index]
        self.order = {key: sorted(panes) for key, panes in self.panes.items()}  # a sorted list is a heap
        self.tops = {key: max(panes) for key, panes in self.panes.items() if panes}
        self._indexed = {i for panes in self.panes.values() for i in panes}
        self.indices = sorted(self._indexed)
        self.base = {tuple(k): Acc.from_state(a) for k, a in state["base"]}  # type: ignore[misc]
