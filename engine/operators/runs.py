"""Closed windows kept as runs: the form in which operators hand closed windows to the
history (engine/history.py) and keep them across a snapshot.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from engine.samples import GroupKey, Sample, lasting


class Runs:
    """Closed windows kept as runs: consecutive windows of one KPI and place with the same
    result are one history row (its first window, and `until`, the end of its last).

    A sliding window of 7 days stepping by the hour closes 168 windows for every hour that
    had data, and a level (census) that holds through a quiet night closes one per step with
    the same value: stored one per window, history grows with the time span, not with the
    data. A run changes only where a pane enters or leaves the window with data in it.
    """

    __slots__ = ("dirty", "ended", "held")

    def __init__(self) -> None:
        # (kpi, place) -> [result, end index of the last window, the first window's sample, until]
        self.held: dict[tuple[str, GroupKey], list[Any]] = {}
        self.dirty: dict[tuple[str, GroupKey], None] = {}
        self.ended: list[Sample] = []  # runs that began or grew since the flush, and are over

    def close(self, samples: list[Sample], end_index: int) -> None:
        for s in samples:
            result = (s.value, s.numerator, s.denominator, s.n, s.status)
            if not self.extend((s.kpi, s.group.key), result, end_index, s.window.end):
                self.begin(s, result, end_index)

    def extend(
        self, key: tuple[str, GroupKey], result: tuple[Any, ...], end_index: int, end: datetime
    ) -> bool:
        """The window ending at pane end_index has the result of the run before it: it joins
        the run (True); False: a new run begins, with begin()."""
        run = self.held.get(key)
        if run is not None and run[1] == end_index - 1 and run[0] == result:
            run[1] = end_index
            run[3] = end
            self.dirty[key] = None
            return True
        return False

    def begin(self, s: Sample, result: tuple[Any, ...], end_index: int) -> None:
        key = (s.kpi, s.group.key)
        run = self.held.get(key)
        if run is not None and key in self.dirty:
            self.ended.append(self._row(run))
        self.held[key] = [result, end_index, s, s.window.end]
        self.dirty[key] = None

    @staticmethod
    def _row(run: list[Any]) -> Sample:
        first, until = run[2], run[3]
        return first if until == first.window.end else lasting(first, until)

    def hold(self, end_index: int, until_index: int, until: datetime) -> None:
        """Every run that reached the window ending at end_index goes on, unchanged, to the
        one ending at until_index (a level through panes where nothing changed)."""
        for key, run in self.held.items():
            if run[1] == end_index:
                run[1] = until_index
                run[3] = until
                self.dirty[key] = None

    def flush(self) -> list[Sample]:
        """The runs that began or grew since the last flush (a grown run replaces its row)."""
        out = self.ended
        out.extend(self._row(self.held[key]) for key in self.dirty)
        self.ended = []
        self.dirty.clear()
        return out

    def snapshot(self) -> list[Any]:
        return [[run[1], run[2].model_dump(mode="json"), run[3].isoformat()] for run in self.held.values()]

    def restore(self, state: list[Any]) -> None:
        self.held.clear()
        self.dirty.clear()
        self.ended = []
        for end_index, first, until in state:
            s = Sample.model_validate(first)
            result = (s.value, s.numerator, s.denominator, s.n, s.status)
            self.held[(s.kpi, s.group.key)] = [result, end_index, s, datetime.fromisoformat(until)]
