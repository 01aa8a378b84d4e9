"""Lengths of stay and ED intervals, derived from each encounter's facts (engine/stays.py).

Because the facts are kept, corrections land where they belong: an A13 reopens a stay whose
length was already counted (the value is taken back, the real discharge counts later), an A11
withdraws it, a leave of absence is not part of the stay, and a message out of time order
gives the same answer as a clean feed.

- span `hospital`: the inpatient stay, from the moment the encounter is in one of the
  KPI's patient classes (an ED patient admitted counts from the admission) to its discharge,
  less leaves of absence; in `elapsed` time or in `midnights` (inpatient days by the midnight
  census, at midnight in the site's time zone; a same-day stay counts one). The value counts
  at the discharge, for the discharging unit.
- span `unit_type`: each visit to a unit of the given types (the ED), from arrival (or from the
  decision to admit: the moment the encounter became inpatient while there) to departure (the
  move to another unit, or the visit's discharge). Outcome `admitted`: the patient became an
  inpatient, on this encounter or on another of the same patient that starts within
  `link_within` of the departure (sites that give the ED and the inpatient stay different visit
  numbers); `discharged`: the visit ended with a discharge and no such admission. The value
  counts at the departure, for the ED unit.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from datetime import tzinfo
from operator import itemgetter
from typing import Any

from engine.definitions.measures import TIME_UNITS, StayMeasure
from engine.events import EventBase
from engine.operators.base import Output
from engine.operators.values import ValueOperator
from engine.samples import GroupKey
from engine.stays import Stay, StayBook
from engine.windows import local_day

DAY = 86400.0
ADMITTED_CLASSES = frozenset({"inpatient", "obstetrics", "newborn"})

Observation = tuple[float, GroupKey, float]  # ts, place, value
_place_of = itemgetter(2)  # of a fact


class StayRule:
    """What one StayMeasure observes of a stay; shared by the stream and the period report."""

    def __init__(self, measure: StayMeasure, unit_types: dict[GroupKey, str], zone: tzinfo | None = None):
        self.m = measure
        self.zone = zone  # midnights are the site's
        self.unit_types = unit_types
        self.classes = frozenset(measure.patient_classes)
        self.types = frozenset(measure.unit_types)
        self.per = TIME_UNITS[measure.unit]
        # the places of those types: is a stay ever on one, tested for every ADT change
        self.typed = frozenset(k for k, t in unit_types.items() if t in self.types)

    def observations(
        self, key: str, stay: Stay, book: StayBook, before: Sequence[Observation] = ()
    ) -> list[Observation]:
        """What the stay gives now; `before` is what it gave last time (to skip the walk)."""
        if self.m.span == "hospital":
            if not before and stay.discharged() is None:
                return []  # an open stay has no length yet (the common case)
            return self._hospital(stay)
        if not before and self.typed.isdisjoint(map(_place_of, stay.facts)):
            return []  # never on a unit of these types
        return self._visits(key, stay, book)

    # -- the inpatient stay ----------------------------------------------------------------
    def _hospital(self, stay: Stay) -> list[Observation]:
        start: float | None = None
        away_since: float | None = None
        away = 0.0
        last_place: GroupKey | None = None
        present: list[tuple[float, float]] = []  # (from, to) spans not on leave
        mark: float | None = None
        for ts, kind, place, cls, on_leave, named in stay.timeline():
            if start is None and place is not None and cls in self.classes:
                start = mark = ts
            if start is None:
                continue
            if on_leave and away_since is None:
                away_since = ts
                if mark is not None:
                    present.append((mark, ts))
                    mark = None
            elif not on_leave and away_since is not None:
                away += ts - away_since
                away_since = None
                mark = ts
            if place is None and kind == "discharge":
                if mark is not None:
                    present.append((mark, ts))
                last_place = named or last_place  # the unit the discharge names, else where we saw them
                if last_place is None:
                    return []
                if self.m.count == "midnights":
                    zone = self.zone
                    value = float(max(1, sum(local_day(b, zone) - local_day(a, zone) for a, b in present)))
                else:
                    elapsed = ts - start - (away if self.m.exclude_leave else 0.0)
                    value = elapsed / self.per
                return [(ts, last_place, value)]
            if place is not None:
                last_place = place
        return []

    # -- visits to units of a type (the ED) --------------------------------------------------
    def _segments(self, key: str, stay: Stay) -> list[list[Any]]:
        """One encounter's spells on units of the types: [enter, leave (None: still there),
        place, decision (first moment in an admitted class there), admitted on leaving,
        left by discharge, encounter]. Kept on the stay until its facts change: the ED
        operators (boarding, LOS admitted, LOS discharged) all ask for the same ones, for
        every encounter of the patient, on every ADT change. The lists are not to be changed."""
        memo = stay.memo
        if memo is None:
            memo = stay.memo = {}
        sig = (self.types, id(self.unit_types))
        found = memo.get(sig)
        if found is not None and found[0] == stay.version:
            return found[1]  # type: ignore[no-any-return]
        spells = self._spells(key, stay)
        memo[sig] = (stay.version, spells)
        return spells

    def _spells(self, key: str, stay: Stay) -> list[list[Any]]:
        out: list[list[Any]] = []
        spell: list[Any] | None = None
        for ts, _kind, place, cls, _away, _named in stay.timeline():
            here = place is not None and self.unit_types.get(place) in self.types
            if spell is None:
                if here:
                    spell = [ts, None, place, ts if cls in ADMITTED_CLASSES else None, False, False, key]
                continue
            if here:
                if cls in ADMITTED_CLASSES and spell[3] is None:
                    spell[3] = ts  # became an inpatient while still here: the decision to admit
                continue
            spell[1] = ts
            spell[4] = place is not None and cls in ADMITTED_CLASSES
            spell[5] = place is None
            out.append(spell)
            spell = None
        if spell is not None:
            out.append(spell)
        return out

    def _visits(self, key: str, stay: Stay, book: StayBook) -> list[Observation]:
        """A patient's time in the ED may span encounters (sites that open the inpatient visit
        under its own number while the patient waits in the ED): overlapping spells of the same
        patient are one visit, from the first arrival to the last departure, owned (counted) by
        the encounter that arrived first."""
        keys = book.by_patient.get(stay.patient, {key}) if stay.patient else {key}
        spells = sorted(
            (s for k in keys if k in book.stays for s in self._segments(k, book.stays[k])),
            key=lambda s: (s[0], s[6]),
        )
        visits: list[list[Any]] = []
        for spell in spells:
            last = visits[-1] if visits else None
            if last is not None and (last[1] is None or spell[0] <= last[1]):
                ends = (last[1], spell[1])
                last[1] = None if None in ends else max(ends)  # type: ignore[type-var]
                if spell[1] is None or spell[1] == last[1]:
                    last[4], last[5] = spell[4], spell[5]  # the spell that leaves last decides
                if spell[3] is not None and (last[3] is None or spell[3] < last[3]):
                    last[3] = spell[3]  # e.g. the inpatient visit opened while the patient is here
                last[7] = last[7] or spell[4] or spell[3] is not None
            else:
                # admitted: left for an inpatient bed, or became an inpatient while here
                visits.append([*spell, spell[4] or spell[3] is not None])
        out: list[Observation] = []
        for enter, leave, place, decision, admitted_out, discharged, owner, admitted_any in visits:
            if owner != key or leave is None:
                continue
            admitted = bool(admitted_out or admitted_any)
            if not admitted:
                linked = self._linked_admission(key, stay, book, enter, leave)
                if linked is not None:
                    admitted = True
                    if decision is None and linked <= leave:
                        decision = linked  # the inpatient visit was opened while the patient was here
            obs = self._observe(enter, decision, leave, place, admitted, discharged and not admitted)
            if obs is not None:
                out.append(obs)
        return out

    def _linked_admission(
        self, key: str, stay: Stay, book: StayBook, enter: float, leave: float
    ) -> float | None:
        """The start of another encounter of the same patient as an inpatient, near the departure."""
        if not stay.patient:
            return None
        for other in book.by_patient.get(stay.patient, ()):
            if other == key:
                continue
            for ts, _kind, place, cls, _away, _named in book.stays[other].timeline():
                if place is not None and cls in ADMITTED_CLASSES:
                    if enter <= ts <= leave + self.m.link_within:
                        return ts
                    break
        return None

    def _observe(
        self,
        enter: float,
        decision: float | None,
        leave: float,
        place: GroupKey,
        admitted: bool,
        discharged: bool,
    ) -> Observation | None:
        outcome = self.m.outcome
        if outcome == "admitted" and not admitted:
            return None
        if outcome == "discharged" and (admitted or not discharged):
            return None
        begin = enter if self.m.start == "arrival" else decision
        if begin is None:
            return None
        return (leave, place, (leave - begin) / self.per)


Diff = Callable[[list[Observation], list[Observation]], None]  # (taken back, added)


class StayTally:
    """What one rule observes of every stay in a book, kept current as the book changes: each
    change recomputes the stays it touches and reports only the difference to `on_diff`. The
    stay KPIs, the stay parts of ratios and the period report all follow stays through one."""

    def __init__(self, rule: StayRule, on_diff: Diff | None = None):
        self.rule = rule
        self.on_diff = on_diff
        self.book = StayBook()
        # a tuple each, which the collector stops tracking (thousands of discharged stays)
        self.observed: dict[str, tuple[Observation, ...]] = {}
        self.swept = -1  # the book's `forgotten` at the last sweep

    def attach(self, book: StayBook) -> None:
        self.book = book
        book.listeners.append(self.changed)

    def changed(self, key: str, stay: Stay) -> None:
        if self.rule.m.span != "unit_type":
            self._settle(key, stay)
            return
        keys: Iterable[str] = (key,)
        if stay.patient:
            # linked visits may change too (the patient's keys include this one, if it was
            # recorded with its patient; a stay withdrawn by A11 is already forgotten)
            mine = self.book.by_patient.get(stay.patient)
            if mine:
                keys = mine if key in mine else (key, *mine)
        typed = self.rule.typed
        for k in keys:
            target = self.book.stays.get(k)
            if target is None:
                continue
            if k not in self.observed and typed.isdisjoint(map(_place_of, target.facts)):
                continue  # never on a unit of the types, nothing observed: _settle would find nothing
            self._settle(k, target)

    def _settle(self, key: str, stay: Stay) -> None:
        old = self.observed.get(key, ())
        new = tuple(self.rule.observations(key, stay, self.book, old))
        if new == old:
            return
        if self.on_diff is not None:
            if not old or not new:  # the common cases: a first observation, or one taken back
                self.on_diff(list(old), list(new))
            else:
                before, after = Counter(old), Counter(new)
                self.on_diff(list((before - after).elements()), list((after - before).elements()))
        if new:
            self.observed[key] = new
        else:
            self.observed.pop(key, None)

    def all(self) -> list[Observation]:
        return [obs for found in self.observed.values() for obs in found]

    def sweep(self) -> None:
        """Forget the stays the book forgot (census prune). Called for every window closed:
        a walk of every stay only when the book has forgotten one since."""
        if self.book.forgotten == self.swept:
            return
        self.swept = self.book.forgotten
        for key in [k for k in self.observed if k not in self.book.stays]:
            del self.observed[key]

    def to_state(self) -> dict[str, Any]:
        return {k: [[t, list(p), v] for t, p, v in obs] for k, obs in self.observed.items()}

    def restore(self, state: dict[str, Any]) -> None:
        self.observed = {k: tuple((t, tuple(p), v) for t, p, v in obs) for k, obs in state.items()}  # type: ignore[misc]
        self.swept = -1


class StayOperator(ValueOperator):
    """Keeps what each stay of the engine's shared StayBook (the census's) gives this KPI;
    the book calls back on every change (engine/core.py attaches it)."""

    measure: StayMeasure

    def __init__(
        self,
        outputs: list[Output],
        unit_types: dict[GroupKey, str] | None = None,
        zone: tzinfo | None = None,
    ):
        super().__init__(outputs, unit_types, zone)
        self.tally = StayTally(StayRule(self.measure, self.unit_types, zone), self._diff)
        self._swept_at: int | None = None

    def stay_tallies(self) -> list[StayTally]:
        return [self.tally]

    def _diff(self, gone: list[Observation], came: list[Observation]) -> None:
        for ts, place, value in gone:
            self.unobserve(place, ts, value)
        for ts, place, value in came:
            self.observe(place, ts, value)
            self.known.add(place)

    def _prune(self, keep_from: int) -> None:
        super()._prune(keep_from)
        if keep_from != self._swept_at:  # the book forgets old stays (census prune): so do we
            self._swept_at = keep_from
            self.tally.sweep()

    def _state(self) -> dict[str, Any]:
        state = super()._state()
        state["observed"] = self.tally.to_state()
        return state

    def _restore(self, state: dict[str, Any]) -> None:
        super()._restore(state)
        self.tally.restore(state["observed"])


def replay_observations(
    measure: StayMeasure,
    unit_types: dict[GroupKey, str],
    events: Callable[[], Any],
    zone: tzinfo | None = None,
) -> list[Observation]:
    """Every observation the stream would keep, for the period report: the same rule over
    the logged encounter events (events() yields them in log order)."""
    tally = StayTally(StayRule(measure, unit_types, zone))
    book = StayBook()
    tally.attach(book)
    routes = book.handlers()
    for event in events():
        if isinstance(event, EventBase) and event.type in routes:
            routes[event.type](event)
    return tally.all()
