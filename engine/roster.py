"""Headcount from HR events, per unit and role: staff, registered nurses, direct-care RNs,
certified nurses, budgeted RN positions and vacancies, as levels over time.

The HR system is the authority (its baselines set the counts); the feed's hires, transfers,
separations and certifications move them in between without ever taking a level below zero.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from engine.events import EventBase, HREvent
from engine.levels import Emit
from engine.operators.base import place_of
from engine.samples import GroupKey
from engine.vocabulary import DIRECT_CARE_RN_ROLES, REGISTERED_NURSE_ROLES, canonical_role

NURSE_ROLES = REGISTERED_NURSE_ROLES
"""Registered-nurse roles (engine/vocabulary.py): kept under this name for older imports."""

_UNASSIGNED = ""  # the role of people counted by a unit's total headcount whose role is not known


class _Person:
    __slots__ = ("certs", "place", "role")

    def __init__(self, place: GroupKey, role: str, certs: list[str] | None = None):
        self.place = place
        self.role = role
        self.certs: list[str] = certs or []


class RosterTracker:
    """Headcount from HR events, per unit and role; emits the levels below as (level, place,
    ts, delta) whenever one of them changes.

    - staff: everyone on the unit's books; registered_nurses: RN roles (REGISTERED_NURSE_ROLES);
      direct_care_rns: direct-care RNs (DIRECT_CARE_RN_ROLES); certified_nurses: direct-care RNs
      holding at least one active certification (NDNQI / Magnet: certified direct-care RNs over
      direct-care RNs); budgeted_rn_positions and rn_vacancies: budgeted RN positions (hr.positions)
      and those not filled (per unit and role: budget - headcount, never below 0).

    Rules (the HR system is the authority; the feed's own events move its numbers in between):
    - hr.headcount with a role sets that role's count on the unit, people known by id or not
      (the baseline). Without a role it sets the unit's total: people whose role is not known
      make up the difference, and a later role baseline that finds more people of its role
      takes them from those.
    - hr.hire adds a person known by id; a hire of someone already on the books moves them
      (unit or role), it does not add anyone.
    - hr.transfer moves a person to the row's unit (from prior_unit when they are not known).
    - hr.separation takes a known person off their unit. Someone not known by id leaves the
      row's unit and role only if its baseline still holds people not known by id (else the
      unit's unknown-role people); otherwise nothing moves and it is counted in `unmatched`:
      no level ever goes below zero.
    - hr.certification_granted certifies a known person (each credential apart: a nurse with two
      stays certified until the last expires). For someone not known by id it counts only when
      the row's role is a direct-care RN and that unit's RN baseline holds RNs not known by id
      (they are one of them); otherwise it is ignored and counted: a certification never adds
      anyone to a headcount.
    """

    levels = (
        "staff",
        "registered_nurses",
        "direct_care_rns",
        "certified_nurses",
        "budgeted_rn_positions",
        "rn_vacancies",
    )

    def __init__(self, emit: Emit):
        self.emit = emit
        self.count: dict[tuple[GroupKey, str], float] = {}  # (place, role) -> headcount
        self.known: Counter[tuple[GroupKey, str]] = Counter()  # people known by id in each
        self.people: dict[str, _Person] = {}
        self.budget: dict[tuple[GroupKey, str], float] = {}  # (place, role) -> budgeted positions
        # by place, in the order rows came: the roles it has counts for, those it has budgets
        # for, and who is on it. _levels reads one place's; walking every row and person on
        # each HR event grew with the roster
        self.roles_at: dict[GroupKey, dict[str, None]] = {}
        self.budgets_at: dict[GroupKey, dict[str, None]] = {}
        self.people_at: dict[GroupKey, dict[str, _Person]] = {}
        self.emitted: dict[tuple[str, GroupKey], float] = {}
        self.unmatched: Counter[str] = Counter()  # HR records that could not move a count

    def handlers(self) -> dict[str, Callable[[EventBase], None]]:
        return {
            "hr.hire": self._hire,
            "hr.transfer": self._transfer,
            "hr.separation": self._separation,
            "hr.certification_granted": self._certified,
            "hr.certification_expired": self._expired,
            "hr.headcount": self._headcount,
            "hr.positions": self._positions,
        }

    # -- counts ------------------------------------------------------------------------------
    def _add(self, place: GroupKey, role: str, delta: float) -> None:
        key = (place, role)
        value = self.count.get(key, 0.0) + delta
        if value < 0:
            self.unmatched["below_zero"] += 1
            value = 0.0
        self._set_count(place, role, value)

    def _set_count(self, place: GroupKey, role: str, value: float) -> None:
        self.count[(place, role)] = value
        self.roles_at.setdefault(place, {})[role] = None

    def _unnamed(self, place: GroupKey, role: str) -> float:
        """People in a baseline not (yet) known by id."""
        return self.count.get((place, role), 0.0) - self.known[(place, role)]

    def _place_person(self, staff: str, place: GroupKey, role: str, certs: list[str] | None = None) -> None:
        self._drop_person(staff)  # never on two places (nothing to do: callers drop them first)
        person = self.people[staff] = _Person(place, role, certs)
        self.people_at.setdefault(place, {})[staff] = person
        self.known[(place, role)] += 1

    def _drop_person(self, staff: str) -> _Person | None:
        person = self.people.pop(staff, None)
        if person is not None:
            self.known[(person.place, person.role)] -= 1
            self.people_at[person.place].pop(staff, None)
        return person

    def _levels(self, place: GroupKey) -> dict[str, float]:
        staff = rns = direct = budgeted = vacant = 0.0
        for role in self.roles_at.get(place, ()):
            n = self.count.get((place, role), 0.0)
            staff += n
            if role in REGISTERED_NURSE_ROLES:
                rns += n
            if role in DIRECT_CARE_RN_ROLES:
                direct += n
        for role in self.budgets_at.get(place, ()):
            if role in REGISTERED_NURSE_ROLES:
                positions = self.budget[(place, role)]
                budgeted += positions
                vacant += max(0.0, positions - self.count.get((place, role), 0.0))
        people = self.people_at.get(place, {}).values()
        certified = sum(1 for p in people if p.certs and p.role in DIRECT_CARE_RN_ROLES)
        return {
            "staff": staff,
            "registered_nurses": rns,
            "direct_care_rns": direct,
            "certified_nurses": min(float(certified), direct),
            "budgeted_rn_positions": budgeted,
            "rn_vacancies": vacant,
        }

    def _settle(self, ts: float, *places: GroupKey) -> None:
        """Emit what changed in the levels of these places."""
        for place in dict.fromkeys(places):
            for level, value in self._levels(place).items():
                before = self.emitted.get((level, place), 0.0)
                if value != before:
                    self.emitted[(level, place)] = value
                    self.emit(level, place, ts, value - before)

    @staticmethod
    def _role(event: HREvent) -> str:
        return canonical_role(event.role) if event.role else _UNASSIGNED

    # -- events ------------------------------------------------------------------------------
    def _hire(self, event: EventBase) -> None:
        assert isinstance(event, HREvent)
        if not event.staff_id:
            return
        place, role = place_of(event), self._role(event)
        person = self.people.get(event.staff_id)
        if person is not None:  # already on the books: a move or a new role, nobody new
            if role == _UNASSIGNED:
                role = person.role
            if (person.place, person.role) == (place, role):
                return
            old = person.place
            self._add(person.place, person.role, -1)
            self._drop_person(event.staff_id)
            self._add(place, role, 1)
            self._place_person(event.staff_id, place, role, person.certs)
            self._settle(event.ts, old, place)
            return
        self._add(place, role, 1)
        self._place_person(event.staff_id, place, role)
        self._settle(event.ts, place)

    def _transfer(self, event: EventBase) -> None:
        assert isinstance(event, HREvent)
        if not event.staff_id:
            return
        place, role = place_of(event), self._role(event)
        person = self._drop_person(event.staff_id)
        if person is not None:
            old, certs = person.place, person.certs
            role = person.role if role == _UNASSIGNED else role
            self._add(old, person.role, -1)
        else:
            certs = []
            old = (event.facility, event.prior_department, event.prior_unit)
            if event.prior_unit is not None and self._take_unnamed(old, role):
                pass
            else:
                self.unmatched["transfer"] += 1  # not on our books: they are on the new unit now
        self._add(place, role, 1)
        self._place_person(event.staff_id, place, role, certs)
        self._settle(event.ts, old, place)

    def _take_unnamed(self, place: GroupKey, role: str) -> bool:
        """Someone not known by id leaves a baseline: of their role, else of unknown role."""
        for bucket in dict.fromkeys((role, _UNASSIGNED)):
            if self._unnamed(place, bucket) >= 1:
                self._add(place, bucket, -1)
                return True
        return False

    def _separation(self, event: EventBase) -> None:
        assert isinstance(event, HREvent)
        person = self._drop_person(event.staff_id or "")
        if person is not None:
            self._add(person.place, person.role, -1)
            self._settle(event.ts, person.place)
            return
        place = place_of(event)
        if self._take_unnamed(place, self._role(event)):
            self._settle(event.ts, place)
        else:
            self.unmatched["separation"] += 1  # never hired through the feed nor in a baseline

    def _certified(self, event: EventBase) -> None:
        assert isinstance(event, HREvent)
        staff = event.staff_id or ""
        credential = event.certification or ""
        person = self.people.get(staff)
        if person is None:
            place, role = place_of(event), self._role(event)
            if not staff or role not in DIRECT_CARE_RN_ROLES or self._unnamed(place, role) < 1:
                self.unmatched["certification"] += 1  # nobody we count as a direct-care RN
                return
            self._place_person(staff, place, role)  # one of the RNs in the unit's baseline
            person = self.people[staff]
        if credential not in person.certs:
            person.certs.append(credential)
            self._settle(event.ts, person.place)

    def _expired(self, event: EventBase) -> None:
        assert isinstance(event, HREvent)
        person = self.people.get(event.staff_id or "")
        if person is None or not person.certs:
            return
        if event.certification:
            if event.certification not in person.certs:
                return
            person.certs.remove(event.certification)
        elif "" in person.certs:
            person.certs.remove("")
        elif len(person.certs) == 1:
            person.certs.clear()
        else:
            self.unmatched["certification_expired"] += 1  # which one? name it in `certification`
            return
        self._settle(event.ts, person.place)

    def _headcount(self, event: EventBase) -> None:
        assert isinstance(event, HREvent)
        if event.headcount is None:
            return
        place, role = place_of(event), self._role(event)
        if role == _UNASSIGNED:  # the unit's total: people of unknown role are the rest
            named = sum(self.count[(place, r)] for r in self.roles_at.get(place, ()) if r != _UNASSIGNED)
            self._set_count(place, _UNASSIGNED, max(0.0, event.headcount - named))
        else:
            found = event.headcount - self.count.get((place, role), 0.0)
            self._set_count(place, role, event.headcount)
            if found > 0:  # more of this role than counted: they were among the unknown-role people
                spare = max(0.0, self._unnamed(place, _UNASSIGNED))
                unknown = self.count.get((place, _UNASSIGNED), 0.0)
                self._set_count(place, _UNASSIGNED, unknown - min(spare, found))
        self._settle(event.ts, place)

    def _positions(self, event: EventBase) -> None:
        assert isinstance(event, HREvent)
        if event.positions is None:
            return
        place = place_of(event)
        role = self._role(event)
        self.budget[(place, role)] = event.positions
        self.budgets_at.setdefault(place, {})[role] = None
        self._settle(event.ts, place)

    # -- state -------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        return {
            "count": [[list(p), r, n] for (p, r), n in self.count.items()],
            "people": {k: [list(p.place), p.role, p.certs] for k, p in self.people.items()},
            "budget": [[list(p), r, n] for (p, r), n in self.budget.items()],
            "emitted": [[lvl, list(p), v] for (lvl, p), v in self.emitted.items()],
            "unmatched": dict(self.unmatched),
        }

    def restore(self, state: dict[str, Any]) -> None:
        if "count" not in state:  # a snapshot from before per-role headcount: start over
            state = {"count": [], "people": {}, "budget": [], "emitted": [], "unmatched": {}}
        self.count = {(tuple(p), r): n for p, r, n in state["count"]}  # type: ignore[misc]
        self.people = {k: _Person(tuple(p), r, list(c)) for k, (p, r, c) in state["people"].items()}  # type: ignore[arg-type]
        self.known = Counter((p.place, p.role) for p in self.people.values())
        self.budget = {(tuple(p), r): n for p, r, n in state["budget"]}  # type: ignore[misc]
        self.roles_at, self.budgets_at, self.people_at = {}, {}, {}
        for place, role in self.count:
            self.roles_at.setdefault(place, {})[role] = None
        for place, role in self.budget:
            self.budgets_at.setdefault(place, {})[role] = None
        for staff, person in self.people.items():
            self.people_at.setdefault(person.place, {})[staff] = person
        self.emitted = {(lvl, tuple(p)): v for lvl, p, v in state["emitted"]}  # type: ignore[misc]
        self.unmatched = Counter(state["unmatched"])
