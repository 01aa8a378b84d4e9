"""The patient census per unit from ADT: who is in the census (inpatients) and who is
present (any class, not on leave), as levels over time.

ADT is a stream of facts, not of counts: admissions, transfers, leaves, class changes,
discharges and the cancels that withdraw them. The tracker keeps each encounter's facts
(engine/stays.py), derives the level steps they give, and on any correction emits only the
difference at the original times, so the time integral (patient-days) is exact whatever
order the messages came in.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from engine.events import EventBase
from engine.levels import Emit
from engine.places import CensusRules
from engine.samples import GroupKey
from engine.stays import DISCHARGE, Stay, StayBook


class CensusTracker:
    """Patients per unit from the encounters' facts (engine/stays.py); emits ('patients' |
    'patients_present', place, ts, delta). Each change recomputes the stay's steps from its
    facts and emits only the difference, at the original times: patient-days stay exact
    whatever order the messages came in. Rules: places.CensusRules."""

    level = "patients"
    levels = ("patients", "patients_present")

    def __init__(
        self,
        emit: Emit,
        rules: CensusRules | None = None,
        unit_types: dict[GroupKey, str] | None = None,
    ):
        self.emit = emit
        self.rules = rules or CensusRules()
        self.census_classes = frozenset(self.rules.patient_classes)
        self.excluded = frozenset(self.rules.exclude_unit_types)
        self.unit_types = unit_types or {}
        self.book = StayBook(self._settle)
        self.expiring: dict[str, float] = {}  # open stays outside the census -> last fact ts

    @property
    def stays(self) -> dict[str, Stay]:
        return self.book.stays

    def handlers(self) -> dict[str, Callable[[EventBase], None]]:
        return self.book.handlers()

    def _members(self, place: GroupKey | None, cls: str | None, away: bool) -> list[tuple[str, GroupKey]]:
        if place is None or away:
            return []
        out = [("patients_present", place)]
        if cls in self.census_classes and self.unit_types.get(place) not in self.excluded:
            out.append(("patients", place))
        return out

    def _derive(self, stay: Stay) -> tuple[list[tuple[float, str, GroupKey, int]], bool]:
        """The stay's level steps, and whether it ends outside the census (it can expire)."""
        steps: list[tuple[float, str, GroupKey, int]] = []
        before: list[tuple[str, GroupKey]] = []
        place: GroupKey | None = None
        cls: str | None = None
        for ts, _kind, place, cls, away, _named in stay.timeline():
            after = self._members(place, cls, away)
            if before != after:
                steps.extend((ts, lvl, p, -1) for lvl, p in before if (lvl, p) not in after)
                steps.extend((ts, lvl, p, 1) for lvl, p in after if (lvl, p) not in before)
            before = after
        return steps, place is not None and cls not in self.census_classes

    def _settle(self, key: str, stay: Stay) -> None:
        """Recompute the stay's steps from its facts; emit what changed."""
        new, outside = self._derive(stay)
        old = stay.steps
        if new != old:
            diff: Counter[tuple[float, str, GroupKey]] = Counter()
            for ts, lvl, p, d in old:
                diff[(ts, lvl, p)] -= d
            for ts, lvl, p, d in new:
                diff[(ts, lvl, p)] += d
            for (ts, lvl, p), d in diff.items():
                if d:
                    self.emit(lvl, p, ts, d)
            stay.steps = new
        self.expiring.pop(key, None)
        if outside:
            self.expiring[key] = stay.last_ts()

    def expire(self, now: float) -> None:
        """Registrations outside the census with no message for register_expiry leave then."""
        limit = self.rules.register_expiry
        for key, last in list(self.expiring.items()):
            if last + limit <= now:
                self.expiring.pop(key, None)
                if key in self.book.stays:
                    self.book.add(key, (last + limit, DISCHARGE, None, None))

    def prune(self, before: float) -> None:
        self.book.prune(before)

    def snapshot(self) -> dict[str, Any]:
        return {**self.book.snapshot(), "expiring": list(self.expiring.items())}

    def restore(self, state: dict[str, Any]) -> None:
        self.book.restore(state, lambda steps: [(t, lvl, tuple(p), d) for t, lvl, p, d in steps])
        self.expiring = dict(state["expiring"])
