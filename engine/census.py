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
from engine.stays import DISCHARGE, NO_STATE, Stay, StayBook, after_fact


def _apart(old: list[tuple[float, str, GroupKey, int]], tail: list[tuple[float, str, GroupKey, int]]) -> bool:
    """Whether the steps in `tail` come after every step in `old` (steps are in time order)
    and no two of them are at the same time, level and place (nothing nets out)."""
    if old and old[-1][0] >= tail[0][0]:
        return False
    return len(tail) == 1 or len({step[:3] for step in tail}) == len(tail)


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

    def _derive(self, stay: Stay) -> tuple[list[tuple[float, str, GroupKey, int]], bool, bool]:
        """The stay's level steps, whether it ends outside the census (it can expire), and
        whether the steps only add to the old ones. A fact added after all the others (the
        common case) only adds its own steps to those of the facts before it: Stay.mark keeps
        where the last derivation ended."""
        facts = stay.facts
        mark = stay.mark
        if mark is not None and len(facts) == mark[0] + 1 and (not mark[0] or facts[-2] is mark[1]):
            state, before = mark[2], mark[3]
            steps = list(stay.steps)
            begin = mark[0]
        else:
            state, before, steps, begin = NO_STATE, [], [], 0
        added = bool(begin)
        for fact in facts[begin:]:
            state = after_fact(state, fact)
            after = self._members(*state)
            if before != after:
                ts = fact[0]
                steps.extend((ts, lvl, p, -1) for lvl, p in before if (lvl, p) not in after)
                steps.extend((ts, lvl, p, 1) for lvl, p in after if (lvl, p) not in before)
            before = after
        stay.mark = (len(facts), facts[-1] if facts else None, state, before)
        place, cls, _ = state
        return steps, place is not None and cls not in self.census_classes, added

    def _settle(self, key: str, stay: Stay) -> None:
        """Recompute the stay's steps from its facts; emit what changed."""
        old = stay.steps
        new, outside, added = self._derive(stay)
        n = len(old)
        if (len(new) > n) if added else (new != old):
            tail = new[n:]
            if tail and _apart(old, tail) and (added or new[:n] == old):
                # only steps after all the old ones, each its own (time, level, place): they
                # are the difference, in the order the full difference below gives them
                for ts, lvl, p, d in tail:
                    self.emit(lvl, p, ts, d)
            else:
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
